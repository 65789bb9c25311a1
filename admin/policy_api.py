"""`/v1/policy` (the whole policy at its version), `/v1/audit` (append-only log) and `/metrics`."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from admin.auth import Principal, requires
from admin.context import ENFORCEMENT, STORE
from admin.errors import ApiError, ok
from rules.roles import Role

REGISTRY = web.AppKey("registry", CollectorRegistry)


@requires(Role.viewer)
async def get_policy(request: web.Request, principal: Principal) -> web.Response:
    policy = request.app[STORE].current()
    enforcement = request.app[ENFORCEMENT]()
    payload = policy.model_dump(mode="json")
    payload["rule_count"] = len(policy.rules)
    payload["compiled_at"] = enforcement.compiled_at.isoformat() if enforcement else None
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


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/policy", get_policy)
    app.router.add_get("/v1/audit", get_audit)
    app.router.add_get("/metrics", metrics)
