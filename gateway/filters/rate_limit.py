"""Rate limit: every limit of the policy that covers the request (its route and model) is charged for
its subject — the key id, the tenant, the client IP, or all traffic; callers without a key (or tenant)
share one bucket. One limit exhausted answers 429 `rate_limited` with `Retry-After`,
`X-RateLimit-Limit` and `X-RateLimit-Remaining`; admitted answers carry the two X-RateLimit headers.
Runs after access, before the input scan. Decides without I/O, except a fleet limiter's cold path (a
caller's first request on this replica), which awaits one Redis round trip for a lease. Fails closed
(the chain runner answers 503).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable

from gateway.context import RequestContext
from gateway.ratelimit import Bucket, Decision, RateLimiter
from gateway.verdict import CONTINUE, Refusal, Verdict
from rules.compile import CompiledLimit

ANONYMOUS = "-"


def _subject(limit: CompiledLimit, ctx: RequestContext) -> str:
    subject = limit.subject
    if subject == "key":
        return ctx.identity.key_id or ANONYMOUS
    if subject == "tenant":
        return ctx.identity.tenant or ANONYMOUS
    if subject == "ip":
        return ctx.identity.client_ip or ANONYMOUS
    return "all"


class RateLimitFilter:
    name = "rate_limit"

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    def on_request(self, ctx: RequestContext) -> Verdict | Awaitable[Verdict]:
        limits = ctx.snapshot.limits
        if not limits:
            return CONTINUE
        route, model = ctx.route.name, ctx.model
        buckets = [
            Bucket(f"{limit.key}:{_subject(limit, ctx)}", limit.requests, limit.interval, limit.tolerance, limit.window)
            for limit in limits
            if (limit.route is None or limit.route == route) and (limit.model is None or limit.model == model)
        ]
        if not buckets:
            return CONTINUE
        decision = self._limiter.acquire(buckets, time.monotonic())
        if decision.pending:
            return self._after_lease(buckets, ctx)
        return self._verdict(decision, ctx)

    async def _after_lease(self, buckets: list[Bucket], ctx: RequestContext) -> Verdict:
        """The cold path of a fleet limiter: one Redis round trip for a lease, then decide."""
        await self._limiter.lease(buckets)
        decision = self._limiter.acquire(buckets, time.monotonic())
        if decision.pending:  # still nothing: the fleet is busy or Redis is away; do not wait longer
            decision = Decision(False, decision.limit, 0, 1.0)
        return self._verdict(decision, ctx)

    def _verdict(self, decision: Decision, ctx: RequestContext) -> Verdict:
        if decision.allowed:
            answer = ctx.response_headers
            answer["X-RateLimit-Limit"] = str(decision.limit)
            answer["X-RateLimit-Remaining"] = str(decision.remaining)
            return CONTINUE
        headers = {"X-RateLimit-Limit": str(decision.limit), "X-RateLimit-Remaining": str(decision.remaining)}
        return Refusal(
            status=429,
            code="rate_limited",
            type="rate_limit_error",
            message="Too many requests; retry later.",
            action="rate_limited",
            headers=headers | {"Retry-After": str(max(1, math.ceil(decision.retry_after)))},
        )
