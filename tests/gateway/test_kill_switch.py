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


async def test_canned_mode_answers_with_the_message(stack: Stack) -> None:
    await stack.kill("global", mode="canned", message="We're paused while we check something.")
    response = await stack.gateway.post("/v1/chat/completions", json=chat("hello", model="gpt-x"))
    assert response.status == 200
    assert response.headers["X-Containment-Action"] == "kill_switch"
    body = await response.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-x"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "We're paused while we check something."}
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_canned_mode_streams_when_the_request_streams(stack: Stack) -> None:
    await stack.kill("global", mode="canned", message="Paused.")
    response = await stack.gateway.post("/v1/chat/completions", json=chat("hello", stream=True))
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [e for e in (await response.text()).split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert '"content":"Paused."' in events[1]
    assert '"finish_reason":"stop"' in events[-2]


async def test_canned_completions_shape(stack: Stack) -> None:
    await stack.kill("global", mode="canned", message="Paused.")
    body = await (await stack.gateway.post("/v1/completions", json={"model": "m", "prompt": "x"})).json()
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "Paused."


async def test_most_specific_switch_wins(stack: Stack) -> None:
    await stack.kill("global", message="global says no")
    await stack.kill("model:special", mode="canned", message="special canned")
    special = await stack.gateway.post("/v1/chat/completions", json=chat("x", model="special"))
    assert special.status == 200
    assert (await special.json())["choices"][0]["message"]["content"] == "special canned"
    other = await stack.gateway.post("/v1/chat/completions", json=chat("x", model="other"))
    assert other.status == 503 and (await other.json())["error"]["message"] == "global says no"


async def test_engaged_switches_are_in_metrics(stack: Stack) -> None:
    await stack.kill("global")
    await stack.kill("model:x")
    metrics = await (await stack.admin.get("/metrics")).text()
    assert "containment_killswitches_engaged 2.0" in metrics
