"""Hostile and malformed input at the data plane: clear 4xx JSON, nothing smuggled upstream, no hangs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import Stack, StackFactory


@pytest.mark.parametrize(
    "raw",
    [
        b'{"messages": [',  # truncated
        b'{"messages": "\\ud800"}',  # a lone surrogate
        b'{"messages": "\xff\xfe"}',  # invalid UTF-8
        b"[" * 5000 + b"]" * 5000,  # nested beyond any parser's patience
        b'{"a":' * 100 + b"1" + b"}" * 100,  # nested deeper than the scan follows
    ],
)
async def test_malformed_json_is_400_json(stack: Stack, raw: bytes) -> None:
    response = await stack.gateway.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == "invalid_request" and body["error"]["request_id"]


@pytest.mark.parametrize(
    "path,document",
    [
        ("/v1/chat/completions", {"model": "m", "messages": {"role": "user"}}),
        ("/v1/chat/completions", {"model": "m", "messages": ["just a string"]}),
        ("/v1/chat/completions", {"model": 5, "messages": []}),
        ("/v1/chat/completions", {"model": "m", "messages": [], "stream": "yes"}),
        ("/v1/chat/completions", ["not", "an", "object"]),
        ("/v1/completions", {"model": "m", "prompt": 42}),
        ("/v1/embeddings", {"model": "m", "input": {"x": 1}}),
        ("/v1/messages", {"model": "m", "messages": "hi"}),
    ],
)
async def test_wrong_types_on_known_endpoints_are_400_json(stack: Stack, path: str, document: Any) -> None:
    response = await stack.gateway.post(path, json=document)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"


async def test_odd_types_elsewhere_are_scanned_not_crashed(stack: Stack) -> None:
    await stack.push({"pattern": "bad phrase"})
    weird = {"model": 5, "data": {"role": ["user"], "content": [None, 1.5, {"text": "bad phrase"}]}}
    response = await stack.gateway.post("/v1/custom", json=weird)
    assert response.status == 400 and (await response.json())["error"]["code"] == "content_filter"


async def _raw(stack: Stack, payload: bytes, *, read_timeout: float = 5.0) -> bytes:
    server = stack.gateway.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), read_timeout)
    finally:
        writer.close()


@pytest.fixture
async def recording(aiohttp_server: Any, make_stack: StackFactory) -> tuple[Stack, list[bytes]]:
    seen: list[bytes] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    server = await aiohttp_server(app)
    stack = await make_stack(upstream=str(server.make_url("")), max_body_bytes=4096, body_timeout_seconds=0.5)
    return stack, seen


@pytest.mark.parametrize(
    "request_bytes",
    [
        # Content-Length and Transfer-Encoding together
        b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        # two different Content-Length headers
        b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
        # obsolete line folding
        b"POST /v1/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n",
        # a bare CR inside a header
        b"GET /v1/x HTTP/1.1\r\nHost: a\rX-Evil: 1\r\n\r\n",
    ],
)
async def test_smuggling_attempts_are_refused_and_reach_nothing(
    recording: tuple[Stack, list[bytes]], request_bytes: bytes
) -> None:
    stack, seen = recording
    answer = await _raw(stack, request_bytes)
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:200]  # refused by the parser
    await asyncio.sleep(0.1)
    assert seen == []


async def test_oversized_headers_are_4xx(stack: Stack) -> None:
    answer = await _raw(stack, b"GET /v1/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert answer.split(b" ", 2)[1].startswith(b"4"), answer[:100]


async def test_declared_oversize_body_is_413_before_it_is_sent(recording: tuple[Stack, list[bytes]]) -> None:
    stack, seen = recording
    answer = await _raw(stack, b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b"request_too_large" in answer
    assert seen == []


async def test_endless_chunked_upload_is_cut_at_the_limit(recording: tuple[Stack, list[bytes]]) -> None:
    stack, seen = recording
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    answer = await _raw(stack, b"POST /v1/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 8)
    assert answer.startswith(b"HTTP/1.1 413")
    assert seen == []


async def test_a_lying_content_length_times_out_with_408(recording: tuple[Stack, list[bytes]]) -> None:
    stack, seen = recording
    answer = await _raw(stack, b"POST /v1/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nshort", read_timeout=5)
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
    assert seen == []


async def test_a_10k_rule_push_under_traffic_fails_no_request(stack: Stack) -> None:
    from tests.conftest import chat

    statuses: list[int] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            response = await stack.gateway.post("/v1/chat/completions", json=chat("a clean question"))
            statuses.append(response.status)

    workers = [asyncio.create_task(traffic()) for _ in range(4)]
    await asyncio.sleep(0.1)
    await stack.push(*[{"pattern": f"pushed phrase {index} qx", "stage": 2} for index in range(10_000)])
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*workers)
    assert len(statuses) > 20 and set(statuses) == {200}
    blocked = await stack.gateway.post("/v1/chat/completions", json=chat("say pushed phrase 9999 qx"))
    assert blocked.status == 400


async def _in_front_of(
    aiohttp_server: Any, make_stack: StackFactory, method: str, path: str, handler: Any, **overrides: Any
) -> Stack:
    """A gateway stack whose upstream is one handler on one route."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    server = await aiohttp_server(app)
    return await make_stack(upstream=str(server.make_url("")), **overrides)


