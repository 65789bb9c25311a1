"""Issue 16 item 4: the identity the gateway checks (key kill switches, key rules, access lists, rate
limits) is the one the upstream receives. Raw sockets: the tricks are in the headers' bytes."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import orjson
import pytest

from tests.conftest import Stack

KEY = "sk-real-key-0001"
DECOY = "sk-decoy-key-0002"


def key_id(key: bytes | str) -> str:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()[:16]


async def send(stack: Stack, headers: bytes, path: bytes = b"/v1/echo") -> tuple[int, dict[str, Any]]:
    """One GET with the given header lines; the status and the JSON body (the mock upstream's echo
    lists the headers it received)."""
    server = stack.gateway.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        body = orjson.loads(await asyncio.wait_for(reader.readexactly(length), 5))
        return status, body
    finally:
        writer.close()


def upstream_keys(body: dict[str, Any]) -> set[str]:
    """The API keys the upstream received, in every header it might read one from."""
    keys = set()
    for name, value in body["headers"]:
        lower = name.lower()
        if lower == "authorization" and value.split(None, 1)[0].lower() == "bearer":
            keys.add(value.split(None, 1)[1].strip())
        elif lower in ("api-key", "x-api-key"):
            keys.add(value.strip())
    return keys


@pytest.mark.parametrize(
    "headers",
    [
        # the reported bypass: the gateway read the decoy, then the upstream hop dropped it
        b"Authorization: Bearer %(decoy)s\r\nx-api-key: %(key)s\r\nConnection: authorization\r\n",
        b"Authorization: Bearer %(decoy)s\r\nx-api-key: %(key)s\r\nConnection: keep-alive, Authorization\r\n",
        b"api-key: %(decoy)s\r\nAuthorization: Bearer %(key)s\r\nConnection: api-key\r\n",
        b"x-api-key: %(key)s\r\nConnection: x-forwarded-for\r\n",
        # conflicting keys: upstreams differ in which header they read
        b"Authorization: Bearer %(decoy)s\r\nx-api-key: %(key)s\r\n",
        b"Authorization: Bearer %(decoy)s\r\napi-key: %(key)s\r\n",
        b"api-key: %(decoy)s\r\nx-api-key: %(key)s\r\n",
        # a header repeated with different values: the gateway read the first, an upstream may read the last
        b"x-api-key: %(decoy)s\r\nx-api-key: %(key)s\r\n",
        b"Authorization: Bearer %(decoy)s\r\nAuthorization: Bearer %(key)s\r\n",
    ],
)
async def test_ambiguous_identity_is_refused(stack: Stack, headers: bytes) -> None:
    await stack.kill(f"key:{key_id(KEY)}")
    status, body = await send(stack, headers % {b"key": KEY.encode(), b"decoy": DECOY.encode()})
    assert status == 400, body
    assert body["error"]["code"] == "invalid_request" and body["error"]["request_id"]


@pytest.mark.parametrize(
    "headers",
    [
        b"Authorization: Bearer %(key)s\r\n",
        b"Authorization: Bearer\t%(key)s\r\n",  # any whitespace after the scheme
        b"Authorization: bearer   %(key)s\r\n",
        b"Authorization: BEARER \t %(key)s\r\n",
        b"api-key: %(key)s\r\n",
        b"X-Api-Key: %(key)s\r\n",
        b"Authorization: Bearer %(key)s\r\nx-api-key: %(key)s\r\n",  # the same key twice is one key
        b"x-api-key: %(key)s\r\nx-api-key: %(key)s\r\n",
        b"Authorization: Basic dXNlcjpwYXNz\r\nx-api-key: %(key)s\r\n",
        b"Authorization: Bearer %(key)s\r\nConnection: keep-alive\r\n",
    ],
)
async def test_every_way_of_sending_the_key_meets_its_kill_switch(stack: Stack, headers: bytes) -> None:
    await stack.kill(f"key:{key_id(KEY)}")
    status, body = await send(stack, headers % {b"key": KEY.encode()})
    assert status == 503 and body["error"]["code"] == "service_suspended", body


async def test_a_key_that_is_not_utf8_is_still_identified(stack: Stack) -> None:
    raw = b"sk-\xff\xfe-key"
    await stack.kill(f"key:{key_id(raw)}")
    status, body = await send(stack, b"x-api-key: " + raw + b"\r\n")
    assert status == 503, body


@pytest.mark.parametrize(
    "headers",
    [
        b"Authorization: Bearer %(key)s\r\n",
        b"Authorization: Bearer\t%(key)s\r\n",
        b"x-api-key: %(key)s\r\n",
        b"Authorization: Bearer %(key)s\r\napi-key: %(key)s\r\nConnection: keep-alive\r\n",
        b"Authorization: Basic dXNlcjpwYXNz\r\nx-api-key: %(key)s\r\n",
    ],
)
async def test_the_upstream_sees_exactly_the_identified_key(stack: Stack, headers: bytes) -> None:
    """A switch on the decoy key proves the gateway identified the request as the decoy's; the echo
    shows that the upstream received that key and no other."""
    await stack.kill(f"key:{key_id(KEY)}")
    status, body = await send(stack, headers % {b"key": DECOY.encode()})
    assert status == 200, body
    assert upstream_keys(body) == {DECOY}
    await stack.kill(f"key:{key_id(DECOY)}")
    status, _ = await send(stack, headers % {b"key": DECOY.encode()})
    assert status == 503
