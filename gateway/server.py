"""The data plane's HTTP/1.1 server: requests parsed by llhttp (httptools), answers written straight to
the transport.

The data plane serves one catch-all proxy handler and three fixed endpoints, so it needs little of a web
framework; aiohttp's server machinery (request and response objects, router, payload streams, writer)
cost about 35 µs of CPU per proxied request, a fifth of the gateway's total (docs/performance.md). The
admin API, which needs a framework's routing and validation, stays on aiohttp.

Behaviour:
- HTTP/1.1 keep-alive and pipelining (answers in request order); HTTP/1.0, with keep-alive when the client
  asks for it. Flow control as uvicorn's: reading pauses as soon as a request's head arrives while another
  is in progress, and resumes when that one is answered. A connection so holds at most one request body
  (bounded by `max_body_bytes`) plus what one socket read brought (256 KiB) in pipelined requests; more
  than `_MAX_QUEUED` requests in one read are refused (503) after the earlier ones are answered. While
  reading is paused (a pipelining client only), a client that leaves is noticed when its answer is written.
- The request target's path is put in normal form (gateway/paths.py: merged slashes, dot segments
  resolved, unreserved escapes decoded) before anything reads it, and the upstream receives that form;
  a path that cannot be normalised safely (`x%2F..%2F`, `%5C`, a backslash) is refused with 400.
- Parsing is llhttp's strict mode: Content-Length with Transfer-Encoding, duplicate Content-Length,
  obs-fold, bare CR or LF line ends and the like are refused with 400 before any handler runs. Limits:
  an 8 KiB request target (414), an 8 KiB header line, 128 headers or 64 KiB of head in all (431: the
  whole head is counted, however it arrives).
  Every refusal made here has the contract's JSON error shape, and the connection is then closed.
- A handler receives the request once its head is parsed and awaits the body, which is bounded by
  `max_body_bytes` as it arrives; `Expect: 100-continue` is answered when the handler first waits for it.
- `idle_timeout` closes a connection that has no request in progress, including one whose request head
  never completes (slowloris). A client that leaves cancels its request's handler.
- Answers with a Content-Length are written as such; others are chunked (HTTP/1.1) or end with the
  connection (HTTP/1.0). A head waits to go out with the first body bytes (one write for a small answer).
- A write that finds the connection's buffer above its high-water mark (64 KiB, and at most 64 KiB unsent
  in the kernel: TCP_NOTSENT_LOWAT) waits for it to drain for at most `write_timeout`; a client that stops
  reading for that long is dropped. An answer written whole waits the same way before the next request,
  and a close that cannot flush within `write_timeout` is cut, so a client that stops reading pins at
  most about 128 KiB, and only until `write_timeout`.
- At most `max_connections` connections at once (default: half the open-file limit, less 128); one over
  it is answered 503 (`too_many_connections`) at once and closed.
- A connection the server closes (after `Connection: close`, HTTP/1.0, a body it did not read, a
  refusal) gets a lingering half-close, so that a client still sending reads the answer, not a reset.
- `close(grace)` stops accepting, closes idle connections, lets requests in progress finish for up to
  `grace` seconds, then cuts the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import itertools
import logging
import os
import resource
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, ClassVar, cast
from urllib.parse import unquote

import httptools
import orjson
from multidict import CIMultiDict

from gateway.paths import BadPath, is_normal_candidate, normal_path

log = logging.getLogger(__name__)

MAX_TARGET_BYTES = 8 * 1024
MAX_FIELD_BYTES = 8 * 1024
MAX_HEADERS = 128
MAX_HEAD_BYTES = 64 * 1024
_MAX_QUEUED = 16  # requests queued on one connection (all from one socket read: reading pauses at the 2nd)
_HIGH_WATER = 64 * 1024  # the transport's write buffer: writers wait above this
_LOW_WATER = 16 * 1024
_NOTSENT_LOWAT = 64 * 1024  # unsent bytes the kernel takes before the socket stops being writable
_LINGER_SECONDS = 1.0
_TCP_NOTSENT_LOWAT: int | None = getattr(socket, "TCP_NOTSENT_LOWAT", None)  # Linux and macOS
_BODILESS_STATUS = frozenset({204, 304})


class BodyTooLarge(Exception):
    """The request body is over the server's limit."""


