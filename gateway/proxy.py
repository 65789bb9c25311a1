"""Relay a request to its upstream and stream the answer back, headers end to end, body unbuffered."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.context import RequestContext
from gateway.metrics import GatewayMetrics
from gateway.refusals import REQUEST_ID_HEADER, refusal_response
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

    def __init__(self, metrics: GatewayMetrics, *, connect_timeout: float, read_timeout: float) -> None:
        self._metrics = metrics
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

    async def forward(self, request: web.Request, ctx: RequestContext, body: bytes) -> web.StreamResponse:
        assert self._session is not None, "UpstreamClient.open() was not awaited"
        headers = end_to_end(request.headers)
        headers[REQUEST_ID_HEADER] = ctx.request_id
        skip = [name for name in _AUTO_HEADERS if name not in headers]
        url = URL(ctx.route.base_url + request.raw_path, encoded=True)
        route = ctx.route.name
        try:
            upstream = await self._session.request(
                request.method,
                url,
                headers=headers,
                data=body if body or request.method not in ("GET", "HEAD") else None,
                allow_redirects=False,
                skip_auto_headers=skip,
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
        try:
            return await self._relay(request, ctx, upstream)
        finally:
            upstream.release()

    async def _relay(
        self, request: web.Request, ctx: RequestContext, upstream: aiohttp.ClientResponse
    ) -> web.StreamResponse:
        headers = end_to_end(upstream.headers, drop=frozenset())
        headers[REQUEST_ID_HEADER] = ctx.request_id
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            # The upstream failed mid-body; headers are gone, so all we can do is end the response.
            self._metrics.upstream_errors.labels(ctx.route.name, "stream_aborted").inc()
            upstream.close()
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            upstream.close()  # the client went away: stop reading from the upstream
            raise
        await response.write_eof()
        return response
