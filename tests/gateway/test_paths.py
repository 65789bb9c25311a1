"""Issue 16 item 5: a route's kill switch and its scoped rules cannot be stepped around with another
spelling of the same path. The server puts every request path in normal form (gateway/paths.py) before
routing, and forwards that form; what cannot be normalised safely is refused with 400. Raw sockets:
HTTP clients would normalise these paths themselves."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from gateway.paths import BadPath, is_normal_candidate, normal_path
from tests.conftest import Stack, StackFactory


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/", "/"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v1//chat/completions", "/v1/chat/completions"),
        ("//v1///chat//completions", "/v1/chat/completions"),
        ("/v1/./chat/completions", "/v1/chat/completions"),
        ("/v1/x/../chat/completions", "/v1/chat/completions"),
        ("/v1/chat/completions/.", "/v1/chat/completions/"),
        ("/v1/chat/completions/x/..", "/v1/chat/completions/"),
        ("/../../v1/chat/completions", "/v1/chat/completions"),  # clamped at the root (RFC 3986 §5.2.4)
        ("/v1/%2e/chat/completions", "/v1/chat/completions"),
        ("/v1/x/%2E%2e/chat/completions", "/v1/chat/completions"),
        ("/v1/x/.%2e/chat/completions", "/v1/chat/completions"),
        ("/v1/chat/%63ompletions", "/v1/chat/completions"),
        ("/v1/chat/completions%7e", "/v1/chat/completions~"),
        ("/v1/a%20b", "/v1/a%20b"),
        ("/v1/a%3fb%c3%a9", "/v1/a%3Fb%C3%A9"),
        ("/v1/chat/", "/v1/chat/"),
        ("/.well-known/x", "/.well-known/x"),
        ("/v1/models/org%2fname", "/v1/models/org%2Fname"),  # kept encoded: normal either way
        ("/v1//models/./org%2Fname", "/v1/models/org%2Fname"),
        ("/v1/..x/y", "/v1/..x/y"),
    ],
)
def test_normal_form(raw: str, normal: str) -> None:
    assert normal_path(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "/v1/x%2F..%2Fchat/completions",  # an upstream that decodes %2F would resolve `..`
        "/v1/x%2f%2e%2e/chat",
        "/v1%2F%2Fchat",
        "/v1/%2F",
        "/v1/chat%5Ccompletions",
        "/v1\\chat",
        "/v1/%00",
        "/v1/%zz",
        "/v1/%4",
        "*",
    ],
)
def test_paths_that_cannot_be_normalised_safely(raw: str) -> None:
    with pytest.raises(BadPath):
        normal_path(raw)


_SEGMENTS = st.lists(
    st.sampled_from(
        ["", ".", "..", "%2e", "%2E%2e", "v1", "chat", "completions", "a%20b", "%63", "x~", "a%2fb", "a%2f..", "%2F"]
    ),
    max_size=8,
)


@given(_SEGMENTS)
def test_normal_form_is_normal(segments: list[str]) -> None:
    try:
        normal = normal_path("/" + "/".join(segments))
    except BadPath:
        assert {"a%2f..", "%2F"} & set(segments)  # only an encoded slash next to a dot or empty segment
        return
    assert normal_path(normal) == normal  # idempotent
    assert normal.startswith("/") and "//" not in normal
    assert not {".", ".."} & set(normal.split("/"))
    decoded = normal.replace("%2F", "/")  # what an upstream that decodes encoded slashes sees
    assert "//" not in decoded and not {".", ".."} & set(decoded.split("/"))
    assert "%2e" not in normal.lower()  # no escaped dot left
    assert is_normal_candidate(normal) == ("%" in normal or "/." in normal)


# --- through the gateway ---

TRICKS = [
    b"/v1/chat/completions",
    b"/v1//chat/completions",
    b"//v1/chat/completions",
    b"/v1/chat//completions",
    b"/v1/./chat/completions",
    b"/v1/x/../chat/completions",
    b"/x/../v1/chat/completions",
    b"/v1/%2e/chat/completions",
    b"/v1/x/%2e%2e/chat/completions",
    b"/v1/chat/%63ompletions",
    b"/v1/%63hat/completions?x=1",
    b"/v1/chat%2Fcompletions",
    b"/v1%2Fchat/completions",
    b"/v1/x%2F..%2Fchat/completions",
    b"/v1/x%2f%2E%2E%2fchat/completions",
    b"/v1/chat%5Ccompletions",
    b"/v1/chat\\completions",
    b"http://upstream.example/v1//chat/completions",
]
_BODY = b'{"model": "mock-echo", "messages": [{"role": "user", "content": "route phrase"}]}'


async def post(stack: Stack, target: bytes, body: bytes = _BODY) -> tuple[int, dict[str, Any]]:
    server = stack.gateway.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            b"POST %b HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
            % (target, len(body), body)
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        return status, orjson.loads(await asyncio.wait_for(reader.readexactly(length), 5))
    finally:
        writer.close()


@pytest.fixture
async def routed(make_stack: StackFactory, upstream_server: TestServer) -> Stack:
    upstream = str(upstream_server.make_url(""))
    chat = {"name": "chat", "path_prefix": "/v1/chat/completions", "upstream": upstream}
    rest = {"name": "rest", "path_prefix": "/", "upstream": upstream}
    return await make_stack(routes=[chat, rest])


@pytest.mark.parametrize("target", TRICKS)
async def test_a_route_kill_switch_holds_for_every_spelling(routed: Stack, target: bytes) -> None:
    await routed.kill("route:chat")
    status, body = await post(routed, target)
    assert status in (503, 400), body
    assert body["error"]["code"] in ("service_suspended", "invalid_path", "invalid_request")


@pytest.mark.parametrize("target", TRICKS)
async def test_a_route_scoped_rule_holds_for_every_spelling(routed: Stack, target: bytes) -> None:
    await routed.push({"pattern": "route phrase", "scope": {"routes": ["chat"]}})
    status, body = await post(routed, target)
    assert status == 400, body
    assert body["error"]["code"] in ("content_filter", "invalid_path", "invalid_request")


async def test_the_upstream_receives_the_normal_path(routed: Stack) -> None:
    status, body = await post(routed, b"/v1/echo/a%2f%2e%2e%2fb?q=1", b"{}")
    assert status == 400 and body["error"]["code"] == "invalid_path"  # `..` if the upstream decodes `%2F`
    status, body = await post(routed, b"/v1/x/..//echo/./a%2e%41b/%7e%3f?q=%2e%2E/..", b"{}")
    assert status == 200, body
    assert body["path"] == "/v1/echo/a.Ab/~%3F"  # the query is the caller's, unchanged
    assert body["query"] == "q=../.."  # (aiohttp's query_string is decoded)


async def test_refusals_are_json_and_close(routed: Stack) -> None:
    server = routed.gateway.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /v1/a%2F%2Fb HTTP/1.1\r\nHost: a\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head
    error = orjson.loads(body)["error"]
    assert error["code"] == "invalid_path" and error["request_id"] and "encoded" in error["message"]
