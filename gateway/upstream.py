"""A lean HTTP/1.1 client for the upstream hop: pooled keep-alive connections, llhttp parsing (httptools).

The gateway makes exactly one kind of client request — a buffered body out, an answer streamed back —
so it does not need a general client. aiohttp's ClientSession cost about 60 % of the gateway's CPU per
proxied request (docs/performance.md); this one writes the request in one `transport.write`, parses the
answer with llhttp as bytes arrive, and hands the body to the relay without a copy.

Behaviour:
- Connections are kept per origin and reused most-recently-released first; one idle longer than
  `keepalive_seconds` is closed rather than reused (the upstream may be closing it at that moment).
- A request on a *reused* connection that dies before any byte of the answer arrives is retried once on
  a new connection: that is the keep-alive race (the upstream closed an idle connection as the request
  was sent), and the request did not reach a handler that answered.
- `connect_timeout` bounds opening a connection; `read_timeout` bounds each wait for answer bytes.
- Each origin has its own limit of connections in use (`limit`, per origin): slow answers from one
  upstream never hold up requests to another. A request that finds its origin's limit reached waits at
  most `queue_timeout` seconds for a connection, then fails with UpstreamBusy (the proxy answers 503).
- `Answer.interrupt()` wakes a relay waiting for answer bytes (ReadInterrupted): the proxy re-reads the
  policy snapshot of a running stream when it changes, even while the upstream is quiet.
- The answer's body is buffered up to `_HIGH_WATER` bytes; past that, reading from the upstream pauses
  until the relay catches up (a slow client slows the upstream instead of growing memory).
- `decode=True` inflates gzip/deflate bodies (the answer is then relayed plain); other codings fail
  closed, since they could not be inspected.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from dataclasses import dataclass
from typing import cast

import httptools
from multidict import CIMultiDict
from yarl import URL

_HIGH_WATER = 256 * 1024
MAX_HEAD_BYTES = 64 * 1024  # an upstream's status line and headers, all together
DECODABLE = frozenset({"gzip", "x-gzip", "deflate"})


class UpstreamFailed(Exception):
    """No usable answer: the connection failed, broke off, or the answer could not be parsed."""


class UpstreamTimeout(UpstreamFailed):
    """Connecting took longer than the connect timeout, or no answer bytes came within the read timeout."""


class UpstreamBusy(UpstreamFailed):
    """Every connection this origin may use was busy for the whole queue wait."""


class ReadInterrupted(Exception):
    """A wait for answer bytes was interrupted by `Answer.interrupt()`: nothing is lost, read again."""


class UndecodableAnswer(UpstreamFailed):
    """The answer must be inspected but arrived in a Content-Encoding the gateway cannot inflate."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests for one upstream base URL go, and what is prefixed to their path."""

    host: str
    port: int
    tls: bool
    host_header: str
    path_prefix: str

    @classmethod
    def parse(cls, base_url: str) -> Origin:
        url = URL(base_url)
        assert url.host is not None and url.port is not None, base_url
        tls = url.scheme == "https"
        default = 443 if tls else 80
        host = url.raw_host or url.host
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if url.port == default else f"{shown}:{url.port}"
        return cls(url.host, url.port, tls, host_header, url.raw_path.rstrip("/"))


