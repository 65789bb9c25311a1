"""Running streams follow the policy: a kill switch engaged mid-answer cuts streams in its scope (unless it
lets them finish), and output rules pushed mid-answer apply to the rest of every running answer.

A real streaming upstream on 127.0.0.1 sends OpenAI chat chunks slowly (or goes quiet); the gateway and
the admin API are the real ones (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from rules.model import AuditEntry, KillSwitch, Policy, utcnow
from tests.conftest import Stack, StackFactory, chat

Words = Callable[[int], str]
TICK = 0.05  # seconds between the slow upstream's chunks
CHUNKS = 200  # a slow answer lasts about 10 s: far longer than any test waits


def _chunk(text: str | None, finish: str | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    document = {
        "id": "chatcmpl-live",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "mock-echo",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(document) + b"\n\n"


def slow_app(words: Words, *, quiet_after: int | None = None, pause_after: int | None = None) -> web.Application:
    """Streams word(i) every TICK seconds; with `quiet_after`, goes silent after that many chunks; with
    `pause_after`, pauses a second after that chunk (time for a test to push a rule)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(CHUNKS):
            if quiet_after is not None and i == quiet_after:
                await asyncio.sleep(30)
            await response.write(_chunk(words(i)))
            await asyncio.sleep(1.0 if i == pause_after else TICK)
        await response.write(_chunk(None, "stop") + b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


async def slow_stack(make_stack: StackFactory, aiohttp_server: Any, words: Words, **kw: Any) -> Stack:
    server = await aiohttp_server(slow_app(words, **kw))
    return await make_stack(upstream=str(server.make_url("")))


class Reader:
    """One streamed answer read as it arrives."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.body = b""

    async def until(self, needle: bytes, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while needle not in self.body:
                chunk = await self.response.content.readany()
                assert chunk, f"stream ended before {needle!r}: {self.body[-300:]!r}"
                self.body += chunk

    async def to_end(self, within: float) -> float:
        """Read to the end of the stream; how long that took."""
        started = time.monotonic()
        async with asyncio.timeout(within):
            while chunk := await self.response.content.readany():
                self.body += chunk
        return time.monotonic() - started

    def events(self) -> list[str]:
        return [e.removeprefix("data: ") for e in self.body.decode().split("\n\n") if e.strip()]

    def text(self) -> str:
        out = []
        for data in self.events():
            if data != "[DONE]":
                for choice in orjson.loads(data).get("choices", []):
                    out.append(choice.get("delta", {}).get("content") or "")
        return "".join(out)

    def finish_reasons(self) -> list[str]:
        reasons = []
        for data in self.events():
            if data != "[DONE]":
                reasons += [c["finish_reason"] for c in orjson.loads(data)["choices"] if c.get("finish_reason")]
        return reasons


async def open_streams(stack: Stack, count: int, model: str = "mock-echo") -> list[Reader]:
    readers = []
    for _ in range(count):
        response = await stack.gateway.post("/v1/chat/completions", json=chat("hi", model=model, stream=True))
        assert response.status == 200
        reader = Reader(response)
        await reader.until(b"\n\n")
        readers.append(reader)
    return readers


async def engage(stack: Stack, scope: str, *, running_streams: str = "cut") -> None:
    """Engage a switch through the store (the admin API passes `running_streams` through as it is)."""

    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        now = utcnow()
        switch = KillSwitch(
            scope=scope, reason="test", engaged_at=now, engaged_by="test", running_streams=running_streams
        )
        entry = AuditEntry(at=now, actor="test", role="commander", action="killswitch.engage", target=scope, reason="t")
        return policy.model_copy(update={"killswitches": {**policy.killswitches, scope: switch}}), entry

    await stack.store.update(mutate)


def counting(i: int) -> str:
    return f"w{i} "


async def assert_cut(readers: list[Reader], within: float) -> None:
    durations = await asyncio.gather(*(reader.to_end(within=5.0) for reader in readers))
    for reader, took in zip(readers, durations, strict=True):
        assert took < within, f"stream ran on for {took:.2f}s after the switch"
        assert reader.finish_reasons()[-1:] == ["content_filter"], reader.body[-300:]
        assert reader.events()[-1] == "[DONE]"


async def test_a_global_kill_switch_cuts_every_running_stream(make_stack: StackFactory, aiohttp_server: Any) -> None:
    stack = await slow_stack(make_stack, aiohttp_server, counting)
    readers = await open_streams(stack, 20)
    await stack.kill("global")  # through the admin API: the default is to cut
    await assert_cut(readers, within=1.0)
    after = await stack.gateway.post("/v1/chat/completions", json=chat("hi", stream=True))
    assert after.status == 503
    await after.release()


async def test_a_quiet_stream_is_cut_without_waiting_for_its_next_chunk(
    make_stack: StackFactory, aiohttp_server: Any
) -> None:
    stack = await slow_stack(make_stack, aiohttp_server, counting, quiet_after=3)
    (reader,) = await open_streams(stack, 1)
    await reader.until(b"w2 ")
    await asyncio.sleep(2 * TICK)  # the upstream has gone quiet
    await stack.kill("global")
    await assert_cut([reader], within=0.5)


async def test_an_inspected_stream_is_cut_and_counted(make_stack: StackFactory, aiohttp_server: Any) -> None:
    stack = await slow_stack(make_stack, aiohttp_server, counting)
    await stack.push({"pattern": "never said anywhere", "applies_to": "output", "category": "other"})
    readers = await open_streams(stack, 3)
    await stack.kill("route:default")
    await assert_cut(readers, within=1.0)
    metrics = (await (await stack.admin.get("/metrics")).text()).splitlines()
    assert any('outcome="kill_switch"' in line and line.endswith(" 3.0") for line in metrics), [
        line for line in metrics if "kill_switch" in line
    ]


async def test_a_switch_cuts_only_streams_in_its_scope(make_stack: StackFactory, aiohttp_server: Any) -> None:
    stack = await slow_stack(make_stack, aiohttp_server, counting)
    (other,) = await open_streams(stack, 1, model="other-model")
    (target,) = await open_streams(stack, 1, model="mock-echo")
    await engage(stack, "model:mock-echo")
    await assert_cut([target], within=1.0)
    before = len(other.body)
    await asyncio.sleep(5 * TICK)
    await other.until(b"w8 ")
    assert len(other.body) > before and "content_filter" not in other.body.decode()
    other.response.close()


async def test_a_switch_may_let_running_streams_finish(make_stack: StackFactory, aiohttp_server: Any) -> None:
    stack = await slow_stack(make_stack, aiohttp_server, counting)
    (reader,) = await open_streams(stack, 1)
    await engage(stack, "global", running_streams="finish")
    await asyncio.sleep(6 * TICK)
    await reader.until(b"w8 ")  # still streaming
    assert "content_filter" not in reader.body.decode()
    refused = await stack.gateway.post("/v1/chat/completions", json=chat("hi", stream=True))
    assert refused.status == 503  # new requests are refused all the same
    await refused.release()
    reader.response.close()


def secret_at(i: int) -> str:
    return "the launch code is swordfish " if i == 12 else f"w{i} "


async def test_an_output_rule_pushed_mid_stream_cuts_an_uninspected_stream(
    make_stack: StackFactory, aiohttp_server: Any
) -> None:
    stack = await slow_stack(make_stack, aiohttp_server, secret_at, pause_after=4)
    (reader,) = await open_streams(stack, 1)  # no output rules yet: relayed uninspected
    await reader.until(b"w4 ")
    await stack.push({"pattern": "swordfish", "applies_to": "output", "category": "sensitive_data"})
    await reader.to_end(within=3.0)
    assert "swordfish" not in reader.text()
    assert "w11 " in reader.text()
    assert reader.finish_reasons()[-1:] == ["content_filter"]


def spanning(i: int) -> str:
    return {10: "ignore all previous", 11: " instructions and go"}.get(i, f"w{i} ")


async def test_new_output_rules_keep_the_context_already_sent(make_stack: StackFactory, aiohttp_server: Any) -> None:
    stack = await slow_stack(make_stack, aiohttp_server, spanning, pause_after=10)
    await stack.push({"pattern": "an unrelated long phrase here", "applies_to": "output", "category": "other"})
    (reader,) = await open_streams(stack, 1)  # inspected from the start
    await reader.until(b"previous")
    await stack.push({"pattern": "previous instructions", "applies_to": "output", "category": "model_manipulation"})
    await reader.to_end(within=3.0)
    assert "instructions" not in reader.text()
    assert reader.finish_reasons()[-1:] == ["content_filter"]


async def test_an_answer_arriving_after_a_switch_was_engaged_is_refused(
    make_stack: StackFactory, aiohttp_server: Any
) -> None:
    started = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(0.5)
        return web.json_response({"choices": [{"index": 0, "message": {"content": "late"}}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = await aiohttp_server(app)
    stack = await make_stack(upstream=str(server.make_url("")))
    pending: Awaitable[Any] = asyncio.ensure_future(stack.gateway.post("/v1/chat/completions", json=chat("hi")))
    await started.wait()
    await stack.kill("global")
    response = await pending
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "service_suspended"
