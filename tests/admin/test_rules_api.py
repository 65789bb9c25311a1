"""`/v1/rules`: all-or-nothing bulk push, 422 naming the bad rule, list filters, read, delete, audit."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import COMMANDER, RESPONDER, VIEWER, Stack, auth, chat


async def _post(stack: Stack, body: Any) -> Any:
    return await stack.admin.post("/v1/rules", json=body, headers=auth(RESPONDER))


async def test_push_returns_version_and_ids_and_records_provenance(stack: Stack) -> None:
    response = await _post(
        stack,
        {
            "rules": [
                {"pattern": "alpha", "id": "my-rule", "incident_id": "INC-1", "owner": "safety", "ttl_seconds": 3600},
                {"pattern": "beta", "kind": "literal", "severity": "critical", "stage": 2},
            ],
            "reason": "first containment",
            "force": True,  # made-up patterns: "alpha" is in ordinary text (the safety net's own tests cover it)
        },
    )
    assert response.status == 201
    result = await response.json()
    assert result["version"] == 1
    assert result["ids"][0] == "my-rule"
    assert result["ids"][1].startswith("r_")
    rule = await (await stack.admin.get("/v1/rules/my-rule", headers=auth(VIEWER))).json()
    assert rule["created_by"] == "rory"
    assert rule["expires_at"] is not None
    assert rule["applies_to"] == "both" and rule["action"] == "block" and rule["category"] == "other"


@pytest.mark.parametrize(
    "rules,index,field",
    [
        ([{"pattern": "ok"}, {"pattern": ""}], 1, "pattern"),
        ([{"pattern": "ok"}, {"pattern": "   "}], 1, "pattern"),
        ([{"pattern": "ok"}, {"pattern": "x", "severity": "huge"}], 1, "severity"),
        ([{"pattern": "x", "category": "not_a_category"}], 0, "category"),
        ([{"pattern": "x", "actoin": "block"}], 0, "actoin"),
        ([{"pattern": "x", "stage": 4}], 0, "stage"),
        ([{"pattern": "x", "ttl_seconds": -1}], 0, "ttl_seconds"),
        ([{"pattern": "x", "expires_at": "2030-01-01T00:00:00"}], 0, "expires_at"),
        ([{"pattern": "x", "scope": {"routes": "default"}}], 0, "scope.routes"),
        ([{"pattern": "a", "id": "same"}, {"pattern": "b", "id": "same"}], 1, "id"),
        (["not an object"], 0, "rule"),
        ([{"pattern": 5}], 0, "pattern"),
        ([{"pattern": "(a+)+$", "kind": "regex"}], 0, "pattern"),
        ([{"pattern": "[unclosed", "kind": "regex"}], 0, "pattern"),
        ([{"pattern": "... --- ???", "kind": "literal"}], 0, "pattern"),
    ],
)
async def test_invalid_rule_is_422_naming_index_and_field_and_changes_nothing(
    stack: Stack, rules: list[Any], index: int, field: str
) -> None:
    response = await _post(stack, {"rules": rules, "reason": "r"})
    assert response.status == 422
    error = (await response.json())["error"]
    assert error["code"] == "invalid_rule"
    assert error["index"] == index
    assert error["field"] == field
    assert error["message"].startswith(f"rules[{index}].")
    policy = await (await stack.admin.get("/v1/policy", headers=auth(VIEWER))).json()
    assert policy["version"] == 0 and policy["rules"] == []


@pytest.mark.parametrize(
    "body,field",
    [
        ({"rules": [], "reason": "r"}, "rules"),
        ({"rules": [{"pattern": "x"}]}, "reason"),
        ({"rules": [{"pattern": "x"}], "reason": "  "}, "reason"),
        ({"rules": [{"pattern": "x"}], "reason": "r", "extra": 1}, "extra"),
    ],
)
async def test_invalid_push_envelope_is_422(stack: Stack, body: Any, field: str) -> None:
    response = await _post(stack, body)
    assert response.status == 422
    assert (await response.json())["error"]["field"] == field


async def test_existing_id_is_refused(stack: Stack) -> None:
    await stack.push({"pattern": "a", "id": "taken"})
    response = await _post(stack, {"rules": [{"pattern": "b"}, {"pattern": "c", "id": "taken"}], "reason": "r"})
    assert response.status == 422
    assert (await response.json())["error"]["index"] == 1
    assert len((await (await stack.admin.get("/v1/rules", headers=auth(VIEWER))).json())["rules"]) == 1


@pytest.mark.parametrize("raw", [b"{bad json", b"[1, 2]", b"", b"\xff\xfe"])
async def test_malformed_json_is_400(stack: Stack, raw: bytes) -> None:
    response = await stack.admin.post("/v1/rules", data=raw, headers=auth(RESPONDER))
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_json"


async def test_unknown_route_and_method_are_json(stack: Stack) -> None:
    response = await stack.admin.get("/v1/nothing-here", headers=auth(VIEWER))
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    response = await stack.admin.request("PATCH", "/v1/audit", headers=auth(VIEWER))
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_list_filters(stack: Stack) -> None:
    await stack.push(
        {"pattern": "a", "category": "self_harm", "stage": 1},
        {"pattern": "b", "category": "self_harm", "stage": 2, "action": "shadow", "incident_id": "INC-9"},
        {"pattern": "c", "category": "other"},
    )

    async def listed(query: str) -> list[str]:
        body = await (await stack.admin.get(f"/v1/rules?{query}", headers=auth(VIEWER))).json()
        return sorted(rule["pattern"] for rule in body["rules"])

    assert await listed("category=self_harm") == ["a", "b"]
    assert await listed("category=self_harm&stage=2") == ["b"]
    assert await listed("action=shadow") == ["b"]
    assert await listed("incident_id=INC-9") == ["b"]
    assert await listed("limit=2") == ["a", "b"]
    assert await listed("offset=2") == ["c"]
    assert (await stack.admin.get("/v1/rules?limit=abc", headers=auth(VIEWER))).status == 400


async def test_get_unknown_rule_is_404(stack: Stack) -> None:
    response = await stack.admin.get("/v1/rules/nope", headers=auth(VIEWER))
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_delete_stops_enforcement_and_is_audited(stack: Stack) -> None:
    result = await stack.push({"pattern": "gone soon", "incident_id": "INC-2"})
    rule_id = result["ids"][0]
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("gone soon"))).status == 400
    response = await stack.admin.delete(f"/v1/rules/{rule_id}?reason=false+positive", headers=auth(RESPONDER))
    assert response.status == 200
    assert (await response.json()) == {"version": 2, "deleted": rule_id}
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("gone soon"))).status == 200
    assert (await stack.admin.delete(f"/v1/rules/{rule_id}?reason=again", headers=auth(RESPONDER))).status == 404
    entries = (await (await stack.admin.get("/v1/audit", headers=auth(VIEWER))).json())["entries"]
    assert [e["action"] for e in entries] == ["rules.delete", "rules.add"]
    assert entries[0]["reason"] == "false positive"
    assert entries[0]["actor"] == "rory" and entries[0]["role"] == "responder"
    assert entries[0]["before"]["pattern"] == "gone soon"
    assert entries[0]["incident_id"] == "INC-2"


async def test_policy_shows_version_and_what_this_process_enforces(stack: Stack) -> None:
    await stack.push({"pattern": "p"})
    policy = await (await stack.admin.get("/v1/policy", headers=auth(COMMANDER))).json()
    assert policy["version"] == 1
    assert policy["enforced_version"] == 1
    assert policy["compiled_at"]
    assert policy["rule_count"] == 1
    assert policy["rules"][0]["pattern"] == "p"


async def test_large_push_is_one_version(stack: Stack) -> None:
    rules = [{"pattern": f"phrase {i} zq"} for i in range(20_000)]
    result = await stack.push(*rules)
    assert result["version"] == 1 and len(result["ids"]) == 20_000
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("say phrase 19999 zq"))).status == 400
    audit = (await (await stack.admin.get("/v1/audit", headers=auth(VIEWER))).json())["entries"][0]
    assert audit["after"]["count"] == 20_000 and audit["after"]["ids_truncated"] is True