async def test_a_client_that_stops_reading_is_let_go(aiohttp_server: Any, make_stack: StackFactory) -> None:
    stopped = asyncio.Event()

    async def firehose(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        try:
            for _ in range(4096):  # up to 256 MiB: far more than any socket buffer
                await response.write(b"x" * 65536)
        except (ConnectionResetError, asyncio.CancelledError):
            stopped.set()
            raise
        return response

    stack = await _in_front_of(aiohttp_server, make_stack, "GET", "/big", firehose, client_write_timeout_seconds=0.5)
    reader, writer = await asyncio.open_connection(stack.gateway.server.host, stack.gateway.server.port)
    writer.write(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    await writer.drain()
    await reader.read(1024)  # read the start, then stop reading
    try:
        await asyncio.wait_for(stopped.wait(), 10)  # the gateway gave up, and released the upstream
    finally:
        writer.close()


async def test_slow_clients_do_not_starve_others(stack: Stack) -> None:
    from tests.conftest import chat

    server = stack.gateway.server
    idle = []
    for index in range(200):  # slowloris: headers that never finish, and bodies that never come
        reader, writer = await asyncio.open_connection(server.host, server.port)
        partial = b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n"
        if index % 2:
            partial += b"Content-Length: 1000\r\n\r\n{"
        writer.write(partial)
        idle.append(writer)
    try:
        started = asyncio.get_running_loop().time()
        response = await stack.gateway.post("/v1/chat/completions", json=chat("still served"))
        assert response.status == 200
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        for writer in idle:
            writer.close()


@pytest.mark.parametrize("content_type", ["text/event-stream", "application/octet-stream"])
@pytest.mark.parametrize("leaves", ["before the answer", "mid-answer"])
async def test_a_client_leaving_is_not_logged_as_an_error(
    aiohttp_server: Any, make_stack: StackFactory, caplog: pytest.LogCaptureFixture, content_type: str, leaves: str
) -> None:
    stopped = asyncio.Event()

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        try:
            if leaves == "before the answer":
                await asyncio.sleep(0.3)  # the client is gone before the headers come back
            await response.prepare(request)
            for index in range(200):
                await response.write(f"data: part {index}\n\n".encode())
                await asyncio.sleep(0.01)
        except (ConnectionResetError, asyncio.CancelledError):
            stopped.set()
            raise
        return response

    stack = await _in_front_of(aiohttp_server, make_stack, "POST", "/v1/chat/completions", trickle)
    await stack.push({"pattern": "never said", "applies_to": "output"})
    reader, writer = await asyncio.open_connection(stack.gateway.server.host, stack.gateway.server.port)
    body = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    if leaves == "mid-answer":
        await reader.readuntil(b"part 0")
    writer.close()
    if leaves == "mid-answer":
        await asyncio.wait_for(stopped.wait(), 10)  # the upstream's answer was stopped
    else:
        await asyncio.sleep(0.6)  # the gateway drops the exchange (it may never reach the upstream)
    await asyncio.sleep(0.1)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
