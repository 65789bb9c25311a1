"""Rule lifecycle: default stage-1 expiry, PATCH (promote, renew, re-scope), rollback, all audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import COMMANDER, RESPONDER, VIEWER, Stack, auth, chat


async def _patch(stack: Stack, rule_id: str, body: dict[str, object], status: int = 200) -> dict[str, object]:
    response = await stack.admin.patch(f"/v1/rules/{rule_id}", json=body, headers=auth(RESPONDER))
    assert response.status == status, await response.text()
    result: dict[str, object] = await response.json()
    return result


async def _rule(stack: Stack, rule_id: str) -> dict[str, object]:
    result: dict[str, object] = await (await stack.admin.get(f"/v1/rules/{rule_id}", headers=auth(VIEWER))).json()
    return result


async def test_stage_one_rules_get_a_default_expiry(stack: Stack) -> None:
    ids = (await stack.push({"pattern": "a"}, {"pattern": "b", "stage": 2}, {"pattern": "c", "ttl_seconds": 60}))["ids"]
    expires = datetime.fromisoformat(str((await _rule(stack, ids[0]))["expires_at"]))
    assert timedelta(hours=71) < expires - datetime.now(UTC) <= timedelta(hours=72)
    assert (await _rule(stack, ids[1]))["expires_at"] is None
    short = datetime.fromisoformat(str((await _rule(stack, ids[2]))["expires_at"]))
    assert short - datetime.now(UTC) <= timedelta(seconds=60)


async def test_promote_shadow_to_block(stack: Stack) -> None:
    (rule_id,) = (await stack.push({"pattern": "probe phrase", "action": "shadow", "incident_id": "INC-5"}))["ids"]
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("probe phrase"))).status == 200
    result = await _patch(stack, rule_id, {"action": "block", "reason": "shadow hits confirmed"})
    assert result["version"] == 2
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("probe phrase"))).status == 400
    entry = (await (await stack.admin.get("/v1/audit", headers=auth(VIEWER))).json())["entries"][0]
    assert entry["action"] == "rules.patch" and entry["reason"] == "shadow hits confirmed"
    assert entry["before"]["action"] == "shadow" and entry["after"]["action"] == "block"
    assert entry["contains"] is True and entry["incident_id"] == "INC-5"


async def test_renew_rescope_and_clear_expiry(stack: Stack) -> None:
    (rule_id,) = (await stack.push({"pattern": "scoped", "ttl_seconds": 5}))["ids"]
    await _patch(stack, rule_id, {"ttl_seconds": 7200, "reason": "renew"})
    renewed = datetime.fromisoformat(str((await _rule(stack, rule_id))["expires_at"]))
    assert renewed - datetime.now(UTC) > timedelta(hours=1)
    await _patch(stack, rule_id, {"scope": {"models": ["only-this"]}, "reason": "narrow"})
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("scoped", model="other"))).status == 200
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("scoped", model="only-this"))).status == 400
    await _patch(stack, rule_id, {"expires_at": None, "reason": "stage 3 fix landed late"})
    assert (await _rule(stack, rule_id))["expires_at"] is None


async def test_expired_by_patch_stops_matching(stack: Stack) -> None:
    (rule_id,) = (await stack.push({"pattern": "soon gone"}))["ids"]
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    await _patch(stack, rule_id, {"expires_at": past, "reason": "end of watch period"})
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("soon gone"))).status == 200


@pytest.mark.parametrize(
    "body,field",
    [
        ({"pattern": "other", "reason": "r"}, "pattern"),
        ({"kind": "regex", "reason": "r"}, "kind"),
        ({"action": "explode", "reason": "r"}, "action"),
        ({"action": "block"}, "reason"),
        ({"category": "nope", "reason": "r"}, "category"),
        ({"ttl_seconds": 10, "expires_at": "2030-01-01T00:00:00Z", "reason": "r"}, "rule"),
    ],
)
async def test_bad_patch_is_422(stack: Stack, body: dict[str, object], field: str) -> None:
    (rule_id,) = (await stack.push({"pattern": "x"}))["ids"]
    result = await _patch(stack, rule_id, body, status=422)
    assert result["error"]["field"] == field  # type: ignore[index]


async def test_patch_unknown_rule_is_404(stack: Stack) -> None:
    await _patch(stack, "r_missing", {"action": "block", "reason": "r"}, status=404)


async def test_rollback_restores_the_whole_policy_as_a_new_version(stack: Stack) -> None:
    await stack.push({"pattern": "first rule"})  # v1
    await stack.put("/v1/ratelimits", {"limits": [{"subject": "global", "requests": 1000, "per_seconds": 1}]})  # v2
    await stack.push({"pattern": "bad broad rule"})  # v3: a mistake
    await stack.kill("model:frozen")  # v4: kept by the rollback (release_killswitches is not set)
    response = await stack.admin.post(
        "/v1/policy/rollback", json={"version": 2, "reason": "v3 over-blocks"}, headers=auth(COMMANDER)
    )
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert {k: answer[k] for k in ("version", "restored_version", "rule_count")} == {
        "version": 5,
        "restored_version": 2,
        "rule_count": 1,
    }
    assert answer["changes"]["killswitches"]["kept"] == ["model:frozen"]
    assert answer["changes"]["rules"]["removed"] == 1
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("bad broad rule"))).status == 200
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("first rule"))).status == 400
    limits = await (await stack.admin.get("/v1/ratelimits", headers=auth(VIEWER))).json()
    assert limits["limits"][0]["requests"] == 1000
    entry = (await (await stack.admin.get("/v1/audit", headers=auth(VIEWER))).json())["entries"][0]
    assert entry["action"] == "policy.rollback" and entry["after"]["restored_version"] == 2


@pytest.mark.parametrize("version,status", [(0, 422), (99, 422)])
async def test_rollback_to_a_missing_version(stack: Stack, version: int, status: int) -> None:
    response = await stack.admin.post(
        "/v1/policy/rollback", json={"version": version, "reason": "r"}, headers=auth(COMMANDER)
    )
    assert response.status == status


async def test_rollback_is_commander_only(stack: Stack) -> None:
    await stack.push({"pattern": "x"})
    body = {"version": 1, "reason": "r"}
    response = await stack.admin.post("/v1/policy/rollback", json=body, headers=auth(RESPONDER))
    assert response.status == 403
