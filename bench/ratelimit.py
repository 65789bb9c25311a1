"""Rate-limiter cost per request: the embedded GCRA against the fleet limiter (leases from Redis).

    .venv/bin/python bench/ratelimit.py        # 200,000 decisions over 1,000 keys; starts its own redis-server

Measures process CPU time per decision, including the fleet limiter's background reconciliation
(one Lua call every 100 ms) — the hot path itself never waits for Redis.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import start_redis  # noqa: E402
from gateway.ratelimit import Bucket, MemoryRateLimiter  # noqa: E402
from gateway.ratelimit_redis import FleetRateLimiter  # noqa: E402
from rules.redis_client import connect  # noqa: E402

DECISIONS = 200_000
KEYS = 1_000


def buckets() -> list[list[Bucket]]:
    # 600 requests per minute per key, burst 600: nearly every decision is an admit (the common case).
    return [[Bucket(f"bench:{k}", 600, 0.1, 59.9, 60.0)] for k in range(KEYS)]


async def drive(limiter: MemoryRateLimiter | FleetRateLimiter) -> tuple[float, int, int]:
    work = buckets()
    admitted = waited = 0
    cpu = time.process_time()
    for index in range(DECISIONS):
        chosen = work[index % KEYS]
        decision = limiter.acquire(chosen, time.monotonic())
        if decision.pending:  # the cold path, as the rate-limit filter takes it
            waited += 1
            await limiter.lease(chosen)
            decision = limiter.acquire(chosen, time.monotonic())
        admitted += decision.allowed
        if index % 2000 == 0:
            await asyncio.sleep(0)  # let the reconciliation task run, as the event loop would
    return (time.process_time() - cpu) / DECISIONS * 1e6, admitted, waited


async def main(redis_port: int) -> None:
    memory_us, memory_ok, _ = await drive(MemoryRateLimiter())
    client = connect(f"redis://127.0.0.1:{redis_port}/0", timeout=0.5)
    fleet = FleetRateLimiter(client, prefix="{bench}:", replica_id="bench")
    syncer = asyncio.create_task(fleet.run())
    await fleet.sync()
    fleet_us, fleet_ok, fleet_waited = await drive(fleet)
    syncer.cancel()
    await client.aclose()
    print(f"{DECISIONS:,} decisions over {KEYS:,} keys")
    print()
    print("| limiter | CPU µs per decision | admitted | decisions that waited for a lease |")
    print("|---|---:|---:|---:|")
    print(f"| embedded (in-memory GCRA) | {memory_us:.2f} | {memory_ok:,} | 0 |")
    print(f"| fleet (GCRA + Redis leases, renewed every 100 ms) | {fleet_us:.2f} | {fleet_ok:,} | {fleet_waited:,} |")


if __name__ == "__main__":
    redis_server, redis_port = start_redis()
    try:
        asyncio.run(main(redis_port))
    finally:
        redis_server.terminate()