class MalformedBody(Exception):
    """The request body's framing was malformed (bad chunk sizes, say); nothing more can be read."""


Headers = list[tuple[str, str]] | Mapping[str, str]


@dataclass(slots=True)
class Response:
    """A complete answer, written in one call with its Content-Length. `dated`: the headers include a
    Date already (a proxied answer's own); else the server adds one."""

    status: int
    headers: Headers
    body: bytes = b""
    reason: str | None = None
    dated: bool = False


@dataclass(slots=True)
class _Refused:
    """A request refused by the server itself (malformed, over a limit); the connection closes after it."""

    response: Response
    keep_alive: bool = False
    close_after: bool = True
    method: str = "GET"
    version: str = "1.1"


_PREFIX = os.urandom(4).hex()
_SEQUENCE = itertools.count(int.from_bytes(os.urandom(8), "big"))


def new_request_id() -> str:
    """24 hex characters, unique per process and across processes (random prefix), without a syscall."""
    return f"{_PREFIX}{next(_SEQUENCE) & 0xFFFFFFFFFFFFFFFF:016x}"


def error_response(
    status: int, code: str, message: str, *, kind: str = "invalid_request_error", action: str = "invalid"
) -> Response:
    """The contract's error shape, for refusals made before a request reaches the gateway's handler."""
    request_id = new_request_id()
    error = {"type": kind, "code": code, "message": message, "request_id": request_id}
    headers = [("Content-Type", "application/json"), ("X-Containment-Request-Id", request_id)]
    headers.append(("X-Containment-Action", action))
    return Response(status, headers, orjson.dumps({"error": error}))


def _internal_error() -> Response:
    return error_response(
        500, "internal_error", "The gateway failed on this request.", kind="server_error", action="fault"
    )


class _Date:
    """The Date header's value, formatted at most once a second."""

    second: ClassVar[int] = -1
    value: ClassVar[str] = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True)
        return cls.value


_REASONS = {status.value: status.phrase for status in http.HTTPStatus}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


class HttpRequest:
    """One request: its head as parsed, and its body as it arrives."""

    __slots__ = (
        "method",
        "raw_path",
        "path",
        "version",
        "headers",
        "remote",
        "keep_alive",
        "close_after",
        "content_length",
        "_connection",
        "_chunks",
        "_size",
        "_limit",
        "_complete",
        "_error",
        "_waiter",
        "_expect_continue",
        "answered",
        "finished",
    )

    def __init__(
        self,
        connection: _Connection,
        method: str,
        raw_path: str,
        path: str,
        version: str,
        headers: CIMultiDict[str],
        keep_alive: bool,
        limit: int,
    ) -> None:
        self.method = method
        self.raw_path = raw_path  # the target as sent (path and query; an absolute-form target's path part)
        self.path = path  # percent-decoded, without the query
        self.version = version
        self.headers = headers
        self.remote = connection.remote
        self.keep_alive = keep_alive
        self.close_after = False
        length = headers.get("Content-Length")
        self.content_length = int(length) if length is not None else None  # llhttp checked it is a number
        self._connection = connection
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._complete = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._expect_continue = version == "1.1" and headers.get("Expect", "").lower() == "100-continue"
        self.answered = False  # a head was prepared: the handler answered (or began to)
        self.finished = False  # the whole answer went out

    @property
    def body_complete(self) -> bool:
        return self._complete

    @property
    def buffered_bytes(self) -> int:
        return self._size if self._error is None else 0

    async def body(self) -> bytes:
        """The whole body (raises BodyTooLarge past the limit, MalformedBody on bad framing, and
        ConnectionResetError if the client leaves first)."""
        while not self._complete and self._error is None:
            if self._expect_continue:
                self._expect_continue = False
                self._connection.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._waiter = self._connection.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._error is not None:
            raise self._error
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def stream(
        self, status: int, headers: Headers, reason: str | None = None, *, length: bool = False, dated: bool = False
    ) -> StreamedAnswer:
        """Start an answer whose body is written piece by piece. `length`: the headers carry its
        Content-Length; `dated`: they carry a Date."""
        return StreamedAnswer(self._connection, self, status, headers, reason, length=length, dated=dated)

    # --- fed by the connection ---

    def _feed(self, data: bytes) -> None:
        if self._error is not None:
            return  # over the limit: the rest is read and dropped
        self._size += len(data)
        if self._size > self._limit:
            self._chunks = []
            self._fail(BodyTooLarge())
            return
        self._chunks.append(data)

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


