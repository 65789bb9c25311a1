"""The data plane relays method, path, query, body and end-to-end headers, and streams without buffering."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiohttp import web

from tests.conftest import Stack, StackFactory, chat


async def test_chat_completion_passes_through(stack: Stack) -> None:
    response = await stack.gateway.post("/v1/chat/completions", json=chat("hello there"))
    assert response.status == 200
    body = await response.json()
    assert body["choices"][0]["message"]["content"] == "hello there"
    assert len(response.headers["X-Containment-Request-Id"]) == 24


async def test_method_path_query_body_and_headers_pass_unchanged(stack: Stack) -> None:
    response = await stack.gateway.request(
        "PATCH",
        "/some/path%2Fencoded?b=2&a=1&a=%20x",
        data=b"raw \x00 bytes",
        headers={
            "Content-Type": "application/octet-stream",
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "secret",
        },
    )
    assert response.status == 200
    echoed = await response.json()
    names = {name.lower(): value for name, value in echoed["headers"]}
    assert echoed["method"] == "PATCH"
    assert echoed["path"] == "/some/path%2Fencoded"
    assert echoed["query"] in ("b=2&a=1&a=%20x", "b=2&a=1&a= x")
    assert echoed["body"] == "raw \x00 bytes"
    assert names["x-custom"] == "kept"
    assert names["content-type"] == "application/octet-stream"
    for hop in ("x-hop", "keep-alive", "proxy-authorization"):
        assert hop not in names
    assert "x-containment-request-id" in names
    assert "user-agent" in names  # the test client's own, passed on


async def test_no_headers_are_invented_for_the_upstream(stack: Stack) -> None:
    response = await stack.gateway.get("/plain", skip_auto_headers=["User-Agent", "Accept", "Accept-Encoding"])
    names = {name.lower() for name, _ in (await response.json())["headers"]}
    assert "user-agent" not in names
    assert "content-type" not in names


async def test_response_hop_by_hop_headers_are_dropped(aiohttp_server: Any, make_stack: StackFactory) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"X-Upstream": "yes", "Connection": "X-Secret", "X-Secret": "1"})

    app = web.Application()
    app.router.add_get("/h", handler)
    server = await aiohttp_server(app)
    stack = await make_stack(upstream=str(server.make_url("")))
    response = await stack.gateway.get("/h")
    assert response.headers["X-Upstream"] == "yes"
    assert "X-Secret" not in response.headers
    assert await response.text() == "ok"


async def test_sse_streams_through_without_buffering(aiohttp_server: Any, make_stack: StackFactory) -> None:
    release = asyncio.Event()

    async def slow_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await asyncio.wait_for(release.wait(), 10)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", slow_stream)
    server = await aiohttp_server(app)
    stack = await make_stack(upstream=str(server.make_url("")))
    response = await stack.gateway.post("/v1/chat/completions", json=chat("hi", stream=True))
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
    assert first == b"data: first\n\n"  # arrived while the upstream still holds the rest
    release.set()
    assert await response.content.read() == b"data: [DONE]\n\n"


async def test_mock_upstream_streams_sse_chunks(stack: Stack) -> None:
    response = await stack.gateway.post("/v1/chat/completions", json=chat("abcdefghij", stream=True))
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = [e for e in (await response.text()).split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    contents = [e.split('"content":"')[1].split('"')[0] for e in events if '"content":"' in e]
    assert contents == ["", "abcd", "efgh", "ij"]


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_unreachable_upstream_is_502_json(make_stack: StackFactory) -> None:
    stack = await make_stack(upstream=f"http://127.0.0.1:{_unused_port()}")
    response = await stack.gateway.post("/v1/chat/completions", json=chat("hi"))
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_unavailable"
    assert error["request_id"] == response.headers["X-Containment-Request-Id"]
    assert response.headers["X-Containment-Action"] == "upstream_error"


async def test_slow_upstream_is_504_json(aiohttp_server: Any, make_stack: StackFactory) -> None:
    async def stall(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", stall)
    server = await aiohttp_server(app)
    stack = await make_stack(upstream=str(server.make_url("")), upstream_read_timeout=0.3)
    response = await stack.gateway.post("/v1/chat/completions", json=chat("hi"))
    assert response.status == 504
    assert (await response.json())["error"]["code"] == "upstream_timeout"


async def test_body_over_limit_is_413(make_stack: StackFactory) -> None:
    stack = await make_stack(max_body_bytes=2048)
    response = await stack.gateway.post("/v1/chat/completions", data=b"x" * 4096)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "request_too_large"


async def test_malformed_json_is_400(stack: Stack) -> None:
    response = await stack.gateway.post(
        "/v1/chat/completions", data=b'{"messages": [', headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_request"


async def test_gzip_request_body_reaches_the_upstream_inflated(stack: Stack) -> None:
    import gzip

    response = await stack.gateway.post(
        "/echo", data=gzip.compress(b'{"x": "plain"}'), headers={"Content-Encoding": "gzip"}
    )
    echoed = await response.json()
    assert echoed["body"] == '{"x": "plain"}'
    assert "content-encoding" not in {name.lower() for name, _ in echoed["headers"]}
