"""Issue 16 item 12: the admin API refuses changes that would look like containment and contain nothing
(a switch or a rule on a route or tenant the config does not name, a throttle with no limits, a rule
already expired), caps every reason at 1 KiB and wants one for every change, rule deletion included.
Every refusal is the contract's JSON error (422) and changes nothing."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse

from admin.context import Known
from admin.errors import ApiError
from admin.scopes import killswitch_warnings, rule_scope_warnings
from rules.model import MAX_REASON_BYTES, Scope
from tests.conftest import COMMANDER, RESPONDER, Stack, StackFactory, auth, chat
from tests.processes import containment, http, serve, serve_mock_upstream, stop

ACME = hashlib.sha256(b"sk-acme").hexdigest()[:16]
ADMIN_TOKEN = "validation-commander-01"


async def _error(response: ClientResponse, status: int, code: str, field: str) -> dict[str, Any]:
    """The contract's error shape: JSON `{"error": {"type", "code", "message", ...}}` naming the field."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    error: dict[str, Any] = (await response.json())["error"]
    assert error["type"] == "validation_error" and error["code"] == code and error["field"] == field, error
    assert isinstance(error["message"], str) and error["message"]
    return error


async def _version(stack: Stack) -> int:
    policy = await (await stack.admin.get("/v1/policy", headers=auth(COMMANDER))).json()
    version: int = policy["version"]
    return version


@pytest.fixture
async def acme(make_stack: StackFactory, upstream_server: Any) -> Stack:
    """A gateway with two routes (`default` and `batch`) and one tenant (`acme`)."""
    batch = {"name": "batch", "path_prefix": "/batch/", "upstream": str(upstream_server.make_url(""))}
    return await make_stack(tenants={ACME: "acme"}, routes=[batch])


# -- kill switches on unknown routes and tenants ------------------------------------------------------


@pytest.mark.parametrize(
    "scope,known",
    [("route:chat", "known routes: batch, default"), ("tenant:globex", "known tenants: acme")],
)
async def test_kill_switch_on_an_unknown_route_or_tenant_is_422_naming_the_known_ones(
    acme: Stack, scope: str, known: str
) -> None:
    body = {"engaged": True, "reason": "contain"}
    response = await acme.admin.put(f"/v1/killswitches/{scope}", json=body, headers=auth(COMMANDER))
    error = await _error(response, 422, "invalid_scope", "scope")
    assert known in error["message"] and repr(scope.split(":")[1]) in error["message"]
    assert await _version(acme) == 0  # nothing engaged


async def test_kill_switch_on_a_tenant_without_a_tenants_map_says_none_are_configured(stack: Stack) -> None:
    body = {"engaged": True, "reason": "contain"}
    response = await stack.admin.put("/v1/killswitches/tenant:acme", json=body, headers=auth(COMMANDER))
    assert "no tenants are configured" in (await _error(response, 422, "invalid_scope", "scope"))["message"]


async def test_kill_switch_on_known_scopes_is_engaged_and_a_model_is_accepted_with_a_warning(acme: Stack) -> None:
    for scope in ("route:batch", "tenant:acme", "global"):
        assert "warnings" not in await acme.kill(scope)
    result = await acme.kill("model:gpt-typo")
    assert result["engaged"] is True
    assert len(result["warnings"]) == 1 and "'gpt-typo'" in result["warnings"][0]
    response = await acme.gateway.post("/v1/chat/completions", json=chat("hi", model="gpt-typo"))
    assert response.status == 503  # accepted means enforced


async def test_releasing_a_switch_is_never_refused_for_its_scope(acme: Stack) -> None:
    # The config may have lost the route since the switch was engaged: releasing must still work.
    released = await acme.kill("route:gone", engaged=False, reason="config changed")
    assert released["engaged"] is False


def test_killswitch_warnings_unit() -> None:
    known = Known(routes=frozenset({"default"}), tenants=frozenset(), models=frozenset({"gpt-4o"}))
    assert killswitch_warnings(known, "model:gpt-4o", True) == []
    assert killswitch_warnings(known, "key:0123456789abcdef", True) == []
    assert killswitch_warnings(None, "route:nope", True) == []  # no config at hand: nothing to check against
    with pytest.raises(ApiError) as refused:
        killswitch_warnings(known, "route:nope", True)
    assert refused.value.status == 422 and "known routes: default" in refused.value.message


# -- rules scoped to unknown routes and tenants -------------------------------------------------------


@pytest.mark.parametrize(
    "scope,field,known",
    [
        ({"routes": ["default", "chat"]}, "scope.routes", "known routes: batch, default"),
        ({"tenants": ["globex"]}, "scope.tenants", "known tenants: acme"),
    ],
)
async def test_rule_scoped_to_an_unknown_route_or_tenant_is_422(
    acme: Stack, scope: dict[str, list[str]], field: str, known: str
) -> None:
    rules = [{"pattern": "fine phrase"}, {"pattern": "scoped phrase", "scope": scope}]
    body = {"rules": rules, "reason": "r", "force": True}
    response = await acme.admin.post("/v1/rules", json=body, headers=auth(RESPONDER))
    error = await _error(response, 422, "invalid_rule", field)
    assert error["index"] == 1 and known in error["message"] and error["message"].startswith(f"rules[1].{field}")
    assert await _version(acme) == 0  # all-or-nothing


