"""Bearer tokens with ordered roles: 401 without or with a bad token, 403 below the needed role."""

from __future__ import annotations

import pytest

from admin.context import INSIGHT
from tests.conftest import COMMANDER, RESPONDER, VIEWER, Stack, StackFactory, auth


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dmVyYTp4"},
        {"Authorization": f"Bearer {VIEWER}x"},
        {"Authorization": f"Bearer {VIEWER[:-1]}"},
        {"Authorization": "Bearer " + "x" * 5000},
    ],
)
async def test_missing_or_bad_token_is_401(stack: Stack, headers: dict[str, str]) -> None:
    response = await stack.admin.get("/v1/policy", headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await response.json())["error"]["code"] == "unauthenticated"


async def test_token_in_query_string_is_not_accepted(stack: Stack) -> None:
    response = await stack.admin.get(f"/v1/policy?token={VIEWER}&access_token={VIEWER}")
    assert response.status == 401


@pytest.mark.parametrize(
    "method,path,body,allowed",
    [
        ("POST", "/v1/rules", {"rules": [{"pattern": "x"}], "reason": "r", "force": True}, {RESPONDER, COMMANDER}),
        ("PUT", "/v1/killswitches/global", {"engaged": False, "reason": "r"}, {COMMANDER}),
        ("GET", "/v1/rules", None, {VIEWER, RESPONDER, COMMANDER}),
        ("GET", "/v1/audit", None, {VIEWER, RESPONDER, COMMANDER}),
    ],
)
async def test_roles_are_ordered(stack: Stack, method: str, path: str, body: object, allowed: set[str]) -> None:
    for token in (VIEWER, RESPONDER, COMMANDER):
        response = await stack.admin.request(method, path, json=body, headers=auth(token))
        if token in allowed:
            assert response.status in (200, 201), await response.text()
        else:
            assert response.status == 403
            assert (await response.json())["error"]["code"] == "forbidden"


async def test_metrics_need_no_token(stack: Stack) -> None:
    response = await stack.admin.get("/metrics")
    assert response.status == 200
    assert "containment_policy_version" in await response.text()


async def test_an_expired_token_is_401(make_stack: StackFactory) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from admin.app import build_admin_app
    from rules.roles import AdminToken

    stack = await make_stack()
    tokens = [
        AdminToken.parse("old:commander:old-token-000001;expires=2020-01-01T00:00:00Z"),
        AdminToken.parse("new:viewer:new-token-000001;expires=2999-01-01T00:00:00Z"),
    ]
    app = build_admin_app(
        store=stack.store,
        tokens=tokens,
        registry=stack.registry,
        categories=frozenset({"other"}),
        insight=stack.admin.app[INSIGHT],
    )
    async with TestClient(TestServer(app)) as client:
        expired = await client.get("/v1/policy", headers=auth("old-token-000001"))
        assert expired.status == 401 and "expired" in (await expired.json())["error"]["message"]
        assert (await client.get("/v1/policy", headers=auth("new-token-000001"))).status == 200


@pytest.mark.parametrize(
    "spec", ["a:viewer:token-000000001;expires=tomorrow", "a:viewer:token-000000001;expires=2030-01-01"]
)
def test_bad_token_expiry_is_refused(spec: str) -> None:
    from rules.roles import AdminToken

    with pytest.raises(ValueError):
        AdminToken.parse(spec)
