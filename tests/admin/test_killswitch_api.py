from __future__ import annotations

import pytest

from tests.conftest import COMMANDER, VIEWER, Stack, auth


async def test_engage_list_release_audit(stack: Stack) -> None:
    result = await stack.kill("model:gpt-x", reason="jailbreak wave", message="paused", incident_id="INC-3")
    assert result["engaged"] is True and result["version"] == 1
    listed = await (await stack.admin.get("/v1/killswitches", headers=auth(VIEWER))).json()
    assert [s["scope"] for s in listed["killswitches"]] == ["model:gpt-x"]
    assert listed["killswitches"][0]["engaged_by"] == "cleo"
    one = await (await stack.admin.get("/v1/killswitches/model:gpt-x", headers=auth(VIEWER))).json()
    assert one["engaged"] is True
    released = await stack.kill("model:gpt-x", engaged=False, reason="contained")
    assert released["engaged"] is False
    entries = (await (await stack.admin.get("/v1/audit", headers=auth(VIEWER))).json())["entries"]
    assert [e["action"] for e in entries] == ["killswitch.release", "killswitch.engage"]
    assert entries[0]["before"]["reason"] == "jailbreak wave" and entries[0]["after"] is None
    assert entries[1]["incident_id"] == "INC-3"


@pytest.mark.parametrize("scope", ["everything", "model:", "route:a b", "tenant:", "user:x"])
async def test_bad_scope_is_422(stack: Stack, scope: str) -> None:
    response = await stack.admin.put(
        f"/v1/killswitches/{scope}", json={"engaged": True, "reason": "r"}, headers=auth(COMMANDER)
    )
    assert response.status in (404, 422)
    assert (await response.json())["error"]["code"] in ("invalid_scope", "not_found")


@pytest.mark.parametrize(
    "body,field",
    [
        ({"engaged": True}, "reason"),
        ({"engaged": "yes please", "reason": "r"}, "engaged"),
        ({"engaged": True, "reason": "r", "mode": "explode"}, "mode"),
        ({"engaged": True, "reason": "r", "ttl_seconds": 0}, "ttl_seconds"),
    ],
)
async def test_bad_body_is_422_naming_the_field(stack: Stack, body: object, field: str) -> None:
    response = await stack.admin.put("/v1/killswitches/global", json=body, headers=auth(COMMANDER))
    assert response.status == 422
    assert (await response.json())["error"]["field"] == field
