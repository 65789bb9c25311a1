"""Rate limiting: GCRA (the generic cell rate algorithm) behind a small protocol.

One number per bucket: the theoretical arrival time (TAT) of the next request. A request at time t
is admitted when TAT − t ≤ tolerance; admitting it moves TAT to max(TAT, t) + interval. The embedded
limiter keeps TATs in memory; the fleet limiter (Redis) implements the same protocol.

Memory is bounded and eviction is O(1): buckets are kept in one insertion-ordered table per limit shape
(interval, tolerance), a bucket moved to the end whenever it is charged. Within one shape the front is
the bucket charged longest ago, so it is the first to be full again (TAT ≤ now) — and a bucket full again
holds nothing a fresh one would not: dropping it is exact. Each admitted request drops up to two such
buckets from the front of its table, so a flood of distinct keys is shed as fast as it arrives, never by a
pass over the whole table. Past `max_buckets` (a flood faster than buckets refill), the bucket charged
longest ago in the largest shape's table (the flood's) is dropped even though it still runs ahead, and
counted in `evicted_live`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple, Protocol

MAX_BUCKETS = 500_000  # about 100 MB at most: see docs/configuration.md
DROP_PER_REQUEST = 2  # buckets full again dropped per admitted request (more than one keeps the table shrinking)


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
    """Per-process GCRA state, bounded (see the module's docstring). With `parts` > 1 (one of several
    worker processes on the embedded store) each limit is split evenly."""

    def __init__(self, max_buckets: int = MAX_BUCKETS, *, parts: int = 1) -> None:
        self._tables: dict[tuple[float, float], OrderedDict[str, float]] = {}
        self._size = 0
        self._max = max_buckets
        self._parts = parts
        self.evicted_live = 0  # buckets dropped at the bound while still running ahead

    def __len__(self) -> int:
        return self._size

    def tat(self, bucket: Bucket) -> float | None:
        """The bucket's theoretical arrival time, if it is held."""
        table = self._tables.get((bucket.interval, bucket.tolerance))
        return None if table is None else table.get(bucket.key)

    def acquire(self, buckets: Sequence[Bucket], now: float) -> Decision:
        if self._parts > 1:
            buckets = [share(bucket, self._parts) for bucket in buckets]
        retry_after = 0.0
        limit, remaining = 0, math.inf
        planned: list[tuple[Bucket, float]] = []
        for bucket in buckets:
            if math.isinf(bucket.interval):  # throttled to zero
                return Decision(False, 0, 0, 60.0)
            table = self._tables.get((bucket.interval, bucket.tolerance))
            tat = now if table is None else table.get(bucket.key, now)
            ahead = max(tat - now, 0.0)  # how far the bucket's TAT runs ahead
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
            planned.append((bucket, new_tat))
        if retry_after > 0:
            tightest = min(buckets, key=lambda b: b.requests)
            return Decision(False, tightest.requests, 0, retry_after)
        for bucket, new_tat in planned:
            self._store(bucket, new_tat, now)
        return Decision(True, limit, max(0, int(remaining)) if buckets else 0, 0.0)

    def _store(self, bucket: Bucket, tat: float, now: float) -> None:
        shape = (bucket.interval, bucket.tolerance)
        table = self._tables.get(shape)
        if table is None:
            table = self._tables[shape] = OrderedDict()
        if bucket.key in table:
            table.move_to_end(bucket.key)
        else:
            self._size += 1
        table[bucket.key] = tat
        for _ in range(DROP_PER_REQUEST):  # the front is the first to be full again
            first = next(iter(table), None)
            if first is None or table[first] > now:
                break
            del table[first]
            self._size -= 1
        if self._size > self._max:  # from the largest table (a flood's), never a quiet shape's
            largest = max(self._tables.values(), key=len)
            largest.popitem(last=False)
            self._size -= 1
            self.evicted_live += 1

    async def lease(self, buckets: Sequence[Bucket]) -> None:
        return None
