"""`GET /v1/openapi.json`: the admin API as an OpenAPI 3.1 document, request bodies from the pydantic
models the handlers validate with (so the document cannot drift from what is enforced)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from admin.errors import ok
from admin.incidents_api import IncidentSpec
from admin.policy_api import RollbackSpec
from admin.variants_api import VariantsSpec
from rules.controls import AccessSpec, ForensicSpec, RateLimitSpec
from rules.model import KillSwitchSpec, RulePatch, RuleSpec

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["type", "code", "message"]}},
}


_COMPONENTS: dict[str, Any] = {}


def _schema(model: type[BaseModel] | Any) -> dict[str, Any]:
    """The model's JSON schema; its nested definitions go to `components.schemas`."""
    schema: dict[str, Any] = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
    _COMPONENTS.update(schema.pop("$defs", {}))
    return schema


def _push() -> dict[str, Any]:
    rules = _schema(list[RuleSpec])
    return {
        "type": "object",
        "required": ["rules", "reason"],
        "additionalProperties": False,
        "properties": {
            "rules": rules,
            "reason": {"type": "string", "minLength": 1},
            "force": {"type": "boolean", "description": "push past the safety net's overridable refusals"},
        },
    }


def _operation(
    role: str | None, summary: str, body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
        "400": {"description": "malformed", "content": {"application/json": {"schema": _ERROR}}},
        "404": {"description": "not found", "content": {"application/json": {"schema": _ERROR}}},
        "422": {"description": "invalid", "content": {"application/json": {"schema": _ERROR}}},
        "503": {"description": "store unavailable", "content": {"application/json": {"schema": _ERROR}}},
    }
    if role is not None:
        responses["401"] = {"description": "no or bad token", "content": {"application/json": {"schema": _ERROR}}}
        responses["403"] = {"description": f"needs {role}", "content": {"application/json": {"schema": _ERROR}}}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if role is not None:
        operation["security"] = [{"bearer": []}]
        operation["x-role"] = role
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        operation["responses"]["201"] = {"description": "created"}
    if params:
        operation["parameters"] = params
    return operation


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, kind: str = "string", *, required: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if name == "reason":
        schema["maxLength"] = 1024  # bytes of UTF-8, checked by the API
    return {"name": name, "in": "query", "required": required, "schema": schema}


def document() -> dict[str, Any]:
    _COMPONENTS.clear()
    rule_id, scope = _path_param("rule_id"), _path_param("scope")
    paths: dict[str, Any] = {
        "/v1/policy": {"get": _operation("viewer", "The whole policy at its version")},
        "/v1/policy/rollback": {"post": _operation("commander", "Restore a version", _schema(RollbackSpec))},
        "/v1/rules": {
            "get": _operation(
                "viewer",
                "List rules",
                params=[_query(n) for n in ("category", "stage", "incident_id", "action")]
                + [_query("limit", "integer"), _query("offset", "integer")],
            ),
            "post": _operation("responder", "Push rules (all-or-nothing)", _push()),
        },
        "/v1/rules/simulate": {"post": _operation("responder", "Dry-run rules over samples", _push())},
        "/v1/rules/{rule_id}": {
            "get": _operation("viewer", "A rule and its watch period", params=[rule_id]),
            "patch": _operation("responder", "Promote, renew, re-scope", _schema(RulePatch), [rule_id]),
            "delete": _operation("responder", "Delete a rule", params=[rule_id, _query("reason", required=True)]),
        },
        "/v1/killswitches": {"get": _operation("viewer", "Engaged kill switches")},
        "/v1/killswitches/{scope}": {
            "get": _operation("viewer", "One kill switch", params=[scope]),
            "put": _operation("commander", "Engage or release", _schema(KillSwitchSpec), [scope]),
        },
        "/v1/access": {
            "get": _operation("viewer", "Access lists"),
            "put": _operation("commander", "Replace access lists", _schema(AccessSpec)),
        },
        "/v1/ratelimits": {
            "get": _operation("viewer", "Rate limits"),
            "put": _operation("commander", "Replace rate limits", _schema(RateLimitSpec)),
        },
        "/v1/incidents": {
            "get": _operation("viewer", "Incidents"),
            "post": _operation("commander", "Declare an incident", _schema(IncidentSpec)),
        },
        "/v1/incidents/{incident_id}": {
            "get": _operation("viewer", "An incident's timeline", params=[_path_param("incident_id")])
        },
        "/v1/audit": {
            "get": _operation(
                "viewer", "Audit log", params=[_query("limit", "integer"), _query("before_version", "integer")]
            )
        },
        "/v1/samples": {
            "get": _operation(
                "responder",
                "Sampled traffic (masked)",
                params=[
                    _query("limit", "integer"),
                    _query("request_id"),
                    _query("category"),
                    _query("rule_id"),
                    _query("outcome"),
                    _query("route"),
                    _query("reveal", "boolean"),
                    _query("reason"),
                ],
            )
        },
        "/v1/reports": {"get": _operation("responder", "User reports", params=[_query("limit", "integer")])},
        "/v1/sampling": {"get": _operation("viewer", "Sampling and forensic mode")},
        "/v1/sampling/forensic": {"put": _operation("commander", "Forensic sampling", _schema(ForensicSpec))},
        "/v1/alerts": {"get": _operation("viewer", "Open anomaly alerts")},
        "/v1/variants": {"post": _operation("responder", "Stage-2 proposals", _schema(VariantsSpec))},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "containment-gateway admin API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": dict(_COMPONENTS),
        },
        "paths": paths,
    }


async def openapi(request: web.Request) -> web.Response:
    return ok(document())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", openapi)
