"""The `containment` client commands: each one call (or two) to the admin API, printed for people.

Every failure is one line: a `UsageError` (bad file, missing reason; exit 2) or a `ClientError`
(the API refused or could not be reached; exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from admin.client import AdminClient


class UsageError(Exception):
    pass


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid YAML or JSON: {str(exc).splitlines()[0]}") from None


def _client(args: argparse.Namespace) -> AdminClient:
    return AdminClient(args.admin, os.environ.get("CONTAINMENT_TOKEN"))


def _print_warnings(result: dict[str, Any]) -> None:
    """What the API accepted but flagged (a model no route lists, an expiry already past), on stderr."""
    for warning in result.get("warnings") or ():
        print(f"containment: warning: {warning}", file=sys.stderr)


def _load_rule_file(path: Path) -> tuple[list[Any], str | None]:
    document = _load_yaml(path)
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
    body: dict[str, Any] = {"rules": rules, "reason": reason}
    if args.force:
        body["force"] = True
    result = _client(args).call("POST", "/v1/rules", body)
    print(f"pushed {len(result['ids'])} rules; policy version {result['version']}")
    _print_warnings(result)
    _print_checks(result, rules)
    return 0


def _short(pattern: object, width: int = 40) -> str:
    text = repr(pattern)
    return text if len(text) <= width else text[: width - 4] + "...'"


def _missed(rendering: str, where: list[str]) -> str:
    """`leet (2 variants)`, `homoglyphs (greek)`, `invisibles (3 variants, on stream)`, from the answer's
    `missed_on` entries ("greek on input", ...)."""
    labels = list(dict.fromkeys(entry.rsplit(" on ", 1)[0] for entry in where))
    sides = sorted({entry.rsplit(" on ", 1)[-1] for entry in where})
    detail = labels[0] if len(labels) == 1 else f"{len(labels)} variants"
    return f"{rendering} ({detail}{f', on {sides[0]}' if len(sides) == 1 else ''})"


def _print_checks(result: dict[str, Any], rules: list[Any]) -> None:
    """The push answer's evasion self-test, one line per rule (what it missed), and its benign-corpus
    warnings and forced rules (docs/api.md, "Push-time safety net")."""
    summary = result.get("self_test")
    if not isinstance(summary, dict):
        return  # a gateway from before the self-test
    tested, total = summary["self_tested"], summary["rules"]
    scope = f"all {total} rules" if tested == total else f"the first {tested} of {total} rules"
    print(f"evasion self-test of {scope} ({', '.join(summary['renderings'])}):")
    for check in result["checks"]:
        index = check["index"]
        rule = rules[index] if index < len(rules) and isinstance(rules[index], dict) else {}
        name = f"  [{index}] {_short(rule.get('pattern'))}"
        notes: list[str] = []
        test = check.get("self_test")
        if test is not None:
            if test.get("note"):
                notes.append(f"not tested: {test['note']}")
            else:
                missed = [_missed(r, test["missed_on"][r]) for r in test["missed"]]
                notes.append(f"{test['score']} caught" + (f"; missed: {', '.join(missed)}" if missed else ""))
        if "forced" in check:
            notes.append(f"FORCED past the safety net ({check['forced'].replace('_', ' ')})")
        if "benign" in check:
            benign = check["benign"]
            example = f", e.g. {benign['examples'][0]!r}" if benign["examples"] else ""
            notes.append(f"hits {benign['documents']} benign documents{example}")
        print(f"{name:<48} {'; '.join(notes)}")


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
    if not args.reason.strip():
        raise UsageError("a reason is required: --reason R")
    result = _client(args).call("DELETE", f"/v1/rules/{args.rule_id}", query={"reason": args.reason})
    print(f"deleted {result['deleted']}; policy version {result['version']}")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"engaged": args.action == "engage", "reason": args.reason}
    if args.action == "engage":
        optional = (("message", args.message), ("ttl_seconds", args.ttl), ("mode", args.mode))
        body.update({k: v for k, v in optional if v is not None})
    if args.incident:
        body["incident_id"] = args.incident
    result = _client(args).call("PUT", f"/v1/killswitches/{args.scope}", body)
    state = "engaged" if result["engaged"] else "released"
    print(f"kill switch {result['scope']} {state}; policy version {result['version']}")
    _print_warnings(result)
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
    access = client.call("GET", "/v1/access")
    limits = client.call("GET", "/v1/ratelimits")
    denied = sum(len(access["deny"][kind]) for kind in ("keys", "tenants", "cidrs"))
    print(f"access: {'RESTRICTED to the allow list' if access['restricted'] else 'open'}, {denied} deny entries")
    print(f"rate limits: {len(limits['limits'])}, throttle {limits['throttle']}")
    if not switches:
        print("kill switches: none engaged")
    for switch in switches:
        until = switch["expires_at"] or "released by hand"
        print(
            f"kill switch {switch['scope']}: engaged by {switch['engaged_by']} at {switch['engaged_at']} "
            f"until {until}: {switch['reason']}"
        )
    return 0


def _mapping_file(path: Path) -> dict[str, Any]:
    document = _load_yaml(path)
    if not isinstance(document, dict):
        raise UsageError(f"{path} must hold a mapping")
    return document


def _with_reason(body: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    body = dict(body)
    if args.reason:
        body["reason"] = args.reason
    if not body.get("reason"):
        raise UsageError("a reason is required: --reason R (or 'reason:' in the file)")
    if getattr(args, "incident", None):
        body["incident_id"] = args.incident
    return body


def cmd_access(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.action == "set":
        if args.file is None:
            raise UsageError("access set needs a FILE with restricted/allow/deny")
        client.call("PUT", "/v1/access", _with_reason(_mapping_file(args.file), args))
    result = client.call("GET", "/v1/access")
    print(json.dumps(result, indent=2))
    return 0


def cmd_ratelimit(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.action == "set":
        if args.file is None:
            raise UsageError("ratelimit set needs a FILE with limits (and throttle)")
        client.call("PUT", "/v1/ratelimits", _with_reason(_mapping_file(args.file), args))
    elif args.action == "throttle":
        if args.factor is None:
            raise UsageError("ratelimit throttle needs a FACTOR from 0 to 1")
        current = client.call("GET", "/v1/ratelimits")
        body = {"limits": current["limits"], "throttle": args.factor}
        client.call("PUT", "/v1/ratelimits", _with_reason(body, args))
    result = client.call("GET", "/v1/ratelimits")
    print(json.dumps(result, indent=2))
    return 0


def cmd_incident(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.action == "declare":
        missing = [name for name in ("title", "severity", "commander") if not getattr(args, name)]
        if missing:
            raise UsageError(f"incident declare needs --{missing[0]}")
        body = {"title": args.title, "severity": args.severity, "commander": args.commander}
        result = client.call("POST", "/v1/incidents", body)
        print(f"declared {result['id']} at {result['declared_at']}")
        return 0
    if args.action == "list":
        for incident in client.call("GET", "/v1/incidents")["incidents"]:
            print(f"{incident['id']}  {incident['severity']:<8} {incident['declared_at']}  {incident['title']}")
        return 0
    if not args.id:
        raise UsageError("incident show needs an incident ID")
    incident = client.call("GET", f"/v1/incidents/{args.id}")
    ttc = incident["time_to_first_containment_seconds"]
    print(f"{incident['id']}: {incident['title']} ({incident['severity']}), commander {incident['commander']}")
    print(f"declared {incident['declared_at']} by {incident['declared_by']}")
    print(
        f"first containment: {incident['first_containment_at'] or 'none yet'}"
        + (f" ({ttc:.1f} s after declaration)" if ttc is not None else "")
    )
    for action in incident["actions"]:
        print(
            f"  {action['at']}  v{action['version']:<5} {action['actor']:<12} {action['action']:<18} "
            f"{action['target']}: {action['reason'] or ''}"
        )
    return 0


def cmd_rules_patch(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason}
    for pair in args.set or []:
        name, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set takes NAME=VALUE, not {pair!r}")
        body[name] = yaml.safe_load(value) if value else None
    if args.ttl is not None:
        body["ttl_seconds"] = args.ttl
    result = _client(args).call("PATCH", f"/v1/rules/{args.rule_id}", body)
    rule = result["rule"]
    print(
        f"{rule['id']}: action {rule['action']}, expires {rule['expires_at'] or 'never'}; "
        f"policy version {result['version']}"
    )
    _print_warnings(result)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    body = {"version": args.version, "reason": args.reason}
    result = _client(args).call("POST", "/v1/policy/rollback", body)
    print(
        f"restored version {result['restored_version']} as version {result['version']} ({result['rule_count']} rules)"
    )
    return 0


def cmd_variants(args: argparse.Namespace) -> int:
    """Stage 2: proposals from sampled traffic; optionally pushed as shadow rules to watch first."""
    if (args.reveal or args.push_shadow) and not args.reason:
        raise UsageError("--reveal and --push-shadow need --reason")
    client = _client(args)
    body: dict[str, Any] = {"reveal": bool(args.reveal)}
    if args.reason:
        body["reason"] = args.reason
    result = client.call("POST", "/v1/variants", body)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['samples_scanned']} samples: {result['blocked']} blocked, {result['near']} unblocked but near "
            f"them, {result['background']} background"
        )
        if not result["proposals"]:
            print("no proposals")
        for index, proposal in enumerate(result["proposals"]):
            print(
                f"[{index}] {proposal['kind']:<7} {proposal['pattern']!r} ({proposal['category']}): catches "
                f"{proposal['catches_unblocked']} unblocked near + {proposal['catches_blocked']} blocked; "
                f"benign hits {proposal['benign_hits']}"
            )
            for example in proposal["examples"]:
                print(f"      e.g. {example['request_id']}: {example['input_text'][:100]!r}")
    if args.push_shadow and result["proposals"]:
        rules = [p["rule"] | ({"incident_id": args.incident} if args.incident else {}) for p in result["proposals"]]
        pushed = client.call("POST", "/v1/rules", {"rules": rules, "reason": args.reason})
        print(
            f"pushed {len(pushed['ids'])} shadow rules; policy version {pushed['version']}; "
            "promote with: containment rules patch ID --set action=block --reason ..."
        )
    return 0
