"""`/v1/incidents`: declare an incident (commander) and see its timeline: declaration, first
containment, and every linked change in order. Incidents are derived from the audit log: the
declaration is an audit record, and a change belongs to an incident when it names its id."""

from __future__ import annotations

import os
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from admin.auth import Principal, requires
from admin.context import STORE
from admin.controls_api import parse_body
from admin.errors import ok
from rules.model import AuditEntry, Policy, Severity, iso, utcnow
from rules.roles import Role
from rules.store import NotFound

DECLARE = "incident.declare"


class IncidentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, Field(min_length=1, max_length=300)]
    severity: Severity
    commander: Annotated[str, Field(min_length=1, max_length=200)]


@requires(Role.commander)
async def declare(request: web.Request, principal: Principal) -> web.Response:
    spec = await parse_body(request, IncidentSpec, "invalid_incident")
    store = request.app[STORE]
    taken = {entry.target for entry in await store.audit(limit=1_000_000, action=DECLARE)}
    incident_id = f"INC-{utcnow():%Y%m%d}-{os.urandom(2).hex()}"
    while incident_id in taken:
        incident_id = f"INC-{utcnow():%Y%m%d}-{os.urandom(3).hex()}"

    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        entry = AuditEntry(
            at=utcnow(),
            actor=principal.name,
            role=principal.role.name,
            action=DECLARE,
            target=incident_id,
            reason=spec.title,
            incident_id=incident_id,
            after=spec.model_dump(mode="json"),
        )
        return policy, entry

    _, entry = await store.update(mutate)
    return ok({"id": incident_id, "declared_at": iso(entry.at)}, status=201)


def _summary(entry: AuditEntry) -> dict[str, object]:
    details = entry.after if isinstance(entry.after, dict) else {}
    return {"id": entry.target, "declared_at": iso(entry.at), "declared_by": entry.actor, **details}


@requires(Role.viewer)
async def list_incidents(request: web.Request, principal: Principal) -> web.Response:
    entries = await request.app[STORE].audit(limit=10_000, action=DECLARE)
    return ok({"incidents": [_summary(entry) for entry in entries]})


@requires(Role.viewer)
async def get_incident(request: web.Request, principal: Principal) -> web.Response:
    incident_id = request.match_info["incident_id"]
    store = request.app[STORE]
    linked = await store.audit(limit=1_000_000, incident_id=incident_id, oldest_first=True)
    declared = next((e for e in linked if e.action == DECLARE and e.target == incident_id), None)
    if declared is None:
        raise NotFound(f"no incident {incident_id!r} was declared")
    first = next((e for e in linked if e.contains and e.at >= declared.at), None)
    return ok(
        {
            **_summary(declared),
            "first_containment_at": iso(first.at) if first else None,
            "time_to_first_containment_seconds": round((first.at - declared.at).total_seconds(), 3) if first else None,
            "actions": [e.model_dump(mode="json") for e in linked if e is not declared],
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/incidents", declare)
    app.router.add_get("/v1/incidents", list_incidents)
    app.router.add_get("/v1/incidents/{incident_id}", get_incident)
