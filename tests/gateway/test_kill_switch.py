"""Kill switches refuse with 503 service_suspended and Retry-After, at every scope."""

from __future__ import annotations

import asyncio
import hashlib

from tests.conftest import Stack, chat


async def test_global_switch_refuses_everything(stack: Stack) -> None:
    await stack.kill("global", message="Paused during incident INC-7.")
    response = await stack.gateway.post("/v1/chat/completions", json=chat("hello"))
    assert response.status == 503
    assert response.headers["X-Containment-Action"] == "kill_switch"
    assert response.headers["Retry-After"] == "300"
    error = (await response.json())["error"]
    assert error["code"] == "service_suspended"
    assert error["message"] == "Paused during incident INC-7."
    assert (await stack.gateway.get("/v1/models")).status == 503


async def test_release_restores_traffic(stack: Stack) -> None:
    await stack.kill("global")
    await stack.kill("global", engaged=False)
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("hello"))).status == 200


async def test_model_switch_only_hits_that_model(stack: Stack) -> None:
    await stack.kill("model:bad-model")
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("x", model="bad-model"))).status == 503
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("x", model="good"))).status == 200


async def test_route_switch(stack: Stack) -> None:
    await stack.kill("route:default")
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("x"))).status == 503


async def test_key_switch_uses_the_key_id(stack: Stack) -> None:
    key_id = hashlib.sha256(b"sk-abuser").hexdigest()[:16]
    await stack.kill(f"key:{key_id}")
    blocked = await stack.gateway.post(
        "/v1/chat/completions", json=chat("x"), headers={"Authorization": "Bearer sk-abuser"}
    )
    assert blocked.status == 503
    other = await stack.gateway.post("/v1/chat/completions", json=chat("x"), headers={"x-api-key": "sk-fine"})
    assert other.status == 200
    via_api_key = await stack.gateway.post("/v1/chat/completions", json=chat("x"), headers={"api-key": "sk-abuser"})
    assert via_api_key.status == 503


async def test_ttl_releases_the_switch_by_itself(stack: Stack) -> None:
    await stack.kill("global", ttl_seconds=1)
    response = await stack.gateway.post("/v1/chat/completions", json=chat("x"))
    assert response.status == 503
    assert 1 <= int(response.headers["Retry-After"]) <= 1
    await asyncio.sleep(1.1)
    assert (await stack.gateway.post("/v1/chat/completions", json=chat("x"))).status == 200


async def test_switch_beats_everything_else(stack: Stack) -> None:
    await stack.push({"pattern": "hello"})
    await stack.kill("global")
    response = await stack.gateway.post("/v1/chat/completions", json=chat("hello"))
    assert response.status == 503
