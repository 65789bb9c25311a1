"""`/v1/policy` (the whole policy at its version), `/v1/audit` (append-only log) and `/metrics`."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from admin.auth import Principal, requires
from admin.context import ENFORCEMENT, STORE
from admin.controls_api import parse_body
from admin.errors import ApiError, ok
from rules.model import AuditEntry, Name, Policy, iso, utcnow
from rules.roles import Role

REGISTRY = web.AppKey("registry", CollectorRegistry)


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


@requires(Role.commander)
async def rollback(request: web.Request, principal: Principal) -> web.Response:
    spec = await parse_body(request, RollbackSpec, "invalid_rollback")
    store = request.app[STORE]
    if spec.version > store.current().version:
        raise ApiError(422, "invalid_rollback", f"version: {spec.version} does not exist yet", field="version")
    target = await store.history(spec.version)

    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        restored = policy.model_copy(
            update={
                "rules": target.rules,
                "killswitches": target.killswitches,
                "access": target.access,
                "ratelimits": target.ratelimits,
            }
        )
        entry = AuditEntry(
            at=utcnow(),
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
                "killswitches": sorted(target.killswitches),
            },
        )
        return restored, entry

    policy, _ = await store.update(mutate)
    return ok({"version": policy.version, "restored_version": spec.version, "rule_count": len(policy.rules)})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/policy", get_policy)
    app.router.add_get("/v1/audit", get_audit)
    app.router.add_post("/v1/policy/rollback", rollback)
    app.router.add_get("/metrics", metrics)
