"""The upstream hop's HTTP/1.1 client, against raw loopback servers that answer with scripted bytes."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from gateway.policy_watch import SnapshotHolder
from gateway.settings import Settings
from gateway.telemetry import Telemetry
from gateway.upstream import (
    _HIGH_WATER,
    Answer,
    Origin,
    UndecodableAnswer,
    UpstreamBusy,
    UpstreamFailed,
    UpstreamPool,
    UpstreamTimeout,
)
from rules.alerts import AnomalyDetector
from rules.samples import FileSampleSink
from rules.watch import FileHits
from tests.conftest import StackFactory, chat, start_gateway

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """Counts connections; each connection runs `script(reader, writer, connection_number)`."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        request = head + (await reader.readexactly(length) if length else b"")
        self.requests.append(request)
        return request

    @property
    def origin(self) -> Origin:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return Origin.parse(f"http://127.0.0.1:{port}")


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Script], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(script: Script) -> RawServer:
        raw = RawServer(script)
        raw.server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        servers.append(raw)
        return raw

    yield start
    for raw in servers:
        assert raw.server is not None
        raw.server.close()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    upstream = UpstreamPool(connect_timeout=2, read_timeout=2)
    yield upstream
    await upstream.close()


def head(path: str = "/x", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: a\r\n\r\n".encode()


async def rest_of(answer: Answer) -> bytes:
    parts = []
    while part := await answer.read():
        parts.append(part)
    return b"".join(parts)


async def read_all(pool: UpstreamPool, origin: Origin, method: str = "GET", **kwargs: Any) -> tuple[int, bytes]:
    answer = await pool.request(origin, method, head(method=method), b"", **kwargs)
    try:
        return answer.status, await rest_of(answer)
    finally:
        answer.release()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_keep_alive_connections_are_reused(raw_server: Any, pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while True:
            await raw.read_request(reader)
            writer.write(OK)

    raw = await raw_server(script)
    for _ in range(5):
        assert await read_all(pool, raw.origin) == (200, b"ok")
    assert raw.connections == 1


async def test_the_keep_alive_race_is_retried_on_a_new_connection(raw_server: Any, pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await raw.read_request(reader)
        writer.write(OK)
        await writer.drain()
        if number == 1:
            await raw.read_request(reader)  # the second request arrives as the server gives up on the connection
            return

    raw = await raw_server(script)
    assert await read_all(pool, raw.origin) == (200, b"ok")
    assert await read_all(pool, raw.origin) == (200, b"ok")
    assert raw.connections == 2
    assert len(raw.requests) == 3  # sent, lost with the closing connection, sent again


async def test_a_broken_answer_on_a_reused_connection_is_not_retried(raw_server: Any, pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await raw.read_request(reader)
        writer.write(OK)
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal")  # then the connection dies

    raw = await raw_server(script)
    assert await read_all(pool, raw.origin) == (200, b"ok")
    answer = await pool.request(raw.origin, "GET", head(), b"")
    with pytest.raises(UpstreamFailed):
        await rest_of(answer)
    answer.release()
    assert raw.connections == 1  # the upstream had started answering: no second attempt


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", b"until the end"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal", b"final"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
    ids=["until-eof", "chunked", "interim-100", "no-content"],
)
async def test_answer_framings(raw_server: Any, pool: UpstreamPool, answer: bytes, body: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await raw.read_request(reader)
        writer.write(answer)
        await writer.drain()
        if b"Connection: close" not in answer:
            await reader.read()

    raw = await raw_server(script)
    status, received = await read_all(pool, raw.origin)
    assert status in (200, 204)
    assert received == body


async def test_a_head_answer_has_no_body_even_with_a_length(raw_server: Any, pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while True:
            await raw.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")

    raw = await raw_server(script)
    assert await asyncio.wait_for(read_all(pool, raw.origin, "HEAD"), 2) == (200, b"")
    assert await asyncio.wait_for(read_all(pool, raw.origin, "HEAD"), 2) == (200, b"")


async def test_malformed_answers_fail(raw_server: Any, pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok")
        await reader.read()

    raw = await raw_server(script)
    with pytest.raises(UpstreamFailed):
        await read_all(pool, raw.origin)


async def test_a_refused_connection_fails_and_a_silent_upstream_times_out(raw_server: Any) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await reader.read()

    raw = await raw_server(silent)
    closed = await raw_server(silent)
    refused = closed.origin
    assert closed.server is not None
    closed.server.close()
    await closed.server.wait_closed()
    upstream = UpstreamPool(connect_timeout=1, read_timeout=0.3)
    try:
        with pytest.raises(UpstreamFailed) as failed:
            await upstream.request(refused, "GET", head(), b"")
        assert not isinstance(failed.value, UpstreamTimeout)
        started = asyncio.get_running_loop().time()
        with pytest.raises(UpstreamTimeout):
            await upstream.request(raw.origin, "GET", head(), b"")
        assert 0.25 < asyncio.get_running_loop().time() - started < 2
    finally:
        await upstream.close()


async def test_a_body_that_stalls_times_out_between_reads(raw_server: Any) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstart")
        await reader.read()

    raw = await raw_server(script)
    upstream = UpstreamPool(connect_timeout=1, read_timeout=0.3)
    try:
        answer = await upstream.request(raw.origin, "GET", head(), b"")
        assert await answer.read() == b"start"
        with pytest.raises(UpstreamTimeout):
            await answer.read()
        answer.release()
    finally:
        await upstream.close()


async def test_a_slow_reader_pauses_the_upstream(raw_server: Any, pool: UpstreamPool) -> None:
    total = 8 * 1024 * 1024

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await raw.read_request(reader)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
        for _ in range(total // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()

    raw = await raw_server(script)
    answer = await pool.request(raw.origin, "GET", head(), b"")
    await asyncio.sleep(0.5)  # nobody reads: the client stops reading from the socket
    first = await answer.read()
    assert 0 < len(first) <= _HIGH_WATER + 256 * 1024  # bounded by the high-water mark plus one socket read
    received = len(first)
    while chunk := await answer.read():
        received += len(chunk)
    answer.release()
    assert received == total


async def test_compressed_answers_are_inflated_only_when_asked(raw_server: Any, pool: UpstreamPool) -> None:
    text = b'{"answer": "plain text"}' * 50
    bodies = {"gzip": gzip.compress(text), "deflate": zlib.compress(text)}
    raw_deflate = zlib.compressobj(wbits=-15)
    bodies["raw-deflate"] = raw_deflate.compress(text) + raw_deflate.flush()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while True:
            request = await raw.read_request(reader)
            kind = request.split(b" ")[1].decode().strip("/")
            coding = "deflate" if kind == "raw-deflate" else kind
            body = bodies.get(kind, b"brotli bytes")
            writer.write(
                f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
            )

    raw = await raw_server(script)
    for kind, body in bodies.items():
        answer = await pool.request(raw.origin, "GET", head(f"/{kind}"), b"", decode=True)
        assert await rest_of(answer) == text, kind
        answer.release()
        answer = await pool.request(raw.origin, "GET", head(f"/{kind}"), b"")
        assert await rest_of(answer) == body, kind
        answer.release()
    with pytest.raises(UndecodableAnswer):
        await pool.request(raw.origin, "GET", head("/br"), b"", decode=True)


# --- through the gateway ---


async def test_an_answer_the_gateway_cannot_inflate_is_refused_when_it_must_be_read(
    aiohttp_server: Any, make_stack: StackFactory
) -> None:
    async def handler(request: web.Request) -> web.Response:
        body = b"\x8b\x00 not json"
        return web.Response(body=body, headers={"Content-Type": "application/json", "Content-Encoding": "br"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = await aiohttp_server(app)
    stack = await make_stack(upstream=str(server.make_url("")))
    await stack.push({"pattern": "forbidden", "applies_to": "output"})
    response = await stack.gateway.post("/v1/chat/completions", json=chat("hello"))
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_encoding_unsupported"


async def test_the_upstream_is_asked_only_for_codings_the_gateway_can_inflate(stack: Any) -> None:
    await stack.push({"pattern": "forbidden", "applies_to": "output"})
    response = await stack.gateway.get("/plain", headers={"Accept-Encoding": "br, gzip;q=0.9, zstd"})
    names = {name.lower(): value for name, value in (await response.json())["headers"]}
    assert names["accept-encoding"] == "gzip;q=0.9"


async def test_expect_and_a_callers_request_id_are_not_forwarded(stack: Any) -> None:
    response = await stack.gateway.get(
        "/plain", headers={"Expect": "100-continue", "X-Containment-Request-Id": "forged"}
    )
    echoed = [(name.lower(), value) for name, value in (await response.json())["headers"]]
    assert not any(name == "expect" for name, _ in echoed)
    ids = [value for name, value in echoed if name == "x-containment-request-id"]
    assert ids == [response.headers["X-Containment-Request-Id"]]


async def test_a_compressed_answer_arriving_header_first_is_read_whole(raw_server: Any, pool: UpstreamPool) -> None:
    text = b'{"answer": "all of it"}' * 20
    body = gzip.compress(text)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (body[:10], body[10:]):  # the gzip header alone inflates to nothing
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await reader.read()

    raw = await raw_server(script)
    answer = await pool.request(raw.origin, "GET", head(), b"", decode=True)
    assert await rest_of(answer) == text
    answer.release()


async def test_endless_headers_from_the_upstream_fail(raw_server: Any, pool: UpstreamPool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for index in range(10_000):  # far past the limit, and never ending the head
            writer.write(f"X-Filler-{index}: {'y' * 64}\r\n".encode())
            await writer.drain()
        await reader.read()

    raw = await raw_server(script)
    with pytest.raises(UpstreamFailed, match="malformed"):
        await asyncio.wait_for(pool.request(raw.origin, "GET", head(), b""), 5)


@pytest.fixture
def certificate(tmp_path: Any) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1: (cert, key) paths."""
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


async def test_an_https_upstream_is_verified_and_spoken_to_over_tls(certificate: tuple[str, str]) -> None:
    import ssl

    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(OK)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    origin = Origin.parse(f"https://127.0.0.1:{port}")
    assert origin.tls and origin.host_header == f"127.0.0.1:{port}"
    trusting = ssl.create_default_context(cafile=cert)
    upstream = UpstreamPool(connect_timeout=2, read_timeout=2, ssl_context=trusting)
    untrusting = UpstreamPool(connect_timeout=2, read_timeout=2)  # the system's CAs do not know this cert
    try:
        assert await read_all(upstream, origin) == (200, b"ok")
        with pytest.raises(UpstreamFailed):
            await untrusting.request(origin, "GET", head(), b"")
    finally:
        await upstream.close()
        await untrusting.close()
        server.close()


# --- one slow origin must not starve the others (issue 16, item 7) ---

HELD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n"


async def held_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
    """Answers a head and the start of a stream, then holds the connection for as long as it is open."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(HELD)
    await reader.read()


async def test_each_origin_has_its_own_connections_and_a_bounded_wait(raw_server: Any) -> None:
    slow = await raw_server(held_open)

    async def quick(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while True:
            await fast.read_request(reader)
            writer.write(OK)

    fast = await raw_server(quick)
    upstream = UpstreamPool(connect_timeout=1, read_timeout=5, limit=3, queue_timeout=0.2)
    try:
        held = [await upstream.request(slow.origin, "GET", head(), b"") for _ in range(3)]
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(1):  # another origin does not wait behind the slow one
            assert await read_all(upstream, fast.origin) == (200, b"ok")
        assert loop.time() - started < 0.2
        started = loop.time()
        with pytest.raises(UpstreamBusy):  # the slow origin's own queue: a bounded wait
            await upstream.request(slow.origin, "GET", head(), b"")
        assert 0.15 < loop.time() - started < 1
        held.pop().close()  # a connection comes free: the next request gets it
        waiting = asyncio.ensure_future(upstream.request(slow.origin, "GET", head(), b""))
        held.append(await asyncio.wait_for(waiting, 1))
        for answer in held:
            answer.close()
    finally:
        await upstream.close()


async def test_a_busy_origin_answers_503_upstream_busy_and_other_routes_still_flow(
    raw_server: Any, upstream_server: Any, tmp_path: Any
) -> None:
    slow = await raw_server(held_open)
    settings = Settings(
        upstream=str(upstream_server.make_url("")),
        routes=[{"name": "slow", "path_prefix": "/slow/", "upstream": f"http://127.0.0.1:{slow.origin.port}"}],
        state_dir=tmp_path,
    )
    metrics = GatewayMetrics(CollectorRegistry())
    sink = FileSampleSink(tmp_path / "samples", max_count=100, max_age=timedelta(days=1))
    await sink.open()
    telemetry = Telemetry(
        sink=sink,
        hits=FileHits(tmp_path / "hits.json"),
        detector=AnomalyDetector(),
        metrics=metrics,
        sample_rate=0.0,
        route_rates={},
        hmac_secret=b"test",
    )
    gateway = await start_gateway(
        settings,
        holder=SnapshotHolder(metrics),
        metrics=metrics,
        telemetry=telemetry,
        upstream_connections_per_origin=2,
        upstream_queue_seconds=0.2,
    )
    try:
        held = [await gateway.post("/slow/v1/chat/completions", json=chat("x", stream=True)) for _ in range(2)]
        assert all(response.status == 200 for response in held)
        started = time.monotonic()
        busy = await gateway.post("/slow/v1/chat/completions", json=chat("x", stream=True))
        assert busy.status == 503
        assert (await busy.json())["error"]["code"] == "upstream_busy"
        assert busy.headers["X-Containment-Request-Id"]
        assert time.monotonic() - started < 1.5
        started = time.monotonic()
        other = await gateway.post("/v1/chat/completions", json=chat("hello"))
        assert other.status == 200
        assert time.monotonic() - started < 0.5
        for response in held:
            response.close()
    finally:
        await gateway.close()
        await sink.close()
