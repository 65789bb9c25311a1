"""`/v1/access` and `/v1/ratelimits`: roles, validation (422 naming the field), audit, versions."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import COMMANDER, RESPONDER, VIEWER, Stack, auth


async def test_access_round_trip_and_audit(stack: Stack) -> None:
    body = {
        "restricted": True,
        "allow": {"cidrs": ["10.0.0.1"], "tenants": ["ir"]},
        "reason": "INC lockdown",
        "incident_id": "INC-1",
    }
    result = await stack.put("/v1/access", body)
    assert result["version"] == 1 and result["allow"]["cidrs"] == ["10.0.0.1/32"]
    shown = await (await stack.admin.get("/v1/access", headers=auth(VIEWER))).json()
    assert shown["restricted"] is True and shown["deny"] == {"keys": [], "tenants": [], "cidrs": []}
    entry = (await (await stack.admin.get("/v1/audit", headers=auth(VIEWER))).json())["entries"][0]
    assert entry["action"] == "access.set" and entry["contains"] is True and entry["incident_id"] == "INC-1"
    assert entry["before"]["restricted"] is False and entry["after"]["restricted"] is True


async def test_ratelimits_round_trip(stack: Stack) -> None:
    limits = [{"subject": "key", "requests": 60, "per_seconds": 60, "burst": 10, "model": "gpt-x"}]
    result = await stack.put("/v1/ratelimits", {"limits": limits, "throttle": 0.25})
    assert result["throttle"] == 0.25 and result["limits"][0]["burst"] == 10
    entry = (await (await stack.admin.get("/v1/audit", headers=auth(VIEWER))).json())["entries"][0]
    assert entry["action"] == "ratelimits.set" and entry["after"]["throttle"] == 0.25


@pytest.mark.parametrize(
    "path,body,field",
    [
        ("/v1/access", {"deny": {"cidrs": ["10.0.0.0/33"]}}, "deny.cidrs"),
        ("/v1/access", {"deny": {"cidrs": ["not-an-ip"]}}, "deny.cidrs"),
        ("/v1/access", {"allow": {"keys": ["not-a-key-id"]}}, "allow.keys.0"),
        ("/v1/access", {"restricted": "sometimes"}, "restricted"),
        ("/v1/access", {"deny": {"users": ["x"]}}, "deny.users"),
        ("/v1/ratelimits", {"limits": [{"subject": "key", "requests": -1, "per_seconds": 60}]}, "limits.0.requests"),
        ("/v1/ratelimits", {"limits": [{"subject": "key", "requests": 1, "per_seconds": 0}]}, "limits.0.per_seconds"),
        ("/v1/ratelimits", {"limits": [{"subject": "planet", "requests": 1, "per_seconds": 1}]}, "limits.0.subject"),
        (
            "/v1/ratelimits",
            {"limits": [{"subject": "key", "requests": 1, "per_seconds": 1, "burst": 0}]},
            "limits.0.burst",
        ),
        ("/v1/ratelimits", {"limits": [], "throttle": 1.5}, "throttle"),
        ("/v1/ratelimits", {"limits": [], "throttle": -0.1}, "throttle"),
    ],
)
async def test_bad_input_is_422_naming_the_field(stack: Stack, path: str, body: dict[str, Any], field: str) -> None:
    response = await stack.admin.put(path, json={"reason": "r"} | body, headers=auth(COMMANDER))
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert error["field"] == field
    assert (await (await stack.admin.get("/v1/policy", headers=auth(VIEWER))).json())["version"] == 0


@pytest.mark.parametrize("path", ["/v1/access", "/v1/ratelimits"])
async def test_reason_is_required_and_commander_only(stack: Stack, path: str) -> None:
    assert (await stack.admin.put(path, json={}, headers=auth(COMMANDER))).status == 422
    assert (await stack.admin.put(path, json={"reason": "r"}, headers=auth(RESPONDER))).status == 403
    assert (await stack.admin.get(path, headers=auth(VIEWER))).status == 200