async def test_rule_on_known_scopes_is_pushed_and_models_are_accepted_with_warnings(acme: Stack) -> None:
    known = await acme.push({"pattern": "acme phrase", "scope": {"routes": ["batch"], "tenants": ["acme"]}})
    assert "warnings" not in known
    result = await acme.push(
        {"pattern": "model phrase", "scope": {"models": ["gpt-typo"]}},
        {"pattern": "other phrase", "scope": {"models": ["gpt-typo"]}},
    )
    assert len(result["ids"]) == 2 and len(result["warnings"]) == 1
    assert "rules[0].scope.models (and 1 more rules)" in result["warnings"][0] and "'gpt-typo'" in result["warnings"][0]


async def test_patch_to_an_unknown_route_is_422_and_a_model_warns(acme: Stack) -> None:
    (rule_id,) = (await acme.push({"pattern": "patched phrase"}))["ids"]
    body = {"scope": {"routes": ["chat"]}, "reason": "narrow"}
    response = await acme.admin.patch(f"/v1/rules/{rule_id}", json=body, headers=auth(RESPONDER))
    assert (await _error(response, 422, "invalid_rule", "scope.routes"))["index"] is None
    body = {"scope": {"models": ["gpt-typo"]}, "reason": "narrow"}
    response = await acme.admin.patch(f"/v1/rules/{rule_id}", json=body, headers=auth(RESPONDER))
    assert response.status == 200 and "'gpt-typo'" in (await response.json())["warnings"][0]


def test_rule_scope_warnings_unit() -> None:
    known = Known(routes=frozenset({"default"}), tenants=frozenset({"acme"}))
    scopes = [(0, None), (1, Scope(routes=["default"], tenants=["acme"])), (2, Scope(models=["m"]))]
    assert len(rule_scope_warnings(known, scopes)) == 1
    with pytest.raises(ApiError) as refused:
        rule_scope_warnings(known, [(5, Scope(tenants=["nope"]))])
    assert refused.value.extra["index"] == 5 and refused.value.extra["field"] == "scope.tenants"


# -- a throttle with no limits ------------------------------------------------------------------------


async def test_throttle_without_limits_is_422(stack: Stack) -> None:
    body = {"limits": [], "throttle": 0.5, "reason": "shed load"}
    response = await stack.admin.put("/v1/ratelimits", json=body, headers=auth(COMMANDER))
    error = await _error(response, 422, "invalid_ratelimits", "throttle")
    assert "restrict nothing" in error["message"]
    response = await stack.admin.put("/v1/ratelimits", json={"throttle": 0, "reason": "r"}, headers=auth(COMMANDER))
    await _error(response, 422, "invalid_ratelimits", "throttle")
    assert await _version(stack) == 0
    # Clearing the limits (no throttle) and throttling real limits are fine.
    assert (await stack.put("/v1/ratelimits", {"limits": []}))["limits"] == []
    limits = [{"subject": "global", "requests": 100, "per_seconds": 1}]
    assert (await stack.put("/v1/ratelimits", {"limits": limits, "throttle": 0.5}))["throttle"] == 0.5


# -- a rule already expired ---------------------------------------------------------------------------


async def test_pushing_an_already_expired_rule_is_422(stack: Stack) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    rules = [{"pattern": "live phrase"}, {"pattern": "dead phrase", "expires_at": past}]
    response = await stack.admin.post("/v1/rules", json={"rules": rules, "reason": "r"}, headers=auth(RESPONDER))
    error = await _error(response, 422, "invalid_rule", "expires_at")
    assert error["index"] == 1 and "already passed" in error["message"]
    assert await _version(stack) == 0
    # A dry run validates the same way.
    response = await stack.admin.post("/v1/rules/simulate", json={"rules": rules}, headers=auth(RESPONDER))
    await _error(response, 422, "invalid_rule", "expires_at")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    await stack.push({"pattern": "dead phrase", "expires_at": future})


async def test_patching_a_past_expiry_ends_the_rule_and_says_so(stack: Stack) -> None:
    (rule_id,) = (await stack.push({"pattern": "soon gone"}))["ids"]
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    body = {"expires_at": past, "reason": "end of watch period"}
    response = await stack.admin.patch(f"/v1/rules/{rule_id}", json=body, headers=auth(RESPONDER))
    assert response.status == 200 and "stopped matching" in (await response.json())["warnings"][0]


# -- reasons: capped everywhere, required for deletes -------------------------------------------------

