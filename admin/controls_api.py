"""`/v1/access` and `/v1/ratelimits`: read (viewer) and replace whole (commander), audited."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from admin.auth import Principal, requires
from admin.context import STORE
from admin.errors import ApiError, check_reason, ok, read_json
from rules.controls import AccessSpec, RateLimitSpec
from rules.model import AuditEntry, Policy, utcnow
from rules.roles import Role


def validation_error(exc: ValidationError, code: str) -> ApiError:
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error["loc"]) or "body"
    message = error["msg"].removeprefix("Value error, ")
    return ApiError(422, code, f"{field}: {message}", field=field, reason=message)


T = TypeVar("T", bound=BaseModel)


async def parse_body(request: web.Request, model: type[T], code: str) -> T:
    """The JSON body validated as `model`; 400 for malformed JSON, 422 naming the field otherwise (a
    `reason` over 1 KiB included, whatever model takes it)."""
    body = await read_json(request)
    check_reason(body.get("reason"), code)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc, code) from None


async def _show(request: web.Request, section: str) -> web.Response:
    policy = request.app[STORE].current()
    return ok({"version": policy.version, **getattr(policy, section).model_dump(mode="json")})


async def _replace(
    request: web.Request,
    principal: Principal,
    section: str,
    value: BaseModel,
    *,
    reason: str,
    incident_id: str | None,
    contains: bool,
) -> web.Response:
    """Replace one whole section of the policy (`access`, `ratelimits`), audited with before and after."""

    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        entry = AuditEntry(
            at=utcnow(),
            actor=principal.name,
            role=principal.role.name,
            action=f"{section}.set",
            target=section,
            reason=reason,
            incident_id=incident_id,
            contains=contains,
            before=getattr(policy, section).model_dump(mode="json"),
            after=value.model_dump(mode="json"),
        )
        return policy.model_copy(update={section: value}), entry

    await request.app[STORE].update(mutate)
    return await _show(request, section)


@requires(Role.viewer)
async def get_access(request: web.Request, principal: Principal) -> web.Response:
    return await _show(request, "access")


@requires(Role.commander)
async def put_access(request: web.Request, principal: Principal) -> web.Response:
    spec = await parse_body(request, AccessSpec, "invalid_access")
    access = spec.to_policy()
    return await _replace(
        request,
        principal,
        "access",
        access,
        reason=spec.reason,
        incident_id=spec.incident_id,
        contains=access.restricts(),
    )


@requires(Role.viewer)
async def get_ratelimits(request: web.Request, principal: Principal) -> web.Response:
    return await _show(request, "ratelimits")


@requires(Role.commander)
async def put_ratelimits(request: web.Request, principal: Principal) -> web.Response:
    spec = await parse_body(request, RateLimitSpec, "invalid_ratelimits")
    if spec.throttle < 1 and not spec.limits:
        problem = (
            f"throttle {spec.throttle} scales the limits, and this body configures none: it would restrict nothing"
        )
        raise ApiError(422, "invalid_ratelimits", f"throttle: {problem}", field="throttle", reason=problem)
    limits = spec.to_policy()
    return await _replace(
        request,
        principal,
        "ratelimits",
        limits,
        reason=spec.reason,
        incident_id=spec.incident_id,
        contains=bool(limits.limits),
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/access", get_access)
    app.router.add_put("/v1/access", put_access)
    app.router.add_get("/v1/ratelimits", get_ratelimits)
    app.router.add_put("/v1/ratelimits", put_ratelimits)
