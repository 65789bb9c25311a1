"""`/v1/rules`: bulk push (all-or-nothing), list with filters, read, delete."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from admin.auth import Principal, requires
from admin.context import CATEGORIES, INSIGHT, KNOWN, STAGE1_TTL, STORE
from admin.errors import ApiError, check_reason, ok, read_json
from admin.scopes import rule_scope_warnings
from rules.benign import Refusal, benign_hits, literal_keys, refusals
from rules.compile import RuleError, check_specs
from rules.model import AuditEntry, Policy, Rule, RulePatch, RuleSpec, iso, to_rules, utcnow
from rules.roles import Role
from rules.selftest import RENDERINGS, self_test
from rules.store import NotFound
from rules.store_journal import local_only_answer
from rules.watch import describe

_SPECS = TypeAdapter(list[RuleSpec])
MAX_LIST = 100_000
VALIDATE_SLICE = 2_000
AUDITED_IDS = 1000
SELF_TEST_LIMIT = 100  # rules self-tested per push (the first ones): 2-5 ms each
REPORTED_EXTRA = 100  # rules past SELF_TEST_LIMIT listed because they hit benign text or were forced
REFUSALS_NAMED = 20


def _field_error(exc: ValidationError, offset: int = 0) -> ApiError:
    error = exc.errors()[0]
    loc = list(error["loc"])
    index: int | None = None
    if loc and isinstance(loc[0], int):
        index = int(loc.pop(0)) + offset
    field = ".".join(str(p) for p in loc) or "rule"
    reason = error["msg"].removeprefix("Value error, ")
    where = f"rules[{index}].{field}" if index is not None else field
    return ApiError(422, "invalid_rule", f"{where}: {reason}", index=index, field=field, reason=reason)


def _duplicate_id(index: int, message: str) -> ApiError:
    """The id of rule `index` of a push is taken (`message` says by what)."""
    return ApiError(
        422, "invalid_rule", f"rules[{index}].id: {message}", index=index, field="id", reason="duplicate id"
    )


def validate_push(
    body: dict[str, Any], categories: frozenset[str], actor: str, stage1_ttl: int = 0
) -> tuple[list[Rule], str]:
    rules = body.get("rules")
    if not isinstance(rules, list) or not rules:
        raise ApiError(422, "invalid_rule", "rules: must be a non-empty list", field="rules")
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ApiError(422, "invalid_rule", "reason: a non-empty reason is required", field="reason")
    check_reason(reason, "invalid_rule")
    unknown = set(body) - {"rules", "reason", "force"}
    if unknown:
        raise ApiError(422, "invalid_rule", f"{sorted(unknown)[0]}: unknown field", field=sorted(unknown)[0])
    if not isinstance(body.get("force", False), bool):
        raise ApiError(422, "invalid_rule", "force: must be true or false", field="force", reason="not a boolean")
    specs: list[RuleSpec] = []
    try:
        # In slices, so that the GIL is released between them and the data plane keeps serving.
        for begin in range(0, len(rules), VALIDATE_SLICE):
            try:
                specs.extend(_SPECS.validate_python(rules[begin : begin + VALIDATE_SLICE]))
            except ValidationError as exc:
                raise _field_error(exc, offset=begin) from None
        check_specs(specs, categories)
        if stage1_ttl:
            # Block lists are triage, not fixes: a stage-1 rule without an expiry gets the default one.
            for spec in specs:
                if spec.stage == 1 and spec.expires_at is None and spec.ttl_seconds is None:
                    spec.ttl_seconds = stage1_ttl
    except RuleError as exc:
        raise ApiError(422, "invalid_rule", str(exc), index=exc.index, field=exc.field, reason=exc.reason) from None
    now = utcnow()
    built = to_rules(specs, created_by=actor, now=now)
    seen: set[str] = set()
    for index, rule in enumerate(built):
        if rule.id in seen:
            raise _duplicate_id(index, f"duplicate id {rule.id!r} in this push")
        seen.add(rule.id)
    return built, reason.strip()


def _refuse_existing_ids(policy: Policy, new_rules: list[Rule]) -> None:
    existing = {rule.id for rule in policy.rules}
    for index, rule in enumerate(new_rules):
        if rule.id in existing:
            raise _duplicate_id(index, f"a rule with id {rule.id!r} exists")


def _named(rules: list[Rule], index: int) -> str:
    rule = rules[index]
    pattern = rule.pattern if len(rule.pattern) <= 40 else rule.pattern[:37] + "..."
    return f"rules[{index}] {pattern!r}" + (" (regex)" if rule.kind == "regex" else "")


def _refused(rules: list[Rule], refused: list[Refusal]) -> ApiError:
    first = refused[0]
    message = f"{_named(rules, first.index)}: {first.check.replace('_', ' ')}: {first.reason}"
    if first.hits is not None and first.hits.examples:
        message += f", e.g. {first.hits.examples[0]!r}"
    if len(refused) > 1:
        others = ", ".join(_named(rules, r.index) for r in refused[1:4])
        message += f"; {len(refused) - 1} more refused: {others}{', ...' if len(refused) > 4 else ''}"
    message += '; push with "force": true (containment rules push --force) to override'
    return ApiError(
        422,
        "invalid_rule",
        message,
        index=first.index,
        field="pattern",
        reason=first.reason,
        check=first.check,
        overridable=True,
        benign=first.hits.as_json() if first.hits is not None else None,
        refused=[{"index": r.index, "check": r.check, "reason": r.reason} for r in refused[:REFUSALS_NAMED]],
        refused_count=len(refused),
    )


def safety_net(rules: list[Rule], force: bool) -> tuple[dict[str, object], list[int]]:
    """The push-time safety net and the evasion self-test (docs/api.md, "Push-time safety net").
    Refuses (422, the first refused rule named, up to REFUSALS_NAMED listed) unless `force`; returns the
    answer's report and the indexes `force` let through."""
    keys = literal_keys(rules)
    found = benign_hits(rules, keys)
    refused = refusals(rules, found, keys)
    if refused and not force:
        raise _refused(rules, refused)
    forced = {r.index: r.check for r in refused}
    listed = [i for i in sorted(set(found) | set(forced)) if i >= SELF_TEST_LIMIT][:REPORTED_EXTRA]
    checks: list[dict[str, object]] = []
    for index in [*range(min(len(rules), SELF_TEST_LIMIT)), *listed]:
        entry: dict[str, object] = {"index": index, "id": rules[index].id}
        if index < SELF_TEST_LIMIT:
            entry["self_test"] = self_test(rules[index]).as_json()
        if index in found:
            entry["benign"] = found[index].as_json()
        if index in forced:
            entry["forced"] = forced[index]
        checks.append(entry)
    summary = {
        "renderings": list(RENDERINGS),
        "self_tested": min(len(rules), SELF_TEST_LIMIT),
        "rules": len(rules),
        "limit": SELF_TEST_LIMIT,
        "benign_hits": len(found),
        "forced": len(forced),
    }
    return {"self_test": summary, "checks": checks}, sorted(forced)


