"""Relay a request to its upstream and stream the answer back, headers end to end, body unbuffered.

Running answers follow the policy: a relay re-reads the policy snapshot (one reference) at every chunk
of an event stream, and `poke()` wakes the streams whose upstream is quiet when a new snapshot is in
force. A newly engaged kill switch in the request's scope (unless it lets running streams finish) ends
the stream with the closing events of its own shape; new output rules apply to the rest of the answer
(an inspected stream's scanners keep their context; an uninspected one starts being inspected at its
next event). An answer whose head arrives after such a switch was engaged is refused as the switch says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.context import RequestContext
from gateway.filters.kill_switch import KillSwitchFilter
from gateway.filters.output_scan import OutputInspector, StreamInspector
from gateway.live_stream import MAX_EVENT_TAIL, boundary_end, closing_events, ends_at_boundary, last_event
from gateway.metrics import GatewayMetrics
from gateway.output_formats import is_ndjson
from gateway.policy_watch import SnapshotHolder
from gateway.refusals import ACTION_HEADER, REQUEST_ID_HEADER, refusal_response, reply_response
from gateway.server import HttpRequest, Response, StreamedAnswer
from gateway.upstream import (
    DECODABLE,
    Answer,
    Origin,
    ReadInterrupted,
    UndecodableAnswer,
    UpstreamBusy,
    UpstreamFailed,
    UpstreamPool,
    UpstreamTimeout,
)
from gateway.verdict import Refusal, Reply
from rules.compile import CompiledPolicy
from rules.model import Rule

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Recomputed for the new hop rather than copied. A request's Content-Encoding goes too: the body has
# been inflated for the scan (see gateway.body), so the upstream receives it plain. `Expect` goes because
# the body is already here: the upstream gets it at once.
_REWRITTEN = frozenset({"host", "content-length", "content-encoding", "expect", REQUEST_ID_HEADER.lower()})
# Methods that carry no Content-Length when their body is empty (as HTTP clients do).
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})


# The gateway's own headers are its own: an upstream's are replaced. An inspected answer is relayed
# decompressed, and may change length.
_OWN = frozenset({REQUEST_ID_HEADER.lower(), ACTION_HEADER.lower()})
_PLAIN_DROP = _OWN | {"content-length", "content-encoding"}
OUTPUT_FAULT = Refusal(
    status=503,
    code="containment_unavailable",
    type="service_unavailable",
    message="The answer could not be checked against the containment policy.",
    action="fault",
)


# The names skipped, per (drop, also): a handful of combinations, since filters set fixed header names.
_SKIP: dict[tuple[frozenset[str], tuple[str, ...]], frozenset[str]] = {}


def end_to_end(
    headers: CIMultiDict[str] | CIMultiDictProxy[str], *, drop: frozenset[str], also: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """The headers minus hop-by-hop ones (including any that `Connection` names), those in `drop`
    (lower case) and those named in `also` (any case)."""
    key = (drop, also)
    skip = _SKIP.get(key)
    if skip is None:
        skip = _SKIP[key] = HOP_BY_HOP | drop | {name.lower() for name in also}
    if "Connection" in headers:
        named = {token.strip().lower() for value in headers.getall("Connection") for token in value.split(",")}
        skip = skip | named
    return [(name, value) for name, value in headers.items() if name.lower() not in skip]


def decodable_only(accept_encoding: str) -> str:
    """The codings of an Accept-Encoding that the gateway can inflate for inspection (else identity)."""
    parts = (part.strip() for part in accept_encoding.split(","))
    return ", ".join(part for part in parts if part.split(";")[0].strip().lower() in DECODABLE) or "identity"


def request_head(request: HttpRequest, origin: Origin, request_id: str, body: bytes, *, inspecting: bool) -> bytes:
    """The request line and headers for the upstream hop: the caller's end-to-end headers unchanged,
    Host and Content-Length for the new hop, the request id added, nothing invented."""
    lines = [f"{request.method} {origin.path_prefix}{request.raw_path} HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
    for name, value in end_to_end(request.headers, drop=_REWRITTEN):
        if inspecting and name.lower() == "accept-encoding":
            value = decodable_only(value)  # an answer the gateway must read has to arrive in a coding it can undo
        lines.append(f"{name}: {value}\r\n")
    lines.append(f"{REQUEST_ID_HEADER}: {request_id}\r\n")
    if body or request.method not in _BODILESS:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")  # the bytes the caller sent, as they were decoded


def _sent(response: Response) -> tuple[int, Response]:
    return response.status, response


_TIMED_OUT = (504, "upstream_timeout", "The model endpoint did not answer in time.")


class UpstreamClient:
    """Relays requests through one pool of upstream connections (a limit per origin, a bounded wait for
    one), opened and closed with the app; running streams follow the policy in `holder`."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        holder: SnapshotHolder,
        connect_timeout: float,
        read_timeout: float,
        max_response_bytes: int,
        connections_per_origin: int = 1024,
        queue_timeout: float = 2.0,
    ) -> None:
        self._metrics = metrics
        self._holder = holder
        self._max_response = max_response_bytes
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._per_origin = connections_per_origin
        self._queue_timeout = queue_timeout
        self._pool: UpstreamPool | None = None
        self._origins: dict[str, Origin] = {}
        self._live: set[Answer] = set()  # event streams being relayed

    async def open(self) -> None:
        self._pool = UpstreamPool(
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            limit=self._per_origin,
            queue_timeout=self._queue_timeout,
        )

    def poke(self) -> None:
        """A new policy snapshot is in force: wake the running streams waiting for their upstream, so
        that each re-reads it now rather than at its next chunk."""
        for answer in list(self._live):
            answer.interrupt()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    def _origin(self, base_url: str) -> Origin:
        origin = self._origins.get(base_url)
        if origin is None:
            origin = self._origins[base_url] = Origin.parse(base_url)
        return origin

    async def forward(
        self, request: HttpRequest, ctx: RequestContext, body: bytes, inspector: OutputInspector | None
    ) -> tuple[int, Response | None]:
        """The status the client gets, and the answer to send — or None when it was streamed already."""
        assert self._pool is not None, "UpstreamClient.open() was not awaited"
        origin = self._origin(ctx.route.base_url)
        inspecting = inspector is not None
        head = request_head(request, origin, ctx.request_id, body, inspecting=inspecting)
        route = ctx.route.name
        sent = time.perf_counter()
        try:
            # inspected answers are read (and sent) plain
            upstream = await self._pool.request(origin, request.method, head, body, decode=inspecting)
        except UpstreamBusy:
            message = "The model endpoint is busy: no connection to it came free in time."
            return _sent(self._failure(ctx, "busy", 503, "upstream_busy", message))
        except UpstreamTimeout:
            return _sent(self._failure(ctx, "timeout", *_TIMED_OUT))
        except UndecodableAnswer as undecodable:
            log.warning("upstream %s: %s", route, undecodable)
            message = "The model's answer came in a compression the gateway cannot check."
            return _sent(self._failure(ctx, "undecodable", 502, "upstream_encoding_unsupported", message))
        except UpstreamFailed as exc:
            log.warning("upstream %s unavailable: %s", route, exc)
            message = "The model endpoint could not be reached."
            return _sent(self._failure(ctx, "unavailable", 502, "upstream_unavailable", message))
        try:
            self._metrics.child(self._metrics.upstream_seconds, route).observe(time.perf_counter() - sent)
            if self._holder.snapshot is not ctx.snapshot:  # the policy changed while the upstream worked
                switch = KillSwitchFilter.cutting_switch(ctx, self._holder.snapshot)
                if switch is not None:
                    upstream.close()
                    verdict = KillSwitchFilter.refuse(switch, ctx)
                    if isinstance(verdict, Reply):
                        return _sent(reply_response(verdict, ctx.request_id))
                    return _sent(refusal_response(verdict, ctx.request_id))
            content_type = upstream.headers.get("Content-Type", "").lower()
            # Streams are inspected event by event (NDJSON line by line), as they arrive.
            ndjson = is_ndjson(content_type)
            if inspector is not None and (ndjson or content_type.startswith("text/event-stream")):
                await self._relay_stream(request, ctx, upstream, inspector, ndjson=ndjson)
                return upstream.status, None
            if inspector is not None and _inspectable(content_type) and request.method != "HEAD":
                return _sent(await self._relay_whole(ctx, upstream, inspector, content_type))
            await self._relay(request, ctx, upstream, content_type)
            return upstream.status, None
        finally:
            upstream.release()

    def _failure(self, ctx: RequestContext, kind: str, status: int, code: str, message: str) -> Response:
        """Count an upstream failure of `kind`, and answer the client for it."""
        self._metrics.upstream_errors.labels(ctx.route.name, kind).inc()
        refusal = Refusal(status=status, code=code, type="upstream_error", message=message, action="upstream_error")
        return refusal_response(refusal, ctx.request_id)

    def _response_headers(self, upstream: Answer, ctx: RequestContext, *, plain: bool) -> list[tuple[str, str]]:
        """The upstream's end-to-end headers, with the gateway's own (the request id, and any a filter
        set, such as rate-limit headers) in place of any the upstream sent under those names."""
        extra = ctx.response_headers
        headers = end_to_end(upstream.headers, drop=_PLAIN_DROP if plain else _OWN, also=tuple(extra))
        headers.append((REQUEST_ID_HEADER, ctx.request_id))
        if extra:
            headers.extend(extra.items())
        return headers

    async def _relay(self, request: HttpRequest, ctx: RequestContext, upstream: Answer, content_type: str) -> None:
        answer = request.stream(
            upstream.status,
            self._response_headers(upstream, ctx, plain=False),
            upstream.reason,
            length="Content-Length" in upstream.headers,
            dated="Date" in upstream.headers,
        )
        # A sampled request keeps a copy of a textual answer (bounded); nothing else is copied.
        keep = ctx.sampled and upstream.headers.get("Content-Encoding") is None and _textual(content_type)
        copy: list[bytes] = []
        kept = 0
        sse = content_type.startswith("text/event-stream")
        ndjson = is_ndjson(content_type)
        events = sse or ndjson  # a running stream: it follows the policy
        holder = self._holder
        seen = ctx.snapshot
        last = b""  # the last chunk sent: where the stream stands, for a cut
        if events:
            self._live.add(upstream)
        try:
            while True:
                try:
                    chunk: bytes | None = await upstream.read()
                except ReadInterrupted:
                    chunk = None
                if events and holder.snapshot is not seen:
                    seen = holder.snapshot
                    if seen.output.size or KillSwitchFilter.cutting_switch(ctx, seen) is not None:
                        await self._take_over(ctx, upstream, answer, last, chunk, ndjson=ndjson)
                        return
                if chunk is None:
                    continue
                if not chunk:
                    break
                await answer.write(chunk)
                last = chunk
                if keep and kept < CAPTURE_LIMIT:
                    copy.append(chunk)
                    kept += len(chunk)
            if keep:
                ctx.answer = (content_type, b"".join(copy)[:CAPTURE_LIMIT])
            await answer.end()
        except UpstreamFailed:
            # The upstream failed mid-body; the head is gone, so the answer can only end here.
            await self._aborted(answer, ctx, upstream, sse=sse)
        except ConnectionResetError:
            upstream.close()  # the client left or stopped reading: stop the upstream's answer
        except asyncio.CancelledError:
            upstream.close()
            raise
        finally:
            if events:
                self._live.discard(upstream)

    async def _take_over(
        self,
        ctx: RequestContext,
        upstream: Answer,
        answer: StreamedAnswer,
        last: bytes,
        chunk: bytes | None,
        *,
        ndjson: bool,
    ) -> None:
        """An uninspected event stream met a policy that concerns it: finish the event in progress,
        then cut the stream (a kill switch), or inspect the rest of it (new output rules)."""
        sent = last
        if not ends_at_boundary(last, ndjson=ndjson):
            budget = MAX_EVENT_TAIL
            while True:
                if chunk is None:
                    try:
                        chunk = await upstream.read()
                    except ReadInterrupted:
                        continue
                if not chunk:
                    await answer.end()  # the upstream ended the stream meanwhile
                    return
                end = boundary_end(chunk, ndjson=ndjson)
                part = chunk if end < 0 else chunk[:end]
                await answer.write(part)
                sent = (sent + part)[-MAX_EVENT_TAIL:]
                chunk = None if end < 0 else chunk[end:]
                budget -= len(part)
                if end >= 0:
                    break
                if budget < 0:  # no event ends: the stream can only be broken off
                    upstream.close()
                    await answer.end()
                    return
        snapshot = self._holder.snapshot
        plain = upstream.headers.get("Content-Encoding", "identity").strip().lower() == "identity"
        switch = KillSwitchFilter.cutting_switch(ctx, snapshot)
        if switch is not None or not plain:  # cut (a compressed stream cannot start being inspected)
            why = f"kill switch {switch.scope}" if switch is not None else "compressed, cannot be inspected"
            log.info("running stream %s cut: %s", ctx.request_id, why)
            upstream.close()
            if plain:
                await answer.write(closing_events(sent, ndjson=ndjson))
            self._metrics.child(self._metrics.requests, ctx.route.name, "kill_switch").inc()
            await answer.end()
            return
        inspector = OutputInspector(ctx, snapshot.output, self._metrics)
        stream = inspector.stream(ndjson=ndjson)
        stream.follow(*last_event(sent, ndjson=ndjson))
        await self._pump(ctx, upstream, answer, stream, snapshot, chunk or None, ndjson=ndjson)

    async def _relay_whole(
        self, ctx: RequestContext, upstream: Answer, inspector: OutputInspector, content_type: str
    ) -> Response:
        try:
            body = await _read_limited(upstream, self._max_response)
        except UpstreamTimeout:
            return self._failure(ctx, "timeout", *_TIMED_OUT)
        except _TooLarge:
            upstream.close()
            message = "The model's answer was too large to be checked."
            return self._failure(ctx, "too_large", 502, "upstream_response_too_large", message)
        except UpstreamFailed:
            message = "The model endpoint failed mid-answer."
            return self._failure(ctx, "stream_aborted", 502, "upstream_unavailable", message)
        ctx.answer = (content_type, body)
        try:
            body = inspector.inspect_body(content_type, body)
        except Exception:
            self._metrics.filter_faults.labels("output_scan").inc()
            log.exception("output scan failed; refusing request %s", ctx.request_id)
            return refusal_response(OUTPUT_FAULT, ctx.request_id)
        headers = self._response_headers(upstream, ctx, plain=True)
        if inspector.action is not None:
            headers.append((ACTION_HEADER, inspector.action))
        return Response(upstream.status, headers, body, upstream.reason, dated="Date" in upstream.headers)

    def _guarded(self, ctx: RequestContext, stream: StreamInspector, step: Callable[..., bytes], *args: bytes) -> bytes:
        """Run one step of the stream scan; an internal error cuts the stream (fail closed)."""
        try:
            return step(*args)
        except Exception:
            self._metrics.filter_faults.labels("output_scan").inc()
            log.exception("stream scan failed; cutting response %s", ctx.request_id)
            return stream.fail()

    async def _aborted(
        self, answer: StreamedAnswer, ctx: RequestContext, upstream: Answer, *, sse: bool, ndjson: bool = False
    ) -> None:
        """The upstream failed mid-answer: count it, release it, and end an event stream (or an inspected
        NDJSON stream) with a terminal error event so that clients stop waiting (another body is cut
        short: the connection closes before it is complete, so the client sees it end early)."""
        self._metrics.upstream_errors.labels(ctx.route.name, "stream_aborted").inc()
        upstream.close()
        if sse or ndjson:
            with contextlib.suppress(ConnectionResetError):
                await answer.write(NDJSON_ABORTED if ndjson else STREAM_ABORTED)
                await answer.end()

    async def _relay_stream(
        self, request: HttpRequest, ctx: RequestContext, upstream: Answer, inspector: OutputInspector, *, ndjson: bool
    ) -> None:
        stream = inspector.stream(ndjson=ndjson)
        answer = request.stream(
            upstream.status,
            self._response_headers(upstream, ctx, plain=True),
            upstream.reason,
            dated="Date" in upstream.headers,
        )
        await self._pump(ctx, upstream, answer, stream, ctx.snapshot, None, ndjson=ndjson)

    async def _pump(
        self,
        ctx: RequestContext,
        upstream: Answer,
        answer: StreamedAnswer,
        stream: StreamInspector,
        seen: CompiledPolicy,
        chunk: bytes | None,
        *,
        ndjson: bool,
    ) -> None:
        """Relay an inspected stream, event by event, under the policy in force at each chunk."""
        holder = self._holder
        rules = seen.rules
        self._live.add(upstream)
        try:
            while True:
                if chunk is None:
                    try:
                        chunk = await upstream.read()
                    except ReadInterrupted:
                        pass
                if holder.snapshot is not seen:
                    seen = holder.snapshot
                    out = self._follow(ctx, stream, seen, rules)
                    rules = seen.rules
                    if out:
                        await answer.write(out)
                    if stream.cut:
                        upstream.close()
                        break
                if chunk is None:
                    continue
                if not chunk:
                    out = self._guarded(ctx, stream, stream.close)
                    if out:
                        await answer.write(out)
                    break
                out = self._guarded(ctx, stream, stream.feed, chunk)
                chunk = None
                if out:
                    await answer.write(out)
                if stream.cut:
                    upstream.close()  # stop generating: nothing more of this answer will be sent
                    break
            await answer.end()
        except UpstreamFailed:
            await self._aborted(answer, ctx, upstream, sse=not ndjson, ndjson=ndjson)
        except ConnectionResetError:
            upstream.close()  # the client left or stopped reading: stop the upstream's answer
        except asyncio.CancelledError:
            upstream.close()
            raise
        finally:
            self._live.discard(upstream)

    def _follow(
        self, ctx: RequestContext, stream: StreamInspector, snapshot: CompiledPolicy, rules: tuple[Rule, ...]
    ) -> bytes:
        """A running inspected stream meets a new snapshot: the closing events when a kill switch now
        cuts it; otherwise, when the rules changed, the rest is scanned with the new output rules."""
        try:
            switch = KillSwitchFilter.cutting_switch(ctx, snapshot)
            if switch is not None:
                log.info("running stream %s cut: kill switch %s", ctx.request_id, switch.scope)
                return stream.stop("kill_switch")
            if snapshot.rules is not rules:
                stream.adopt(snapshot.output)
            return b""
        except Exception:
            self._metrics.filter_faults.labels("output_scan").inc()
            log.exception("a running stream could not follow the new policy; cutting response %s", ctx.request_id)
            return stream.fail()


STREAM_ABORTED = (
    b'data: {"error": {"type": "upstream_error", "code": "upstream_stream_aborted", '
    b'"message": "The model endpoint failed mid-answer."}}\n\ndata: [DONE]\n\n'
)
# Ollama reports an error mid-stream as a line with an `error` string.
NDJSON_ABORTED = (
    b'{"error":"The model endpoint failed mid-answer.","done":true,"done_reason":"upstream_stream_aborted"}\n'
)


class _TooLarge(Exception):
    pass


async def _read_limited(upstream: Answer, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await upstream.read():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


CAPTURE_LIMIT = 256 * 1024


def _textual(content_type: str) -> bool:
    return "json" in content_type or content_type.startswith(("text/", "application/x-ndjson"))


def _inspectable(content_type: str) -> bool:
    return "json" in content_type or content_type.startswith("text/") or not content_type
