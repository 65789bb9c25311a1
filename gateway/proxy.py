"""Relay a request to its upstream and stream the answer back, headers end to end, body unbuffered."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.context import RequestContext
from gateway.filters.output_scan import OutputInspector, StreamInspector
from gateway.metrics import GatewayMetrics
from gateway.refusals import ACTION_HEADER, REQUEST_ID_HEADER, refusal_response
from gateway.verdict import Refusal

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
# Recomputed for the new hop rather than copied. A request's Content-Encoding goes too: aiohttp has
# already inflated the body (see gateway.body), so the upstream receives it plain.
_REWRITTEN = frozenset({"host", "content-length", "content-encoding"})
# aiohttp would add these when the caller did not send them; the upstream must see only what the caller sent.
_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


# An inspected answer is relayed decompressed, and may change length.
_PLAIN_DROP = frozenset({"content-length", "content-encoding"})
OUTPUT_FAULT = Refusal(
    status=503,
    code="containment_unavailable",
    type="service_unavailable",
    message="The answer could not be checked against the containment policy.",
    action="fault",
)


def end_to_end(headers: CIMultiDictProxy[str], *, drop: frozenset[str] = _REWRITTEN) -> CIMultiDict[str]:
    """Headers minus hop-by-hop ones, including any that `Connection` names."""
    named = {token.strip().lower() for value in headers.getall("Connection", ()) for token in value.split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in named or lowered in drop:
            continue
        out.add(name, value)
    return out


def _upstream_refusal(status: int, code: str, message: str) -> Refusal:
    return Refusal(status=status, code=code, type="upstream_error", message=message, action="upstream_error")


class UpstreamClient:
    """One pooled client session for every upstream, opened and closed with the app."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_response_bytes: int,
        client_write_timeout: float = 60.0,
    ) -> None:
        self._metrics = metrics
        self._max_response = max_response_bytes
        self._client_write_timeout = client_write_timeout
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=1024, limit_per_host=0, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(
        self, request: web.Request, ctx: RequestContext, body: bytes, inspector: OutputInspector | None
    ) -> web.StreamResponse:
        assert self._session is not None, "UpstreamClient.open() was not awaited"
        headers = end_to_end(request.headers)
        headers[REQUEST_ID_HEADER] = ctx.request_id
        skip = [name for name in _AUTO_HEADERS if name not in headers]
        url = URL(ctx.route.base_url + request.raw_path, encoded=True)
        route = ctx.route.name
        sent = time.perf_counter()
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=headers,
                data=body if body or request.method not in ("GET", "HEAD") else None,
                allow_redirects=False,
                skip_auto_headers=skip,
                auto_decompress=inspector is not None,  # inspected answers are read (and sent) plain
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            self._metrics.upstream_errors.labels(route, "timeout").inc()
            return refusal_response(
                _upstream_refusal(504, "upstream_timeout", "The model endpoint did not answer in time."),
                ctx.request_id,
            )
        except aiohttp.ClientError as exc:
            self._metrics.upstream_errors.labels(route, "unavailable").inc()
            log.warning("upstream %s unavailable: %s", route, exc.__class__.__name__)
            return refusal_response(
                _upstream_refusal(502, "upstream_unavailable", "The model endpoint could not be reached."),
                ctx.request_id,
            )
        self._metrics.child(self._metrics.upstream_seconds, route).observe(time.perf_counter() - sent)
        try:
            content_type = upstream.headers.get("Content-Type", "").lower()
            if inspector is not None and content_type.startswith("text/event-stream"):
                return await self._relay_stream(request, ctx, upstream, inspector)
            if inspector is not None and _inspectable(content_type) and request.method != "HEAD":
                return await self._relay_whole(request, ctx, upstream, inspector, content_type)
            return await self._relay(request, ctx, upstream, content_type)
        finally:
            upstream.release()

    def _response_headers(
        self, upstream: aiohttp.ClientResponse, ctx: RequestContext, *, plain: bool
    ) -> CIMultiDict[str]:
        headers = end_to_end(upstream.headers, drop=_PLAIN_DROP if plain else frozenset())
        headers[REQUEST_ID_HEADER] = ctx.request_id
        headers.update(ctx.response_headers)
        return headers

    async def _relay(
        self, request: web.Request, ctx: RequestContext, upstream: aiohttp.ClientResponse, content_type: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=self._response_headers(upstream, ctx, plain=False)
        )
        await response.prepare(request)
        # A sampled request keeps a copy of a textual answer (bounded); nothing else is copied.
        keep = ctx.sampled and upstream.headers.get("Content-Encoding") is None and _textual(content_type)
        copy: list[bytes] = []
        kept = 0
        try:
            async for chunk in upstream.content.iter_any():
                await self._write(response, chunk)
                if keep and kept < CAPTURE_LIMIT:
                    copy.append(chunk)
                    kept += len(chunk)
            if keep:
                ctx.answer = (content_type, b"".join(copy)[:CAPTURE_LIMIT])
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            # The upstream failed mid-body; the headers are gone, so the answer can only end here.
            await self._aborted(response, ctx, upstream, sse=content_type.startswith("text/event-stream"))
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            upstream.close()  # the client went away: stop reading from the upstream
            raise
        await response.write_eof()
        return response

    async def _relay_whole(
        self,
        request: web.Request,
        ctx: RequestContext,
        upstream: aiohttp.ClientResponse,
        inspector: OutputInspector,
        content_type: str,
    ) -> web.StreamResponse:
        try:
            body = await _read_limited(upstream, self._max_response)
        except TimeoutError:
            self._metrics.upstream_errors.labels(ctx.route.name, "timeout").inc()
            return refusal_response(
                _upstream_refusal(504, "upstream_timeout", "The model endpoint did not answer in time."),
                ctx.request_id,
            )
        except _TooLarge:
            upstream.close()
            self._metrics.upstream_errors.labels(ctx.route.name, "too_large").inc()
            return refusal_response(
                _upstream_refusal(
                    502, "upstream_response_too_large", "The model's answer was too large to be checked."
                ),
                ctx.request_id,
            )
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            self._metrics.upstream_errors.labels(ctx.route.name, "stream_aborted").inc()
            return refusal_response(
                _upstream_refusal(502, "upstream_unavailable", "The model endpoint failed mid-answer."),
                ctx.request_id,
            )
        ctx.answer = (content_type, body)
        try:
            body = inspector.inspect_body(content_type, body)
        except Exception:
            self._metrics.filter_faults.labels("output_scan").inc()
            log.exception("output scan failed; refusing request %s", ctx.request_id)
            return refusal_response(OUTPUT_FAULT, ctx.request_id)
        headers = self._response_headers(upstream, ctx, plain=True)
        if inspector.action is not None:
            headers[ACTION_HEADER] = inspector.action
        return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=body)

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        """Write to the client, giving up on one that stops reading (a slow reader must not hold an
        upstream connection and the model's capacity forever)."""
        try:
            async with asyncio.timeout(self._client_write_timeout):
                await response.write(data)
        except TimeoutError:
            raise ConnectionResetError("the client stopped reading") from None

    def _guarded(self, ctx: RequestContext, stream: StreamInspector, step: Callable[[], bytes]) -> bytes:
        """Run one step of the stream scan; an internal error cuts the stream (fail closed)."""
        try:
            return step()
        except Exception:
            self._metrics.filter_faults.labels("output_scan").inc()
            log.exception("stream scan failed; cutting response %s", ctx.request_id)
            return stream.fail()

    async def _aborted(
        self, response: web.StreamResponse, ctx: RequestContext, upstream: aiohttp.ClientResponse, *, sse: bool
    ) -> None:
        """The upstream failed mid-answer: count it, release it, and end an event stream with a terminal
        error event so that clients stop waiting (other bodies can only end short)."""
        self._metrics.upstream_errors.labels(ctx.route.name, "stream_aborted").inc()
        upstream.close()
        if sse:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await response.write(STREAM_ABORTED)
                await response.write_eof()

    async def _relay_stream(
        self, request: web.Request, ctx: RequestContext, upstream: aiohttp.ClientResponse, inspector: OutputInspector
    ) -> web.StreamResponse:
        stream = inspector.stream()
        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=self._response_headers(upstream, ctx, plain=True)
        )
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                out = self._guarded(ctx, stream, functools.partial(stream.feed, chunk))
                if out:
                    await self._write(response, out)
                if stream.cut:
                    upstream.close()  # stop generating: nothing more of this answer will be sent
                    break
            else:
                out = self._guarded(ctx, stream, stream.close)
                if out:
                    await self._write(response, out)
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            await self._aborted(response, ctx, upstream, sse=True)
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            upstream.close()
            raise
        await response.write_eof()
        return response


STREAM_ABORTED = (
    b'data: {"error": {"type": "upstream_error", "code": "upstream_stream_aborted", '
    b'"message": "The model endpoint failed mid-answer."}}\n\ndata: [DONE]\n\n'
)


class _TooLarge(Exception):
    pass


async def _read_limited(upstream: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in upstream.content.iter_any():
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