@requires(Role.responder)
async def push_rules(request: web.Request, principal: Principal) -> web.Response:
    body = await read_json(request)
    new_rules, reason = await asyncio.to_thread(
        validate_push, body, request.app[CATEGORIES], principal.name, request.app[STAGE1_TTL]
    )
    warnings = rule_scope_warnings(request.app.get(KNOWN), ((i, rule.scope) for i, rule in enumerate(new_rules)))
    _refuse_existing_ids(request.app[STORE].current(), new_rules)  # an invalid rule before an overridable one
    report, forced = await asyncio.to_thread(safety_net, new_rules, body.get("force") is True)

    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        _refuse_existing_ids(policy, new_rules)
        ids = [rule.id for rule in new_rules]
        incidents = sorted({r.incident_id for r in new_rules if r.incident_id})
        entry = AuditEntry(
            at=utcnow(),
            actor=principal.name,
            role=principal.role.name,
            action="rules.add",
            target=f"{len(ids)} rules",
            reason=reason,
            incident_id=incidents[0] if len(incidents) == 1 else None,
            contains=any(rule.action != "shadow" for rule in new_rules),
            after={"count": len(ids), "ids": ids[:AUDITED_IDS], "ids_truncated": len(ids) > AUDITED_IDS}
            | ({"forced": [ids[i] for i in forced[:AUDITED_IDS]]} if forced else {}),
        )
        return policy.model_copy(update={"rules": policy.rules + tuple(new_rules)}), entry

    policy, entry = await request.app[STORE].update(mutate)
    answer = {"version": policy.version, "ids": [rule.id for rule in new_rules]} | report
    return ok(
        answer | ({"warnings": warnings} if warnings else {}) | local_only_answer(request.app[STORE], entry), status=201
    )


def _matches(rule: Rule, filters: dict[str, str]) -> bool:
    return all(str(getattr(rule, name)) == value for name, value in filters.items())


