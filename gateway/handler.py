"""The proxy handler: read the request once, run the filter chain in order, then relay upstream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from gateway.body import AmbiguousIdentity, BodyTooLarge, MalformedBody, UnsupportedEncoding, identify, read_body
from gateway.context import RequestContext
from gateway.filters.base import RequestFilter
from gateway.filters.output_scan import OutputScanFilter
from gateway.formats import BodyError, check_shape, extract
from gateway.metrics import GatewayMetrics
from gateway.policy_watch import SnapshotHolder
from gateway.proxy import UpstreamClient
from gateway.refusals import refusal_response, reply_response
from gateway.routing import Router
from gateway.server import HttpRequest, Response, new_request_id
from gateway.telemetry import Telemetry
from gateway.verdict import CONTINUE, Continue, Refusal, Reply, Verdict
from rules.compile import Network
from rules.model import utcnow

log = logging.getLogger(__name__)

_VERDICTS = (Continue, Refusal, Reply)

FAULT = Refusal(
    status=503,
    code="containment_unavailable",
    type="service_unavailable",
    message="The request could not be checked against the containment policy.",
    action="fault",
)


def _invalid(message: str, status: int = 400, code: str = "invalid_request") -> Refusal:
    return Refusal(status=status, code=code, message=message, action="invalid")


class ProxyHandler:
    def __init__(
        self,
        *,
        router: Router,
        chain: Sequence[RequestFilter],
        output: OutputScanFilter,
        telemetry: Telemetry,
        upstream: UpstreamClient,
        holder: SnapshotHolder,
        metrics: GatewayMetrics,
        max_body_bytes: int,
        tenants: Mapping[str, str],
        trusted_proxies: Sequence[Network] = (),
        body_timeout: float = 30.0,
    ) -> None:
        self._router = router
        self._chain = tuple(chain)
        self._output = output
        self._telemetry = telemetry
        self._upstream = upstream
        self._holder = holder
        self._metrics = metrics
        self._max_body = max_body_bytes
        self._tenants = dict(tenants)
        self._trusted = tuple(trusted_proxies)
        self._body_timeout = body_timeout

    async def handle(self, request: HttpRequest) -> Response | None:
        started = time.perf_counter()
        request_id = new_request_id()
        snapshot = self._holder.snapshot  # one consistent policy for the whole request
        try:
            identity = identify(request, self._tenants, self._trusted)
        except AmbiguousIdentity as ambiguous:  # the upstream could see another key than the one checked
            return self._refuse(_invalid(str(ambiguous)), request_id, "-")
        try:
            if request.body_complete:
                body = await read_body(request, self._max_body)  # already here: nothing to wait for
            else:
                async with asyncio.timeout(self._body_timeout):  # a slow or stalled upload must not hold a slot
                    body = await read_body(request, self._max_body)
            content_type = request.headers.get("Content-Type", "")
            extracted = extract(content_type, body)
            if extracted.document is not None:
                check_shape(request.path, extracted.document)
        except TimeoutError:
            refusal = _invalid(
                f"The request body did not arrive within {self._body_timeout:g} s.", 408, "request_timeout"
            )
            return self._refuse(refusal, request_id, "-")
        except BodyTooLarge:
            refusal = _invalid(f"Request body exceeds {self._max_body} bytes.", 413, "request_too_large")
            return self._refuse(refusal, request_id, "-")
        except UnsupportedEncoding as unsupported:
            refusal = _invalid(f"Unsupported request Content-Encoding: {unsupported}.", 415, "unsupported_encoding")
            return self._refuse(refusal, request_id, "-")
        except BodyError as exc:
            return self._refuse(_invalid(str(exc)), request_id, "-")
        except MalformedBody:
            return self._refuse(_invalid("The request body's framing is malformed."), request_id, "-")

        route = self._router.select(request.path, extracted.model)
        if route is None:
            return self._refuse(_invalid("No route serves this path.", 404, "no_route"), request_id, "-")
        ctx = RequestContext(
            request_id=request_id,
            method=request.method,
            path=request.path,
            route=route,
            identity=identity,
            snapshot=snapshot,
            now=utcnow(),
            model=extracted.model,
            texts=extracted.texts,
            document=extracted.document,
            raw_text=extracted.raw_text,
            content_type=content_type,
            locations=extracted.locations,
            derived=extracted.derived,
            stream=extracted.stream,
        )
        for request_filter in self._chain:
            try:
                verdict = request_filter.on_request(ctx)
                if not isinstance(verdict, _VERDICTS):  # a filter that had to wait for I/O
                    verdict = await verdict
            except Exception:
                verdict = self._faulted(request_filter, ctx)
            if verdict is not CONTINUE:
                self._metrics.child(self._metrics.gateway_seconds, route.name).observe(time.perf_counter() - started)
                if isinstance(verdict, Reply):
                    self._metrics.child(self._metrics.requests, route.name, verdict.action).inc()
                    self._telemetry.finish(ctx, verdict.status, verdict.action)
                    return reply_response(verdict, request_id)
                assert isinstance(verdict, Refusal)
                self._telemetry.finish(ctx, verdict.status, verdict.action)
                return self._refuse(verdict, request_id, route.name)
        self._metrics.child(self._metrics.gateway_seconds, route.name).observe(time.perf_counter() - started)
        try:
            inspector = self._output.open(ctx)
        except Exception:
            self._metrics.filter_faults.labels(self._output.name).inc()
            log.exception("output scan could not start; refusing request %s", ctx.request_id)
            return self._refuse(FAULT, request_id, route.name)
        forwarded = ctx.body_override if ctx.body_override is not None else body
        self._telemetry.begin(ctx)
        status, response = await self._upstream.forward(request, ctx, forwarded, inspector)
        outcome = "proxied" if status < 500 else "upstream_error"
        if inspector is not None and inspector.action is not None:
            outcome = inspector.action
        self._metrics.child(self._metrics.requests, route.name, outcome).inc()
        self._telemetry.finish(ctx, status, outcome)
        return response

    def _faulted(self, request_filter: RequestFilter, ctx: RequestContext) -> Verdict:
        """A filter failed: fail closed."""
        self._metrics.filter_faults.labels(request_filter.name).inc()
        log.exception("filter %s failed; refusing request %s", request_filter.name, ctx.request_id)
        return FAULT

    def _refuse(self, refusal: Refusal, request_id: str, route: str) -> Response:
        self._metrics.child(self._metrics.requests, route, refusal.action).inc()
        return refusal_response(refusal, request_id)
