"""Clean traffic's rate-limit cost while a flood of distinct keys arrives (issue 16, item 3).

    .venv/bin/python bench/ratelimit_flood.py            # 1,000,000 flood keys, one per clean decision
    .venv/bin/python bench/ratelimit_flood.py 200000     # fewer

100 clean keys take turns; between two clean decisions one request arrives from a key never seen
before (100 an hour, burst of 10: a flood bucket runs ahead for 36 s after its one request, so the whole
flood is live state, the worst case for the table). Reports decisions
per second, clean keys alone and during the flood (every decision counted), the table's size, and
how many buckets had to be dropped while still running ahead. The embedded limiter used to prune its
whole table on every request past 200,000 buckets: 200k random keys took a gateway from ~16k to 19 req/s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.ratelimit import Bucket, MemoryRateLimiter  # noqa: E402

CLEAN_KEYS = 100
LIMIT = Bucket("", 1_000_000, 6e-5, 60.0, 60.0)  # the clean callers' limit: never reached here
FLOOD = Bucket("", 100, 36.0, 324.0, 3600.0)


def rate(limiter: MemoryRateLimiter, decisions: int, flood: int) -> float:
    """Decisions per second: `decisions` clean ones, with `flood` distinct keys interleaved (their
    decisions count too, as a gateway's throughput counts every request)."""
    clean = [[LIMIT._replace(key=f"clean:{index}")] for index in range(CLEAN_KEYS)]
    keys = [[FLOOD._replace(key=f"flood:{index}")] for index in range(flood)]
    started = time.perf_counter()
    for index in range(decisions):
        if index < flood:
            limiter.acquire(keys[index], time.monotonic())
        limiter.acquire(clean[index % CLEAN_KEYS], time.monotonic())
    return (decisions + min(flood, decisions)) / (time.perf_counter() - started)


def main() -> None:
    flood = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    normal = rate(MemoryRateLimiter(), flood, 0)
    limiter = MemoryRateLimiter()
    started = time.perf_counter()
    flooded = rate(limiter, flood, flood)
    print(f"decisions/s, clean keys alone:      {normal:12,.0f}")
    print(f"decisions/s during the flood:       {flooded:12,.0f}  ({flooded / normal:.0%} of alone)")
    held = len(limiter) if hasattr(limiter, "__len__") else len(getattr(limiter, "_tat", ()))
    print(f"flood keys: {flood:,} in {time.perf_counter() - started:.1f} s; buckets held at the end: {held:,}")
    print(f"buckets dropped while running ahead: {getattr(limiter, 'evicted_live', 'n/a')}")


if __name__ == "__main__":
    main()
