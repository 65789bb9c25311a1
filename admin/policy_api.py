"""`/v1/policy` (the whole policy at its version), `/v1/audit` (append-only log) and `/metrics`."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from admin.auth import Principal, requires
from admin.context import ENFORCEMENT, STORE
from admin.controls_api import parse_body
from admin.errors import ApiError, ok
from rules.model import AuditEntry, Name, Policy, iso, utcnow
from rules.roles import Role
from rules.store_journal import local_only_answer

REGISTRY = web.AppKey("registry", CollectorRegistry)
IDS_LISTED = 1000


@requires(Role.viewer)
async def get_policy(request: web.Request, principal: Principal) -> web.Response:
    policy = request.app[STORE].current()
    enforcement = request.app[ENFORCEMENT]()
    payload = policy.model_dump(mode="json")
    payload["rule_count"] = len(policy.rules)
    payload["compiled_at"] = iso(enforcement.compiled_at) if enforcement else None
    payload["enforced_version"] = enforcement.version if enforcement else None
    return ok(payload)


@requires(Role.viewer)
async def get_audit(request: web.Request, principal: Principal) -> web.Response:
    try:
        limit = int(request.query.get("limit", "100"))
        before = int(request.query["before_version"]) if "before_version" in request.query else None
    except ValueError:
        raise ApiError(400, "invalid_query", "limit and before_version must be whole numbers") from None
    if not 0 < limit <= 10_000:
        raise ApiError(400, "invalid_query", "limit must be 1..10000")
    entries = await request.app[STORE].audit(limit=limit, before_version=before)
    return ok({"entries": [e.model_dump(mode="json") for e in entries]})


class RollbackSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Field(ge=1)]
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    incident_id: Name | None = None
    release_killswitches: StrictBool = False  # else the switches engaged now stay engaged


def _section(before: BaseModel, after: BaseModel) -> dict[str, object] | None:
    if before == after:
        return None
    return {"before": before.model_dump(mode="json"), "after": after.model_dump(mode="json")}


def rollback_changes(before: Policy, after: Policy, kept: list[str]) -> dict[str, object]:
    """Every control a rollback changes: kill switches by scope, rules by id, access lists, rate limits."""
    old_ks, new_ks = before.killswitches, after.killswitches
    old_rules = {rule.id: rule for rule in before.rules}
    new_rules = {rule.id: rule for rule in after.rules}
    added = [rule_id for rule_id in new_rules if rule_id not in old_rules]
    removed = [rule_id for rule_id in old_rules if rule_id not in new_rules]
    changed = [
        rule_id
        for rule_id, rule in new_rules.items()
        if rule_id in old_rules and old_rules[rule_id] is not rule and old_rules[rule_id] != rule
    ]
    return {
        "killswitches": {
            "engaged": sorted(scope for scope in new_ks if scope not in old_ks),
            "released": sorted(scope for scope in old_ks if scope not in new_ks),
            "changed": sorted(scope for scope in new_ks if scope in old_ks and new_ks[scope] != old_ks[scope]),
            "kept": kept,
        },
        "rules": {
            "added": len(added),
            "removed": len(removed),
            "changed": len(changed),
            "added_ids": added[:IDS_LISTED],
            "removed_ids": removed[:IDS_LISTED],
            "changed_ids": changed[:IDS_LISTED],
            "ids_truncated": max(len(added), len(removed), len(changed)) > IDS_LISTED,
        },
        "access": _section(before.access, after.access),
        "ratelimits": _section(before.ratelimits, after.ratelimits),
    }


@requires(Role.commander)
async def rollback(request: web.Request, principal: Principal) -> web.Response:
    spec = await parse_body(request, RollbackSpec, "invalid_rollback")
    store = request.app[STORE]
    if spec.version > store.current().version:
        raise ApiError(422, "invalid_rollback", f"version: {spec.version} does not exist yet", field="version")
    target = await store.history(spec.version)
    changes: dict[str, object] = {}

    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        now = utcnow()
        switches = {scope: switch for scope, switch in target.killswitches.items() if switch.active(now)}
        kept: list[str] = []
        if not spec.release_killswitches:
            engaged = {scope: switch for scope, switch in policy.killswitches.items() if switch.active(now)}
            kept = sorted(scope for scope in engaged if scope not in switches)
            switches |= engaged  # a switch engaged now stays as it is now
        restored = policy.model_copy(
            update={
                "rules": target.rules,
                "killswitches": switches,
                "access": target.access,
                "ratelimits": target.ratelimits,
            }
        )
        changes.clear()
        changes.update(rollback_changes(policy, restored, kept))
        entry = AuditEntry(
            at=now,
            actor=principal.name,
            role=principal.role.name,
            action="policy.rollback",
            target=f"version {spec.version}",
            reason=spec.reason,
            incident_id=spec.incident_id,
            before={"version": policy.version, "rules": len(policy.rules), "killswitches": sorted(policy.killswitches)},
            after={
                "restored_version": spec.version,
                "rules": len(target.rules),
                "killswitches": sorted(switches),
                "release_killswitches": spec.release_killswitches,
                "changes": changes,
            },
        )
        return restored, entry

    policy, entry = await store.update(mutate)
    return ok(
        {
            "version": policy.version,
            "restored_version": spec.version,
            "rule_count": len(policy.rules),
            "release_killswitches": spec.release_killswitches,
            "changes": changes,
        }
        | local_only_answer(store, entry)
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/policy", get_policy)
    app.router.add_get("/v1/audit", get_audit)
    app.router.add_post("/v1/policy/rollback", rollback)
    app.router.add_get("/metrics", metrics)
