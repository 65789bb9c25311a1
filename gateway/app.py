"""The data plane. The request path reads top to bottom here:

    kill switch → access → rate limit → input scan → upstream → output scan (stream-aware)

Each request check is one file in `gateway/filters/` and one line in `build_chain`; the output scan
opens a per-response inspector that the proxy runs on the upstream's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.filters.access import AccessFilter
from gateway.filters.base import RequestFilter
from gateway.filters.input_scan import InputScanFilter
from gateway.filters.kill_switch import KillSwitchFilter
from gateway.filters.output_scan import OutputScanFilter
from gateway.filters.rate_limit import RateLimitFilter
from gateway.handler import ProxyHandler
from gateway.metrics import GatewayMetrics
from gateway.policy_watch import SnapshotHolder
from gateway.proxy import UpstreamClient
from gateway.ratelimit import MemoryRateLimiter, RateLimiter
from gateway.refusals import json_response, refusal_response
from gateway.reports import Reports
from gateway.routing import Router
from gateway.server import DataPlaneServer, HttpRequest, Response, new_request_id
from gateway.settings import Settings
from gateway.telemetry import Telemetry
from gateway.verdict import Refusal
from rules.match import DEFAULT_REQUEST_REGEX_BUDGET

RESERVED_PREFIX = "/_containment/"
_FLUSH_SECONDS = 1.0
_POLICY_WATCH_SECONDS = 0.05  # how soon a quiet running stream sees a new policy snapshot
Endpoint = Callable[[HttpRequest], Awaitable[Response]]


def _all_well() -> list[str]:
    return []


def build_chain(
    metrics: GatewayMetrics, limiter: RateLimiter, *, regex_request_budget: float = DEFAULT_REQUEST_REGEX_BUDGET
) -> list[RequestFilter]:
    return [
        KillSwitchFilter(),
        AccessFilter(),
        RateLimitFilter(limiter),
        InputScanFilter(metrics, regex_budget=regex_request_budget),
    ]


class DataPlane:
    """The proxy handler behind the data-plane server, with the gateway's own endpoints under
    `/_containment/` (health, readiness, user reports)."""

    def __init__(
        self,
        settings: Settings,
        *,
        holder: SnapshotHolder,
        metrics: GatewayMetrics,
        telemetry: Telemetry,
        limiter: RateLimiter | None = None,
        health: Callable[[], list[str]] = _all_well,
        upstream_connections_per_origin: int | None = None,
        upstream_queue_seconds: float | None = None,
    ) -> None:
        self._holder = holder
        self._health = health
        self._metrics = metrics
        self._flusher: asyncio.TimerHandle | None = None
        self._watcher: asyncio.TimerHandle | None = None
        self._watched = holder.snapshot
        self.upstream = UpstreamClient(
            metrics,
            holder=holder,
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_read_timeout,
            max_response_bytes=settings.max_response_scan_bytes,
            connections_per_origin=upstream_connections_per_origin or settings.upstream_connections_per_origin,
            queue_timeout=upstream_queue_seconds or settings.upstream_queue_seconds,
        )
        self.handler = ProxyHandler(
            router=Router(settings.effective_routes()),
            chain=build_chain(
                metrics, limiter or MemoryRateLimiter(), regex_request_budget=settings.regex_request_budget_ms / 1000
            ),
            output=OutputScanFilter(metrics),
            telemetry=telemetry,
            upstream=self.upstream,
            holder=holder,
            metrics=metrics,
            max_body_bytes=settings.max_body_bytes,
            tenants=settings.tenants,
            trusted_proxies=settings.trusted_networks(),
            body_timeout=settings.body_timeout_seconds,
        )
        reports = Reports(telemetry, settings.categories, body_timeout=settings.body_timeout_seconds)
        self._endpoints: dict[tuple[str, str], Endpoint] = {
            ("GET", "/_containment/healthz"): self.healthz,
            ("HEAD", "/_containment/healthz"): self.healthz,
            ("GET", "/_containment/readyz"): self.readyz,
            ("HEAD", "/_containment/readyz"): self.readyz,
            ("POST", "/_containment/reports"): reports.handle,
        }
        self.server = DataPlaneServer(
            self.dispatch,
            max_body_bytes=settings.max_body_bytes,
            idle_timeout=settings.idle_timeout_seconds,
            write_timeout=settings.client_write_timeout_seconds,
            max_connections=settings.max_connections,
        )

    async def dispatch(self, request: HttpRequest) -> Response | None:
        if request.path.startswith(RESERVED_PREFIX):
            endpoint = self._endpoints.get((request.method, request.path))
            if endpoint is None:
                refusal = Refusal(status=404, code="not_found", message="No such gateway endpoint.", action="invalid")
                return refusal_response(refusal, new_request_id())
            return await endpoint(request)
        return await self.handler.handle(request)

    async def healthz(self, request: HttpRequest) -> Response:
        """Liveness: the process is up and its event loop answers."""
        return json_response({"status": "ok"}, new_request_id())

    async def readyz(self, request: HttpRequest) -> Response:
        """Readiness: a compiled policy snapshot is in force. When the shared store cannot be reached the
        replica still serves (fail-static: last good policy, local rate-limit shares), so it stays ready
        and reports `degraded` with the reasons instead of taking itself out of the load balancer."""
        problems = self._health()
        payload: dict[str, object] = {
            "status": "degraded" if problems else "ready",
            "policy_version": self._holder.snapshot.version,
        }
        if problems:
            payload["degraded"] = problems
        return json_response(payload, new_request_id())

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> tuple[str, int]:
        """Open the upstream pool and listen (port 0: any free port); returns the address bound."""
        await self.upstream.open()
        try:
            address = await self.server.start(host, port, reuse_port=reuse_port)
        except BaseException:
            await self.upstream.close()
            raise
        self._flush()
        self._watch()
        return address

    def _watch(self) -> None:
        """Running streams re-read the policy snapshot at each chunk; one whose upstream is quiet is
        woken when a new snapshot is in force, so that a kill switch cuts it within this period."""
        snapshot = self._holder.snapshot
        if snapshot is not self._watched:
            self._watched = snapshot
            self.upstream.poke()
        self._watcher = asyncio.get_running_loop().call_later(_POLICY_WATCH_SECONDS, self._watch)

    def _flush(self) -> None:
        """Batched metric observations reach the registry on a scrape of it, and at least every
        second (what `--workers`' multiprocess files need: their scrape does not run in this process)."""
        self._metrics.flush()
        self._flusher = asyncio.get_running_loop().call_later(_FLUSH_SECONDS, self._flush)

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in progress finish for up to `grace` seconds, then cut them."""
        await self.server.close(grace)
        await self.upstream.close()
        if self._watcher is not None:
            self._watcher.cancel()
        if self._flusher is not None:
            self._flusher.cancel()
        self._metrics.flush()