class _Connection(asyncio.Protocol):
    """One connection to the upstream and the answer currently arriving on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = ""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self.head: asyncio.Future[None] | None = None
        self.complete = False
        self.keep_alive = False
        self.received = False  # any byte of this answer arrived
        self.error: UpstreamFailed | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._wait_started = 0.0
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = 0.0
        self._head_only = False
        self._interrupted = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.received = True
        self._last_read = self.loop.time()
        if self.complete:
            self.close()  # bytes nobody asked for (a HEAD's body, garbage on an idle connection)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamFailed(f"malformed answer from the upstream: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self.head is not None and self.head.done() and self._until_eof():
            self._message_complete()  # an answer without length or chunking ends with the connection
            return
        self._fail(UpstreamFailed("the upstream closed the connection"))

    # --- llhttp callbacks ---

    def on_message_begin(self) -> None:
        if self.complete:
            self.keep_alive = False  # an answer nobody asked for: this connection is not reused

    def on_status(self, reason: bytes) -> None:
        self.reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise UpstreamFailed(f"the upstream's headers exceed {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self.raw_headers = []  # an interim answer (100 Continue, 103 Early Hints): wait for the final one
            self._head_bytes = 0
            return
        self.status = status
        if self.head is not None and not self.head.done():
            self.head.set_result(None)
        if self._head_only:
            self._message_complete(keep_alive=False)  # no body follows; the parser would wait for one

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0 or self.complete:
            return  # the end of an interim answer, or of a HEAD answer already complete
        self._message_complete(keep_alive=self._parser.should_keep_alive())

    # --- the request side ---

    def send(self, data: bytes, *, read_timeout: float, head_only: bool) -> asyncio.Future[None]:
        assert self.transport is not None
        self._reset()
        self._read_timeout = read_timeout
        self._head_only = head_only
        self.head = self.loop.create_future()
        self._last_read = self._wait_started = self.loop.time()
        self._arm()
        self.transport.write(data)
        return self.head

    async def read(self) -> bytes:
        """Everything of the body that has arrived (waiting for some); b"" at its end."""
        while not self._chunks:
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            self._waiter = self.loop.create_future()
            self._wait_started = self.loop.time()
            if self._timer is None:
                self._arm()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if self._interrupted:
                self._interrupted = False
                if not self._chunks and self.error is None and not self.complete:
                    raise ReadInterrupted
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()
        return data

    def interrupt(self) -> None:
        """Wake a read waiting for bytes: it raises ReadInterrupted (nothing of the answer is lost)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._interrupted = True
            waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    # --- internals ---

    def _until_eof(self) -> bool:
        names = {name.lower() for name, _ in self.raw_headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _message_complete(self, keep_alive: bool = False) -> None:
        self.complete = True
        self.keep_alive = keep_alive
        self._disarm()
        self._wake()

    def _fail(self, error: UpstreamFailed) -> None:
        if self.error is not None or self.complete:
            return
        self.error = error
        self._disarm()
        if self.head is not None and not self.head.done():
            self.head.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _arm(self) -> None:
        self._timer = self.loop.call_at(self.loop.time() + self._read_timeout, self._check_timeout)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_timeout(self) -> None:
        """One timer per answer, re-armed lazily: it fires only when nothing arrived for a whole
        `read_timeout` while someone was waiting (before the head, or for more of the body)."""
        self._timer = None
        waiting = self.head is not None and not self.head.done() or self._waiter is not None
        if not waiting or self.complete or self.error is not None:
            return
        quiet_since = max(self._last_read, self._wait_started)
        remaining = quiet_since + self._read_timeout - self.loop.time()
        if remaining > 0:
            self._timer = self.loop.call_at(self.loop.time() + remaining, self._check_timeout)
            return
        self._fail(UpstreamTimeout(f"no answer bytes within {self._read_timeout:g} s"))
        self.close()


class Answer:
    """The upstream's answer: status and headers at once, the body as it arrives."""

    def __init__(self, pool: UpstreamPool, connection: _Connection, *, decode: bool) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self.status = connection.status
        self.reason = connection.reason
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in connection.raw_headers:
            headers.add(name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
        self.headers = headers
        self._inflate: zlib._Decompress | None = None
        self._inflate_raw = False
        coding = headers.get("Content-Encoding", "").strip().lower() if decode else ""
        if coding in ("", "identity"):
            pass
        elif coding in DECODABLE:
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 32 if coding != "deflate" else zlib.MAX_WBITS)
            self._inflate_raw = coding == "deflate"
        else:
            raise UndecodableAnswer(f"the upstream answered with Content-Encoding {coding!r}")

    async def read(self) -> bytes:
        """The next part of the body (whatever has arrived), b"" at its end; raises UpstreamFailed
        (or UpstreamTimeout) if the answer breaks off."""
        connection = self._connection
        if connection is None:
            return b""
        while True:
            data = await connection.read()
            if self._inflate is None:
                return data
            try:
                if not data:
                    return self._inflate.flush()
                if inflated := self._inflate.decompress(data):
                    return inflated  # else only a header arrived so far: read on
            except zlib.error:
                if not self._inflate_raw:
                    raise UpstreamFailed("the upstream's compressed answer is corrupt") from None
                self._inflate_raw = False  # "deflate" is sometimes sent without the zlib header
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                if inflated := self._inflate.decompress(data):
                    return inflated

    def interrupt(self) -> None:
        """Wake a `read()` that waits for bytes: it raises ReadInterrupted; the next read goes on."""
        if self._connection is not None:
            self._connection.interrupt()

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if it was read to the end."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.put(connection)

    def close(self) -> None:
        """Abandon the answer: its connection is closed (the upstream stops generating)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            self._pool.put(connection)


class UpstreamPool:
    """Keep-alive connections per origin, at most `limit` in use at once per origin; a request waits at
    most `queue_timeout` seconds for one of its origin's connections."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        limit: int = 1024,
        queue_timeout: float = 2.0,
        keepalive_seconds: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keepalive = keepalive_seconds
        self._limit = limit
        self._queue_timeout = queue_timeout
        self._slots: dict[Origin, asyncio.Semaphore] = {}
        self._idle: dict[Origin, collections.deque[_Connection]] = {}
        self._ssl = ssl_context
        self._closed = False

    async def request(self, origin: Origin, method: str, head: bytes, body: bytes, *, decode: bool = False) -> Answer:
        """Send `head` (the request line and headers, ending in a blank line) and `body`; return once the
        answer's status and headers are in. Raises UpstreamBusy, UpstreamTimeout or UpstreamFailed."""
        slots = self._slots.get(origin)
        if slots is None:
            slots = self._slots[origin] = asyncio.Semaphore(self._limit)
        if slots.locked():  # every connection of this origin is in use: wait, but not for ever
            try:
                async with asyncio.timeout(self._queue_timeout):
                    await slots.acquire()
            except TimeoutError:
                raise UpstreamBusy(f"all {self._limit} connections to this upstream stayed busy") from None
        else:
            await slots.acquire()
        try:
            return await self._exchange(origin, method, head + body if body else head, decode)
        except BaseException:
            slots.release()
            raise

    async def _exchange(self, origin: Origin, method: str, data: bytes, decode: bool) -> Answer:
        loop = asyncio.get_running_loop()
        head_only = method == "HEAD"
        connection = self._take_idle(origin, loop.time())
        if connection is not None:
            try:
                return await self._send(connection, data, head_only, decode)
            except UpstreamTimeout:
                raise
            except UpstreamFailed:
                if connection.received:
                    raise  # the upstream answered something: not the keep-alive race
        return await self._send(await self._connect(loop, origin), data, head_only, decode)

    async def _send(self, connection: _Connection, data: bytes, head_only: bool, decode: bool) -> Answer:
        try:
            await connection.send(data, read_timeout=self._read_timeout, head_only=head_only)
            return Answer(self, connection, decode=decode)
        except BaseException:
            connection.close()
            raise

    async def _connect(self, loop: asyncio.AbstractEventLoop, origin: Origin) -> _Connection:
        context = None
        if origin.tls:
            if self._ssl is None:  # the system's CAs (or SSL_CERT_FILE / SSL_CERT_DIR), loaded once
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, origin),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
        except TimeoutError:
            raise UpstreamTimeout(f"connecting took longer than {self._connect_timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamFailed(f"could not connect: {exc.__class__.__name__}") from None
        return connection

    def _take_idle(self, origin: Origin, now: float) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            if now - connection.idle_since > self._keepalive:
                connection.close()
                continue
            return connection
        return None

    def put(self, connection: _Connection) -> None:
        self._slots[connection.origin].release()
        if self._closed or not connection.reusable():
            connection.close()
            return
        connection.idle_since = connection.loop.time()
        idle = self._idle.setdefault(connection.origin, collections.deque())
        idle.append(connection)
        while idle and (idle[0].closed or connection.idle_since - idle[0].idle_since > self._keepalive):
            idle.popleft().close()  # the oldest ones, past their keep-alive

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        await asyncio.sleep(0)  # let the transports finish closing
