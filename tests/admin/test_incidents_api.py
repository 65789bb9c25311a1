"""Incidents: declaration, linked actions in order, and time from declaration to first containment."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import COMMANDER, RESPONDER, VIEWER, Stack, auth


async def _declare(stack: Stack) -> str:
    response = await stack.admin.post(
        "/v1/incidents",
        json={"title": "Jailbreak wave", "severity": "high", "commander": "cleo"},
        headers=auth(COMMANDER),
    )
    assert response.status == 201, await response.text()
    incident_id: str = (await response.json())["id"]
    return incident_id


async def test_timeline_and_first_containment(stack: Stack) -> None:
    incident_id = await _declare(stack)
    await asyncio.sleep(0.05)
    await stack.push({"pattern": "watch only", "action": "shadow", "incident_id": incident_id})  # not containment
    await stack.push({"pattern": "dan mode", "incident_id": incident_id, "category": "model_manipulation"})
    await stack.kill("model:gpt-x", incident_id=incident_id)
    await stack.push({"pattern": "unrelated"})
    incident = await (await stack.admin.get(f"/v1/incidents/{incident_id}", headers=auth(VIEWER))).json()
    assert incident["title"] == "Jailbreak wave" and incident["commander"] == "cleo"
    assert incident["declared_by"] == "cleo" and incident["severity"] == "high"
    assert [a["action"] for a in incident["actions"]] == ["rules.add", "rules.add", "killswitch.engage"]
    assert incident["first_containment_at"] == incident["actions"][1]["at"]
    assert 0.05 <= incident["time_to_first_containment_seconds"] < 5
    listed = await (await stack.admin.get("/v1/incidents", headers=auth(VIEWER))).json()
    assert [i["id"] for i in listed["incidents"]] == [incident_id]


async def test_incident_without_containment_yet(stack: Stack) -> None:
    incident_id = await _declare(stack)
    incident = await (await stack.admin.get(f"/v1/incidents/{incident_id}", headers=auth(VIEWER))).json()
    assert incident["first_containment_at"] is None and incident["time_to_first_containment_seconds"] is None


async def test_unknown_incident_is_404(stack: Stack) -> None:
    response = await stack.admin.get("/v1/incidents/INC-nope", headers=auth(VIEWER))
    assert response.status == 404


@pytest.mark.parametrize(
    "body,field",
    [
        ({"title": "", "severity": "high", "commander": "c"}, "title"),
        ({"title": "t", "severity": "sev0", "commander": "c"}, "severity"),
        ({"title": "t", "severity": "high"}, "commander"),
    ],
)
async def test_bad_declaration_is_422(stack: Stack, body: dict[str, str], field: str) -> None:
    response = await stack.admin.post("/v1/incidents", json=body, headers=auth(COMMANDER))
    assert response.status == 422 and (await response.json())["error"]["field"] == field


async def test_only_commanders_declare(stack: Stack) -> None:
    body = {"title": "t", "severity": "low", "commander": "c"}
    assert (await stack.admin.post("/v1/incidents", json=body, headers=auth(RESPONDER))).status == 403