LONG = "x" * (MAX_REASON_BYTES + 1)
WIDE = "é" * (MAX_REASON_BYTES // 2 + 1)  # 513 characters, 1026 bytes of UTF-8


@pytest.mark.parametrize("reason", [LONG, WIDE], ids=["1025-ascii", "1026-bytes-utf8"])
@pytest.mark.parametrize(
    "method,path,body,code",
    [
        ("POST", "/v1/rules", {"rules": [{"pattern": "long reason"}], "force": True}, "invalid_rule"),
        ("PATCH", "/v1/rules/{id}", {"action": "shadow"}, "invalid_rule"),
        ("DELETE", "/v1/rules/{id}", None, "invalid_rule"),
        ("PUT", "/v1/killswitches/global", {"engaged": True}, "invalid_killswitch"),
        ("PUT", "/v1/access", {"restricted": True}, "invalid_access"),
        ("PUT", "/v1/ratelimits", {"limits": []}, "invalid_ratelimits"),
        ("PUT", "/v1/sampling/forensic", {"rate": 0.5, "ttl_seconds": 60}, "invalid_forensic"),
        ("POST", "/v1/policy/rollback", {"version": 1}, "invalid_rollback"),
        ("POST", "/v1/variants", {"reveal": True}, "invalid_variants"),
    ],
)
async def test_a_reason_over_1_kib_is_422_everywhere(
    stack: Stack, method: str, path: str, body: dict[str, Any] | None, code: str, reason: str
) -> None:
    (rule_id,) = (await stack.push({"pattern": "kept phrase"}))["ids"]
    before = await _version(stack)
    path = path.format(id=rule_id)
    if body is None:
        response = await stack.admin.request(method, path, params={"reason": reason}, headers=auth(COMMANDER))
    else:
        response = await stack.admin.request(method, path, json=body | {"reason": reason}, headers=auth(COMMANDER))
    error = await _error(response, 422, code, "reason")
    assert "1 KiB" in error["message"] or "1024" in error["message"]
    assert await _version(stack) == before


async def test_a_reason_of_exactly_1_kib_is_taken(stack: Stack) -> None:
    reason = "é" * (MAX_REASON_BYTES // 2)
    result = await stack.kill("global", reason=reason)
    assert result["killswitch"]["reason"] == reason


@pytest.mark.parametrize("query", ["", "?reason=", "?reason=%20%20"])
async def test_deleting_a_rule_needs_a_reason(stack: Stack, query: str) -> None:
    (rule_id,) = (await stack.push({"pattern": "kept phrase"}))["ids"]
    response = await stack.admin.delete(f"/v1/rules/{rule_id}{query}", headers=auth(RESPONDER))
    await _error(response, 422, "invalid_rule", "reason")
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("kept phrase"))).status == 400
    response = await stack.admin.delete(f"/v1/rules/{rule_id}?reason=false+positive", headers=auth(RESPONDER))
    assert response.status == 200


# -- end to end: a real `containment serve` and the real CLI ------------------------------------------


@pytest.fixture(scope="module")
def upstream_process() -> Iterator[str]:
    with serve_mock_upstream() as url:
        yield url


def _cli(admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "CONTAINMENT_TOKEN": ADMIN_TOKEN}
    return subprocess.run(
        containment(*args, "--admin", admin), env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_serve_checks_scopes_against_its_config_and_the_cli_needs_a_delete_reason(
    upstream_process: str, tmp_path: Path
) -> None:
    env = {"CONTAINMENT_ADMIN_TOKENS": f"ops:commander:{ADMIN_TOKEN}", "CONTAINMENT_TENANTS": f'{{"{ACME}": "acme"}}'}
    gateway, admin, process = serve(upstream_process, tmp_path / "state", env=env)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        status, _, body = http(
            "PUT", f"{admin}/v1/killswitches/tenant:globex", {"engaged": True, "reason": "r"}, headers
        )
        assert status == 422 and "known tenants: acme" in body["error"]["message"], body
        status, _, body = http(
            "POST",
            f"{admin}/v1/rules",
            {"rules": [{"pattern": "a phrase", "scope": {"routes": ["x"]}}], "reason": "r"},
            headers,
        )
        assert status == 422 and "known routes: default" in body["error"]["message"], body
        status, _, body = http(
            "POST", f"{admin}/v1/rules", {"rules": [{"pattern": "secret plan"}], "reason": "r"}, headers
        )
        assert status == 201, body
        (rule_id,) = body["ids"]

        refused = _cli(admin, "rules", "delete", rule_id)
        assert refused.returncode == 2 and "--reason" in refused.stderr
        status, _, _ = http("GET", f"{admin}/v1/rules/{rule_id}", headers=headers)
        assert status == 200  # still there
        deleted = _cli(admin, "rules", "delete", rule_id, "--reason", "false positive")
        assert deleted.returncode == 0, deleted.stderr
        status, _, entries = http("GET", f"{admin}/v1/audit?limit=1", headers=headers)
        assert entries["entries"][0]["action"] == "rules.delete" and entries["entries"][0]["reason"] == "false positive"

        warned = _cli(admin, "kill", "engage", "model:gpt-typo", "--reason", "r")
        assert warned.returncode == 0 and "warning" in warned.stderr and "'gpt-typo'" in warned.stderr
    finally:
        stop(process)