@requires(Role.viewer)
async def list_rules(request: web.Request, principal: Principal) -> web.Response:
    filters = {k: v for k, v in request.query.items() if k in ("category", "stage", "incident_id", "action")}
    try:
        limit = int(request.query.get("limit", "1000"))
        offset = int(request.query.get("offset", "0"))
    except ValueError:
        raise ApiError(400, "invalid_query", "limit and offset must be whole numbers") from None
    if not 0 < limit <= MAX_LIST or offset < 0:
        raise ApiError(400, "invalid_query", f"limit must be 1..{MAX_LIST} and offset >= 0")
    policy = request.app[STORE].current()
    selected = [rule for rule in policy.rules if _matches(rule, filters)] if filters else list(policy.rules)
    page = selected[offset : offset + limit]
    return ok({"version": policy.version, "total": len(selected), "rules": [r.model_dump(mode="json") for r in page]})


def _find(policy: Policy, rule_id: str) -> Rule:
    for rule in policy.rules:
        if rule.id == rule_id:
            return rule
    raise NotFound(f"no rule with id {rule_id!r}")


@requires(Role.viewer)
async def get_rule(request: web.Request, principal: Principal) -> web.Response:
    """The rule, and its watch period: hits per hour since it was created, and the last hit."""
    rule = _find(request.app[STORE].current(), request.match_info["rule_id"])
    buckets, last = await request.app[INSIGHT].hits.history(rule.id)
    return ok(rule.model_dump(mode="json") | {"hits": describe(buckets, last, rule.created_at)})


@requires(Role.responder)
async def delete_rule(request: web.Request, principal: Principal) -> web.Response:
    rule_id = request.match_info["rule_id"]
    reason = request.query.get("reason", "").strip()
    if not reason:
        raise ApiError(422, "invalid_rule", "reason: a non-empty reason is required (?reason=...)", field="reason")
    check_reason(reason, "invalid_rule")

    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        rule = _find(policy, rule_id)
        entry = AuditEntry(
            at=utcnow(),
            actor=principal.name,
            role=principal.role.name,
            action="rules.delete",
            target=rule_id,
            reason=reason,
            incident_id=rule.incident_id,
            before=rule.model_dump(mode="json"),
        )
        return policy.model_copy(update={"rules": tuple(r for r in policy.rules if r.id != rule_id)}), entry

    policy, _ = await request.app[STORE].update(mutate)
    return ok({"version": policy.version, "deleted": rule_id})


@requires(Role.responder)
async def patch_rule(request: web.Request, principal: Principal) -> web.Response:
    rule_id = request.match_info["rule_id"]
    body = await read_json(request)
    for immutable in ("pattern", "kind", "id"):
        if immutable in body:
            raise ApiError(
                422, "invalid_rule", f"{immutable}: cannot be changed; push a new rule instead", field=immutable
            )
    try:
        patch = RulePatch.model_validate(body)
    except ValidationError as exc:
        raise _field_error(exc) from None
    if patch.category is not None and patch.category not in request.app[CATEGORIES]:
        raise ApiError(422, "invalid_rule", f"category: unknown category {patch.category!r}", field="category")
    warnings = rule_scope_warnings(request.app.get(KNOWN), [(None, patch.scope)])
    if patch.expires_at is not None and patch.expires_at <= utcnow():
        warnings.append(f"expires_at: {iso(patch.expires_at)} has already passed: the rule has stopped matching")

    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        before = _find(policy, rule_id)
        after = patch.apply(before, utcnow())
        entry = AuditEntry(
            at=utcnow(),
            actor=principal.name,
            role=principal.role.name,
            action="rules.patch",
            target=rule_id,
            reason=patch.reason,
            incident_id=after.incident_id,
            contains=after.action != "shadow" and before.action == "shadow",
            before=before.model_dump(mode="json"),
            after=after.model_dump(mode="json"),
        )
        rules = tuple(after if rule.id == rule_id else rule for rule in policy.rules)
        return policy.model_copy(update={"rules": rules}), entry

    policy, _ = await request.app[STORE].update(mutate)
    answer = {"version": policy.version, "rule": _find(policy, rule_id).model_dump(mode="json")}
    return ok(answer | ({"warnings": warnings} if warnings else {}))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/rules", list_rules)
    app.router.add_post("/v1/rules", push_rules)
    app.router.add_get("/v1/rules/{rule_id}", get_rule)
    app.router.add_delete("/v1/rules/{rule_id}", delete_rule)
    app.router.add_patch("/v1/rules/{rule_id}", patch_rule)
