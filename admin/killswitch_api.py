"""`/v1/killswitches`: engage or release a switch for a scope (commander), and list engaged switches."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from admin.auth import Principal, requires
from admin.context import KNOWN, STORE
from admin.controls_api import parse_body
from admin.errors import ApiError, ok
from admin.scopes import killswitch_warnings
from rules.model import AuditEntry, KillSwitch, KillSwitchSpec, Policy, utcnow, valid_scope
from rules.roles import Role
from rules.store_journal import local_only_answer


def _check_scope(scope: str) -> None:
    if not valid_scope(scope):
        raise ApiError(
            422,
            "invalid_scope",
            f"scope: {scope!r} is not global, route:N, model:N, tenant:N or key:KEYID",
            field="scope",
        )


@requires(Role.commander)
async def put_killswitch(request: web.Request, principal: Principal) -> web.Response:
    scope = request.match_info["scope"]
    _check_scope(scope)
    spec = await parse_body(request, KillSwitchSpec, "invalid_killswitch")
    warnings = killswitch_warnings(request.app.get(KNOWN), scope, spec.engaged)  # 422 on unknown routes/tenants

    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        now = utcnow()
        before = policy.killswitches.get(scope)
        switches = dict(policy.killswitches)
        after: KillSwitch | None = None
        if spec.engaged:
            after = KillSwitch(
                scope=scope,
                mode=spec.mode,
                message=spec.message,
                reason=spec.reason,
                engaged_at=now,
                engaged_by=principal.name,
                incident_id=spec.incident_id,
                expires_at=now + timedelta(seconds=spec.ttl_seconds) if spec.ttl_seconds else None,
                running_streams=spec.running_streams,
            )
            switches[scope] = after
        else:
            switches.pop(scope, None)
        entry = AuditEntry(
            at=now,
            actor=principal.name,
            role=principal.role.name,
            action="killswitch.engage" if spec.engaged else "killswitch.release",
            target=scope,
            reason=spec.reason,
            incident_id=spec.incident_id,
            contains=spec.engaged,
            before=before.model_dump(mode="json") if before else None,
            after=after.model_dump(mode="json") if after else None,
        )
        return policy.model_copy(update={"killswitches": switches}), entry

    policy, entry = await request.app[STORE].update(mutate)
    switch = policy.killswitches.get(scope)
    return ok(
        {
            "version": policy.version,
            "scope": scope,
            "engaged": switch is not None,
            "killswitch": switch.model_dump(mode="json") if switch else None,
        }
        | ({"warnings": warnings} if warnings else {})
        | local_only_answer(request.app[STORE], entry)  # engaged while the store was down: this replica only
    )


@requires(Role.viewer)
async def list_killswitches(request: web.Request, principal: Principal) -> web.Response:
    policy = request.app[STORE].current()
    now = utcnow()
    engaged = [s.model_dump(mode="json") for s in policy.killswitches.values() if s.active(now)]
    return ok({"version": policy.version, "killswitches": engaged})


@requires(Role.viewer)
async def get_killswitch(request: web.Request, principal: Principal) -> web.Response:
    scope = request.match_info["scope"]
    _check_scope(scope)
    switch = request.app[STORE].current().killswitches.get(scope)
    active = switch is not None and switch.active(utcnow())
    return ok(
        {"scope": scope, "engaged": active, "killswitch": switch.model_dump(mode="json") if switch and active else None}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/killswitches", list_killswitches)
    app.router.add_get("/v1/killswitches/{scope}", get_killswitch)
    app.router.add_put("/v1/killswitches/{scope}", put_killswitch)
