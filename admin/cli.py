"""`containment`: run the gateway or the mock upstream, or drive a running gateway's admin API.

Errors are one line on stderr and a non-zero exit: 1 for a refused request, 2 for bad usage or config.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from admin import commands as commands_
from admin.client import ClientError
from admin.commands import UsageError

DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"


def run_async(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def _multiprocess_metrics(directory: Path) -> None:
    """prometheus-client's multiprocess mode: each process writes its metrics to files here, and the
    primary's /metrics adds them up. Must be set before prometheus_client is first imported."""
    shutil.rmtree(directory, ignore_errors=True)
    try:
        directory.mkdir(parents=True)
    except OSError as exc:
        raise UsageError(f"cannot create {directory} for worker metrics: {exc.strerror}") from None
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.settings import SettingsError, load_settings

    flags = {
        "listen": args.listen,
        "admin_listen": args.admin_listen,
        "upstream": args.upstream,
        "redis_url": args.redis_url,
        "state_dir": args.state_dir,
        "admin_tokens": args.admin_tokens,
        "workers": args.workers,
        "max_body_bytes": args.max_body_bytes,
        "sample_rate": args.sample_rate,
        "log_level": args.log_level,
    }
    try:
        settings = load_settings(flags, args.config)
    except SettingsError as exc:
        raise UsageError(f"invalid configuration: {exc}") from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if settings.workers > 1:
        _multiprocess_metrics(settings.state_dir / "metrics")
    from admin.serve import StartupError, serve  # imports prometheus_client: after the line above

    try:
        run_async(serve(settings))
    except StartupError as exc:
        raise UsageError(str(exc)) from None
    return 0


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from aiohttp import web

    from gateway.mock_upstream import build_mock_app

    print(f"containment: mock upstream on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        web.run_app(build_mock_app(args.chunk_chars), host=args.host, port=args.port, print=None, access_log=None)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="containment", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway (data plane + admin API)")
    serve.add_argument("--config", type=Path, help="YAML file with any of the settings below, and routes")
    serve.add_argument("--listen", help="data plane HOST:PORT (default 0.0.0.0:8080)")
    serve.add_argument("--admin-listen", help="admin API HOST:PORT (default 127.0.0.1:8081)")
    serve.add_argument("--upstream", help="upstream model endpoint URL")
    serve.add_argument("--redis-url", help="Redis URL for fleet mode")
    serve.add_argument("--state-dir", type=Path, help="where the embedded store keeps policy and audit")
    serve.add_argument("--admin-tokens", help="comma list of name:role:token")
    serve.add_argument("--workers", type=int, help="data-plane worker processes")
    serve.add_argument("--max-body-bytes", type=int, help="largest request body accepted")
    serve.add_argument("--sample-rate", type=float, help="share of unmatched traffic sampled (default 0.01)")
    serve.add_argument("--log-level", help="debug, info, warning or error")
    serve.set_defaults(func=cmd_serve)

    mock = commands.add_parser("mock-upstream", help="run the bundled OpenAI-compatible mock model")
    mock.add_argument("--port", type=int, default=8000)
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--chunk-chars", type=int, default=4, help="characters per streamed SSE chunk")
    mock.set_defaults(func=cmd_mock_upstream)

    def client_command(sub: Any, name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> Any:
        command = sub.add_parser(name, help=help_text)
        command.add_argument(
            "--admin",
            default=os.environ.get("CONTAINMENT_ADMIN_URL", DEFAULT_ADMIN_URL),
            help="admin API URL (env CONTAINMENT_ADMIN_URL); token from CONTAINMENT_TOKEN",
        )
        command.set_defaults(func=func)
        return command

    rules = commands.add_parser("rules", help="push, list, patch or delete rules").add_subparsers(
        dest="rules_command", required=True
    )
    push = client_command(rules, "push", "push a YAML/JSON rule pack (all-or-nothing)", commands_.cmd_rules_push)
    push.add_argument("file", type=Path)
    push.add_argument("--reason")
    push.add_argument(
        "--force", action="store_true", help="push rules the safety net refuses (too short, or hit benign text)"
    )
    listing = client_command(rules, "list", "list rules", commands_.cmd_rules_list)
    for name in ("category", "stage", "incident_id", "action"):
        listing.add_argument(f"--{name.replace('_', '-')}", dest=name)
    listing.add_argument("--json", action="store_true")
    patch = client_command(rules, "patch", "promote, renew or re-scope one rule", commands_.cmd_rules_patch)
    patch.add_argument("rule_id")
    patch.add_argument("--set", action="append", metavar="NAME=VALUE", help="e.g. action=block, scope={models: [m]}")
    patch.add_argument("--ttl", type=int, help="renew: expire this many seconds from now")
    patch.add_argument("--reason", required=True)
    delete = client_command(rules, "delete", "delete one rule", commands_.cmd_rules_delete)
    delete.add_argument("rule_id")
    delete.add_argument("--reason", required=True)

    kill = client_command(commands, "kill", "engage or release a kill switch", commands_.cmd_kill)
    kill.add_argument("action", choices=("engage", "release"))
    kill.add_argument("scope", help="global, route:NAME, model:NAME, tenant:NAME or key:KEYID")
    kill.add_argument("--reason", required=True)
    kill.add_argument("--mode", choices=("reject", "canned"), help="reject (503) or canned (a reply)")
    kill.add_argument("--message", help="what refused callers are told")
    kill.add_argument("--ttl", type=int, help="release by itself after this many seconds")
    kill.add_argument("--incident", help="incident id this change serves")

    access = client_command(commands, "access", "show or replace the access lists", commands_.cmd_access)
    access.add_argument("action", choices=("show", "set"))
    access.add_argument("file", type=Path, nargs="?", help="YAML/JSON: restricted, allow, deny")
    access.add_argument("--reason")
    access.add_argument("--incident")

    ratelimit = client_command(commands, "ratelimit", "show or set rate limits", commands_.cmd_ratelimit)
    ratelimit.add_argument("action", choices=("show", "set", "throttle"))
    ratelimit.add_argument("file", type=Path, nargs="?", help="set: YAML/JSON with limits and throttle")
    ratelimit.add_argument("--factor", type=float, help="throttle: scale every limit by this (0-1)")
    ratelimit.add_argument("--reason")
    ratelimit.add_argument("--incident")

    incident = client_command(commands, "incident", "declare, list or show incidents", commands_.cmd_incident)
    incident.add_argument("action", choices=("declare", "list", "show"))
    incident.add_argument("id", nargs="?")
    incident.add_argument("--title")
    incident.add_argument("--severity", choices=("low", "medium", "high", "critical"))
    incident.add_argument("--commander")

    policy = commands.add_parser("policy", help="policy versions").add_subparsers(dest="policy_command", required=True)
    rollback = client_command(policy, "rollback", "restore the whole policy of a version", commands_.cmd_rollback)
    rollback.add_argument("version", type=int)
    rollback.add_argument("--reason", required=True)

    variants = client_command(
        commands, "variants", "stage 2: propose rules for near-miss variants of blocked traffic", commands_.cmd_variants
    )
    variants.add_argument("--json", action="store_true")
    variants.add_argument("--reveal", action="store_true", help="show examples unmasked (audited; needs --reason)")
    variants.add_argument("--push-shadow", action="store_true", help="push the proposals as shadow rules")
    variants.add_argument("--reason")
    variants.add_argument("--incident")

    client_command(commands, "status", "policy version, rules and engaged kill switches", commands_.cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except UsageError as exc:
        print(f"containment: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"containment: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
