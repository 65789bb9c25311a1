"""`containment`: run the gateway or the mock upstream, or drive a running gateway's admin API.

Errors are one line on stderr and a non-zero exit: 1 for a refused request, 2 for bad usage or config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import yaml

from admin.client import AdminClient, ClientError

DEFAULT_ADMIN_URL = "http://127.0.0.1:8081"


class UsageError(Exception):
    pass


def _run_async(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def cmd_serve(args: argparse.Namespace) -> int:
    from admin.serve import StartupError, serve
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
        "log_level": args.log_level,
    }
    try:
        settings = load_settings(flags, args.config)
    except SettingsError as exc:
        raise UsageError(f"invalid configuration: {exc}") from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        _run_async(serve(settings))
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


def _client(args: argparse.Namespace) -> AdminClient:
    return AdminClient(args.admin, os.environ.get("CONTAINMENT_TOKEN"))


def _load_rule_file(path: Path) -> tuple[list[Any], str | None]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid YAML or JSON: {str(exc).splitlines()[0]}") from None
    if isinstance(document, list):
        return document, None
    if isinstance(document, dict) and isinstance(document.get("rules"), list):
        reason = document.get("reason")
        return document["rules"], reason if isinstance(reason, str) else None
    raise UsageError(f"{path} must hold a list of rules or a mapping with a 'rules' list")


def cmd_rules_push(args: argparse.Namespace) -> int:
    rules, file_reason = _load_rule_file(args.file)
    reason = args.reason or file_reason
    if not reason:
        raise UsageError("a reason is required: --reason R (or 'reason:' in the file)")
    result = _client(args).call("POST", "/v1/rules", {"rules": rules, "reason": reason})
    print(f"pushed {len(result['ids'])} rules; policy version {result['version']}")
    return 0


def cmd_rules_list(args: argparse.Namespace) -> int:
    query = {k: str(v) for k in ("category", "stage", "incident_id", "action") if (v := getattr(args, k))}
    result = _client(args).call("GET", "/v1/rules", query=query | {"limit": "100000"})
    if args.json:
        print(json.dumps(result["rules"], indent=2))
        return 0
    print(f"{'ID':<20} {'ACTION':<7} {'DIR':<6} {'CATEGORY':<24} {'SEV':<8} {'STG':<3} {'EXPIRES':<20} PATTERN")
    for rule in result["rules"]:
        pattern = rule["pattern"] if len(rule["pattern"]) <= 40 else rule["pattern"][:37] + "..."
        expires = (rule["expires_at"] or "never")[:19]
        print(
            f"{rule['id']:<20} {rule['action']:<7} {rule['applies_to']:<6} {rule['category']:<24} "
            f"{rule['severity']:<8} {rule['stage']:<3} {expires:<20} {pattern}"
        )
    print(f"{result['total']} rules at policy version {result['version']}")
    return 0


def cmd_rules_delete(args: argparse.Namespace) -> int:
    query = {"reason": args.reason} if args.reason else None
    result = _client(args).call("DELETE", f"/v1/rules/{args.rule_id}", query=query)
    print(f"deleted {result['deleted']}; policy version {result['version']}")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"engaged": args.action == "engage", "reason": args.reason}
    if args.action == "engage":
        body.update({k: v for k, v in (("message", args.message), ("ttl_seconds", args.ttl)) if v is not None})
    result = _client(args).call("PUT", f"/v1/killswitches/{args.scope}", body)
    state = "engaged" if result["engaged"] else "released"
    print(f"kill switch {result['scope']} {state}; policy version {result['version']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    policy = client.call("GET", "/v1/policy")
    switches = client.call("GET", "/v1/killswitches")["killswitches"]
    enforced = policy.get("enforced_version")
    print(
        f"policy version {policy['version']} ({policy['rule_count']} rules), "
        f"enforced here: {enforced if enforced is not None else 'n/a'}"
    )
    if not switches:
        print("kill switches: none engaged")
    for switch in switches:
        until = switch["expires_at"] or "released by hand"
        print(
            f"kill switch {switch['scope']}: engaged by {switch['engaged_by']} at {switch['engaged_at']} "
            f"until {until}: {switch['reason']}"
        )
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

    rules = commands.add_parser("rules", help="push, list or delete block rules").add_subparsers(
        dest="rules_command", required=True
    )
    push = client_command(rules, "push", "push a YAML/JSON rule pack (all-or-nothing)", cmd_rules_push)
    push.add_argument("file", type=Path)
    push.add_argument("--reason")
    listing = client_command(rules, "list", "list rules", cmd_rules_list)
    for name in ("category", "stage", "incident_id", "action"):
        listing.add_argument(f"--{name.replace('_', '-')}", dest=name)
    listing.add_argument("--json", action="store_true")
    delete = client_command(rules, "delete", "delete one rule", cmd_rules_delete)
    delete.add_argument("rule_id")
    delete.add_argument("--reason")

    kill = client_command(commands, "kill", "engage or release a kill switch", cmd_kill)
    kill.add_argument("action", choices=("engage", "release"))
    kill.add_argument("scope", help="global, route:NAME, model:NAME or key:KEYID")
    kill.add_argument("--reason", required=True)
    kill.add_argument("--message", help="what refused callers are told")
    kill.add_argument("--ttl", type=int, help="release by itself after this many seconds")

    client_command(commands, "status", "policy version, rules and engaged kill switches", cmd_status)
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