Handler = Callable[[HttpRequest], Awaitable["Response | None"]]


class StreamedAnswer:
    """An answer whose body is written as it comes: with the upstream's Content-Length when it has one,
    else chunked (HTTP/1.1) or delimited by closing the connection (HTTP/1.0)."""

    __slots__ = ("_connection", "_request", "_head", "_chunked", "_bodiless")

    def __init__(
        self,
        connection: _Connection,
        request: HttpRequest,
        status: int,
        headers: Headers,
        reason: str | None,
        *,
        length: bool,
        dated: bool,
    ) -> None:
        self._connection = connection
        self._request = request
        request.answered = True
        self._bodiless = request.method == "HEAD" or status in _BODILESS_STATUS or status < 200
        self._chunked = False
        extra: list[tuple[str, str]] = []
        if isinstance(headers, Mapping):
            length, dated = length or "Content-Length" in headers, dated or "Date" in headers
        if not self._bodiless and not length:
            if request.version == "1.1":
                self._chunked = True
                extra.append(("Transfer-Encoding", "chunked"))
            else:
                request.close_after = True  # the body ends when the connection does
        self._head: bytes | None = connection.head(request, status, reason, headers, extra, dated=dated)

    async def write(self, data: bytes) -> None:
        """Send `data`; waits only when the client is behind (raises ConnectionResetError if it left or
        stopped reading for the write timeout)."""
        if not data or self._bodiless:
            return
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        if self._head is not None:
            data, self._head = self._head + data, None
        connection = self._connection
        connection.write(data)
        if connection.writing_paused:
            await connection.drain()

    async def end(self) -> None:
        """The body is complete."""
        tail = b"0\r\n\r\n" if self._chunked else b""
        if self._head is not None:
            tail, self._head = self._head + tail, None
        if tail:
            self._connection.write(tail)
        self._request.finished = True


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as bytes arrive and answers them in order."""

    def __init__(self, server: DataPlaneServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[HttpRequest | _Refused] = deque()
        self._incoming: HttpRequest | None = None
        self._task: asyncio.Task[None] | None = None
        self.writing_paused = False
        self._drain: asyncio.Future[None] | None = None
        self.closed = False
        self._stopped_reading = False  # a refusal, an upgrade or a lingering close: further bytes are dropped
        self._reading_paused = False
        self._idle_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = False
        self._head_bytes = 0  # of the head being parsed: its target and complete header lines
        self._head_reads = 0  # whole reads that found a head incomplete and left it so
        self._messages = 0  # heads begun on this connection
        self._target = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._refusal: Response | None = None

    @property
    def buffered_bytes(self) -> int:
        """Request body bytes this connection holds (answered ones excluded)."""
        return sum(item.buffered_bytes for item in self._queue if isinstance(item, HttpRequest))

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) and peer else ""
        self.transport.set_write_buffer_limits(high=_HIGH_WATER, low=_LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None and _TCP_NOTSENT_LOWAT is not None:
            with contextlib.suppress(OSError):  # not a TCP socket, or an OS without it
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)
        if len(self.server.connections) >= self.server.max_connections:
            self._over_capacity()
            return
        self.server.connections.add(self)
        self._idle_since = self.loop.time()
        self._timer = self.loop.call_later(self.server.idle_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        gone = ConnectionResetError("the client closed the connection")
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(gone)
        for item in self._queue:
            if isinstance(item, HttpRequest) and not item.body_complete:
                item._fail(gone)
        if self._task is not None:
            self._task.cancel()  # nobody is waiting for the answer: stop working on it

    def eof_received(self) -> bool:
        # The client closed its side. Like nginx and uvicorn, the gateway takes that as the client having
        # left: the transport closes, and a request in progress is cancelled (a model should not keep
        # generating for nobody). It is also what a lingering close waits for.
        return False

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._stopped_reading:
            return
        in_head, messages = self._in_head, self._messages
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgraded()
            return
        except httptools.HttpParserError as exc:
            refusal = self._refusal
            if refusal is None:
                refusal = error_response(400, "invalid_request", f"Malformed HTTP request: {exc}.")
            self._refuse(refusal)
            return
        if in_head and self._in_head and messages == self._messages:
            # The same head was incomplete before and after this read, so all of it was head: a header
            # line still being received counts too (llhttp reports a line only once it is complete).
            self._head_reads += len(data)
            if self._head_reads > MAX_HEAD_BYTES:
                self._refuse(error_response(431, "request_header_too_large", "The request's headers are too large."))

    # --- llhttp callbacks ---

    def on_message_begin(self) -> None:
        self._in_head = True
        self._messages += 1
        self._head_bytes = 0
        self._head_reads = 0
        self._target = b""
        self._headers = []

    def on_url(self, target: bytes) -> None:
        self._target += target
        self._head_bytes += len(target)
        if len(self._target) > MAX_TARGET_BYTES:
            self._refusal = error_response(414, "request_target_too_long", "The request target is too long.")
            raise ValueError("request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._head_bytes += size + 4  # `: ` and CRLF
        if size > MAX_FIELD_BYTES or len(self._headers) >= MAX_HEADERS or self._head_bytes > MAX_HEAD_BYTES:
            self._refusal = error_response(431, "request_header_too_large", "The request's headers are too large.")
            raise ValueError("header too large")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        method = parser.get_method().decode("ascii")
        if method == "CONNECT":
            self._refusal = error_response(405, "method_not_allowed", "CONNECT is not supported.")
            raise ValueError("CONNECT")
        try:
            url: Any = httptools.parse_url(self._target)  # its stub says bytes where fields may be None
        except httptools.HttpParserInvalidURLError:
            self._refusal = error_response(400, "invalid_request", "Malformed request target.")
            raise
        raw_path = (url.path or b"/").decode("utf-8", "surrogateescape")
        if is_normal_candidate(raw_path):
            try:
                raw_path = normal_path(raw_path)
            except BadPath as bad:
                self._refusal = error_response(400, "invalid_path", f"The request path has {bad}.")
                raise
        path = unquote(raw_path, errors="surrogateescape") if "%" in raw_path else raw_path
        if url.query is not None:
            raw_path = f"{raw_path}?{url.query.decode('utf-8', 'surrogateescape')}"
        headers: CIMultiDict[str] = CIMultiDict(
            [(name.decode("latin-1"), value.decode("utf-8", "surrogateescape")) for name, value in self._headers]
        )
        if "Transfer-Encoding" in headers and [v.strip().lower() for v in headers.getall("Transfer-Encoding")] != [
            "chunked"
        ]:
            # llhttp takes e.g. `gzip, chunked`; a transfer-coded body could not be scanned (RFC 9112 §6.1: 501)
            self._refusal = error_response(
                501, "unsupported_transfer_encoding", "Only the chunked transfer coding is supported."
            )
            raise ValueError("transfer coding")
        request = HttpRequest(
            self,
            method,
            raw_path,
            path,
            parser.get_http_version(),
            headers,
            parser.should_keep_alive(),
            self.server.max_body_bytes,
        )
        self._enqueue(request)  # may refuse it (too many pipelined): then it was never incoming
        self._incoming = request

    def on_body(self, body: bytes) -> None:
        if self._incoming is not None:
            self._incoming._feed(body)

    def on_message_complete(self) -> None:
        if self._incoming is not None:
            self._incoming._finish()
            self._incoming = None

    # --- serving ---

    def _enqueue(self, item: HttpRequest | _Refused) -> None:
        if isinstance(item, HttpRequest) and len(self._queue) >= _MAX_QUEUED:
            # llhttp parses a whole read at once: a read full of tiny pipelined requests stops here
            self._refusal = error_response(
                503,
                "too_many_pipelined_requests",
                f"More than {_MAX_QUEUED} pipelined requests; send the rest again.",
                kind="service_unavailable",
                action="overloaded",
            )
            raise ValueError("too many pipelined requests")
        self._queue.append(item)
        if len(self._queue) > 1:  # a request ahead of its turn: read no more until its turn comes
            self._pause_reading()
        if self._task is None:
            self._task = self.loop.create_task(self._serve())

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def _over_capacity(self) -> None:
        """A connection over the server's cap: answered 503 at once, then closed (with the lingering
        half-close, so that a request the client sends meanwhile does not turn the answer into a reset)."""
        self.server.refused_connections += 1
        response = error_response(
            503,
            "too_many_connections",
            "The gateway is at its connection limit; retry shortly.",
            kind="service_unavailable",
            action="overloaded",
        )
        if isinstance(response.headers, list):
            response.headers.append(("Retry-After", "1"))
        self._stopped_reading = True
        refused = _Refused(response)
        with contextlib.suppress(ConnectionResetError):
            self.write(self.complete(refused, response))
        self._finish()

    def _refuse(self, response: Response) -> None:
        """Refuse at the protocol level: no more requests are read from this connection."""
        self._stopped_reading = True
        self._refusal = None
        if self._incoming is not None:  # its body's framing broke: its handler sees a malformed body
            self._incoming._fail(MalformedBody(response.body.decode()))
            self._incoming.close_after = True
            self._incoming = None
            return
        self._enqueue(_Refused(response))

    def _upgraded(self) -> None:
        """An Upgrade request (the protocol switch is declined, RFC 9110 §7.8): the request is answered
        as a plain one and the connection closes after it, since the bytes after it are not HTTP/1.1."""
        self._stopped_reading = True
        for item in self._queue:
            if isinstance(item, HttpRequest):
                item.close_after = True
        if not self._queue:
            self.close()

    async def _serve(self) -> None:
        try:
            while self._queue and not self.closed:
                item = self._queue[0]
                if isinstance(item, _Refused):
                    self.write(self.complete(item, item.response))
                    self._queue.popleft()
                    self._finish()  # the client may still be sending what was refused
                    return
                await self._answer(item)
                self._queue.popleft()
                if self.writing_paused:  # an answer written whole to a client that is behind
                    await self.drain()
                if not item.finished:
                    self.abort()  # an answer cut short (the upstream broke off): the client must see it end early
                    return
                if item.close_after or not item.keep_alive or not item.body_complete or self.server.closing:
                    self._finish()
                    return
                self._idle_since = self.loop.time()
                if len(self._queue) <= 1:  # the next request (if any) is now in progress: read its body
                    self._resume_reading()
        except (ConnectionResetError, asyncio.CancelledError):
            self.abort()
        except Exception:  # an answer that could not even be written (say, unencodable headers)
            log.exception("the data-plane server failed on a connection from %s", self.remote)
            self.abort()
        finally:
            self._task = None

    async def _answer(self, request: HttpRequest) -> None:
        try:
            response = await self.server.handler(request)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("the data-plane handler failed on %s %s", request.method, request.path)
            if request.answered:
                return  # part of an answer went out: it can only be cut short
            response = _internal_error()
        if response is None:
            if request.answered:
                return
            log.error("the data-plane handler gave no answer to %s %s", request.method, request.path)
            response = _internal_error()
        elif request.answered:
            log.error("the data-plane handler both streamed and returned an answer to %s", request.path)
            return
        request.answered = True
        self.write(self.complete(request, response))
        request.finished = True

    def _finish(self) -> None:
        """Close after an answer. The client may still be sending (a body we did not read, requests it
        pipelined after a `Connection: close` one): closing a socket with unread bytes resets it, and
        the client may then lose the answer. So: half-close, read and drop what comes, and close when
        the client closes its side or after a short linger."""
        if self.transport is None or self.closed:
            return
        self._stopped_reading = True
        self._resume_reading()  # read and drop: unread bytes at close would reset the connection
        with contextlib.suppress(OSError, RuntimeError):
            if self.transport.can_write_eof():
                self.transport.write_eof()
        self.loop.call_later(min(_LINGER_SECONDS, self.server.idle_timeout), self.close)

    # --- writing ---

    def head(
        self,
        request: HttpRequest | _Refused,
        status: int,
        reason: str | None,
        headers: Headers,
        extra: Iterable[tuple[str, str]] = (),
        *,
        dated: bool = False,
    ) -> bytes:
        if isinstance(headers, Mapping):
            dated = dated or "Date" in headers
            headers = list(headers.items())
        lines = [f"HTTP/1.1 {status} {reason or _reason(status)}\r\n", *[f"{n}: {v}\r\n" for n, v in headers]]
        for name, value in extra:
            lines.append(f"{name}: {value}\r\n")
        if not dated:
            lines.append(f"Date: {_Date.now()}\r\n")
        if (
            request.close_after
            or not request.keep_alive
            or self.server.closing
            or (isinstance(request, HttpRequest) and not request.body_complete)  # the rest will not be read
        ):
            request.close_after = True
            lines.append("Connection: close\r\n")
        elif request.version == "1.0":
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("utf-8", "surrogateescape")

    def complete(self, request: HttpRequest | _Refused, response: Response) -> bytes:
        body = response.body
        status = response.status
        extra = () if status in _BODILESS_STATUS or status < 200 else (("Content-Length", str(len(body))),)
        head = self.head(request, status, response.reason, response.headers, extra, dated=response.dated)
        if request.method == "HEAD" or not extra:
            return head
        return head + body

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        if not self.writing_paused:
            return
        if self.closed:
            raise ConnectionResetError("the client closed the connection")
        self._drain = self.loop.create_future()
        try:
            async with asyncio.timeout(self.server.write_timeout):
                await self._drain
        except TimeoutError:
            self.abort()  # its unread buffer would never drain: drop the connection now
            raise ConnectionResetError("the client stopped reading") from None
        finally:
            self._drain = None

    # --- closing ---

    def _check_idle(self) -> None:
        self._timer = None
        if self.closed:
            return
        timeout = self.server.idle_timeout
        if not self.idle():
            delay = timeout  # a request is in progress: its own timeouts apply
        else:
            delay = self._idle_since + timeout - self.loop.time()
            if delay <= 0:
                self.close()
                return
        self._timer = self.loop.call_later(delay, self._check_idle)

    def idle(self) -> bool:
        return not self._queue and self._task is None

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()  # flushes what is buffered first, if the client reads it
            if self.transport.get_write_buffer_size():  # it may not: then the buffer is not kept for ever
                self.loop.call_later(self.server.write_timeout, self.abort)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


def default_max_connections() -> int:
    """Half the process's open-file limit, less 128: each client connection may hold an upstream one, and
    the admin listener, the store and log files need descriptors too."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 65536
    return max(16, soft // 2 - 128)


class DataPlaneServer:
    """Listens, and hands each parsed request to `handler`, which returns a `Response` or, when it has
    streamed its answer through `request.stream(...)`, None."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int,
        idle_timeout: float = 75.0,
        write_timeout: float = 60.0,
        max_connections: int | None = None,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections if max_connections is not None else default_max_connections()
        self.refused_connections = 0  # connections answered 503 for being over max_connections
        self.connections: set[_Connection] = set()
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self.loop: asyncio.AbstractEventLoop = cast(asyncio.AbstractEventLoop, None)  # set by start()

    async def start(self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024) -> tuple[str, int]:
        """Listen on host:port (port 0: any free port); returns the address bound."""
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_port=reuse_port or None, backlog=backlog
        )
        server: Any = self._server  # uvloop's `sockets` is a list where typeshed says tuple
        bound = server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting; let requests in progress finish for up to `grace` seconds, then cut them."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace
        while True:
            for connection in list(self.connections):
                if connection.idle():
                    connection.close()
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        await asyncio.sleep(0)  # let the transports report connection_lost
