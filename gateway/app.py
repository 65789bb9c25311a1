"""The data-plane application. The request path reads top to bottom here:

    kill switch → access → rate limit → input scan → upstream → output scan (stream-aware)

Each request check is one file in `gateway/filters/` and one line in `build_chain`; the output scan
opens a per-response inspector that the proxy runs on the upstream's answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.filters.access import AccessFilter
from gateway.filters.base import RequestFilter
from gateway.filters.input_scan import InputScanFilter
from gateway.filters.kill_switch import KillSwitchFilter
from gateway.filters.output_scan import OutputScanFilter
from gateway.filters.rate_limit import RateLimitFilter
from gateway.handler import ProxyHandler, new_request_id
from gateway.metrics import GatewayMetrics
from gateway.policy_watch import SnapshotHolder
from gateway.proxy import UpstreamClient
from gateway.ratelimit import MemoryRateLimiter, RateLimiter
from gateway.refusals import json_response, refusal_response
from gateway.reports import CATEGORIES, TELEMETRY, report
from gateway.routing import Router
from gateway.settings import Settings
from gateway.telemetry import Telemetry
from gateway.verdict import Refusal

HOLDER = web.AppKey("holder", SnapshotHolder)
HEALTH: web.AppKey[Callable[[], list[str]]] = web.AppKey("health")


def _all_well() -> list[str]:
    return []


def build_chain(metrics: GatewayMetrics, limiter: RateLimiter) -> list[RequestFilter]:
    return [
        KillSwitchFilter(),
        AccessFilter(),
        RateLimitFilter(limiter),
        InputScanFilter(metrics),
    ]


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process is up and its event loop answers."""
    return json_response({"status": "ok"}, new_request_id())


async def readyz(request: web.Request) -> web.Response:
    """Readiness: a compiled policy snapshot is in force. When the shared store cannot be reached the
    replica still serves (fail-static: last good policy, local rate-limit shares), so it stays ready
    and reports `degraded` with the reasons instead of taking itself out of the load balancer."""
    snapshot = request.app[HOLDER].snapshot
    problems = request.app[HEALTH]()
    payload: dict[str, object] = {"status": "degraded" if problems else "ready", "policy_version": snapshot.version}
    if problems:
        payload["degraded"] = problems
    return json_response(payload, new_request_id())


async def reserved_not_found(request: web.Request) -> web.Response:
    refusal = Refusal(status=404, code="not_found", message="No such gateway endpoint.", action="invalid")
    return refusal_response(refusal, new_request_id())


def build_app(
    settings: Settings,
    *,
    holder: SnapshotHolder,
    metrics: GatewayMetrics,
    telemetry: Telemetry,
    limiter: RateLimiter | None = None,
    health: Callable[[], list[str]] = _all_well,
) -> web.Application:
    upstream = UpstreamClient(
        metrics,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        max_response_bytes=settings.max_response_scan_bytes,
        client_write_timeout=settings.client_write_timeout_seconds,
    )
    handler = ProxyHandler(
        router=Router(settings.effective_routes()),
        chain=build_chain(metrics, limiter or MemoryRateLimiter()),
        output=OutputScanFilter(metrics),
        telemetry=telemetry,
        upstream=upstream,
        holder=holder,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        tenants=settings.tenants,
        trusted_proxies=settings.trusted_networks(),
        body_timeout=settings.body_timeout_seconds,
    )

    async def upstream_session(app: web.Application) -> AsyncIterator[None]:
        await upstream.open()
        yield
        await upstream.close()

    app = web.Application(client_max_size=settings.max_body_bytes)
    app[HOLDER] = holder
    app[HEALTH] = health
    app[TELEMETRY] = telemetry
    app[CATEGORIES] = settings.categories
    app.cleanup_ctx.append(upstream_session)
    app.router.add_get("/_containment/healthz", healthz, allow_head=True)
    app.router.add_get("/_containment/readyz", readyz, allow_head=True)
    app.router.add_post("/_containment/reports", report)
    app.router.add_route("*", "/_containment/{tail:.*}", reserved_not_found)
    app.router.add_route("*", "/{tail:.*}", handler.handle)
    return app
