from __future__ import annotations

from tests.conftest import Stack


async def test_healthz(stack: Stack) -> None:
    response = await stack.gateway.get("/_containment/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    assert "X-Containment-Request-Id" in response.headers


async def test_readyz_reports_policy_version(stack: Stack) -> None:
    await stack.push({"pattern": "zzz"})
    response = await stack.gateway.get("/_containment/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "policy_version": 1}


async def test_unknown_reserved_path_is_404_json_and_not_proxied(stack: Stack) -> None:
    response = await stack.gateway.get("/_containment/nope")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
