"""Rate limiting: GCRA (the generic cell rate algorithm) behind a small protocol.

One number per bucket: the theoretical arrival time (TAT) of the next request. A request at time t
is admitted when TAT − t ≤ tolerance; admitting it moves TAT to max(TAT, t) + interval. The embedded
limiter keeps TATs in memory; the fleet limiter (Redis) implements the same protocol.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Protocol

MAX_BUCKETS = 200_000


class Bucket(NamedTuple):  # a tuple: built for every limit of every request, it must be cheap to make
    key: str
    requests: int  # the limit (after the throttle): per `window` seconds
    interval: float  # GCRA: seconds between requests at the sustained rate
    tolerance: float  # GCRA: seconds of burst
    window: float = 60.0  # the limit's per_seconds, for counting across a fleet


class Decision(NamedTuple):
    allowed: bool
    limit: int  # the tightest bucket's limit
    remaining: int
    retry_after: float  # seconds; 0 when allowed
    pending: bool = False  # undecided: `await limiter.lease(buckets)`, then ask again


class RateLimiter(Protocol):
    def acquire(self, buckets: Sequence[Bucket], now: float) -> Decision:
        """Admit one request against every bucket, or none: all-or-nothing. Never does I/O."""

    async def lease(self, buckets: Sequence[Bucket]) -> None:
        """Fetch what `acquire` said was pending (a no-op for limiters that never pend)."""


def share(bucket: Bucket, parts: int) -> Bucket:
    """1/parts of a limit: its rate and its burst divided (for one of `parts` worker processes)."""
    if parts <= 1 or math.isinf(bucket.interval):
        return bucket
    burst = max(1, math.floor((bucket.tolerance / bucket.interval + 1) / parts))
    interval = bucket.interval * parts
    return Bucket(bucket.key, bucket.requests, interval, interval * (burst - 1), bucket.window)


class MemoryRateLimiter:
    """Per-process GCRA state. Expired buckets are dropped when the table grows past MAX_BUCKETS.
    With `parts` > 1 (one of several worker processes on the embedded store) each limit is split evenly."""

    def __init__(self, max_buckets: int = MAX_BUCKETS, *, parts: int = 1) -> None:
        self._tat: dict[str, float] = {}
        self._max = max_buckets
        self._parts = parts

    def acquire(self, buckets: Sequence[Bucket], now: float) -> Decision:
        if self._parts > 1:
            buckets = [share(bucket, self._parts) for bucket in buckets]
        retry_after = 0.0
        limit, remaining = 0, math.inf
        planned: list[tuple[str, float]] = []
        for bucket in buckets:
            if math.isinf(bucket.interval):  # throttled to zero
                return Decision(False, 0, 0, 60.0)
            ahead = max(self._tat.get(bucket.key, now) - now, 0.0)  # how far the bucket's TAT runs ahead
            wait = ahead - bucket.tolerance
            if wait > 0:
                retry_after = max(retry_after, wait)
                continue
            new_tat = now + ahead + bucket.interval
            # Computed from `ahead`, not as new_tat - now: at clock values like 1e5 s that difference
            # is not exactly the interval, and a fresh bucket would report one request fewer left.
            left = math.floor((bucket.tolerance - ahead - bucket.interval) / bucket.interval + 1e-9) + 1
            if left < remaining:
                remaining, limit = float(left), bucket.requests
            planned.append((bucket.key, new_tat))
        if retry_after > 0:
            tightest = min(buckets, key=lambda b: b.requests)
            return Decision(False, tightest.requests, 0, retry_after)
        for key, new_tat in planned:
            self._tat[key] = new_tat
        if len(self._tat) > self._max:
            self._prune(now)
        return Decision(True, limit, max(0, int(remaining)) if buckets else 0, 0.0)

    async def lease(self, buckets: Sequence[Bucket]) -> None:
        return None

    def _prune(self, now: float) -> None:
        self._tat = {key: tat for key, tat in self._tat.items() if tat > now}
