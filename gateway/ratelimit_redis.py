"""Fleet rate limiting: capacity is leased from Redis; decisions are made locally from the lease.

Each replica runs the same GCRA as the embedded limiter (so no replica exceeds a limit's own rate
and burst) and, on top of it, spends tokens it has *leased* from the fleet-wide count of the bucket's
sliding window (the current window's count plus the previous one's, weighted by overlap). A Lua script
reserves leases atomically, so the fleet as a whole cannot admit more than the limit.

- Hot path: a replica holding tokens for a bucket decides without I/O.
- Cold path: a replica without tokens (the first request of a caller, or a lease spent) asks Redis for
  a lease right then — one round trip, shared by concurrent requests for the same bucket — and decides
  when it arrives. Only a bucket the fleet has exhausted is refused (429).
- Every `sync_interval` one Lua call per replica renews the leases of buckets in use (unspent tokens
  back, then a fair share of what is left, (limit − count) / R, or twice the recent demand if more),
  gives back leases unused for a second, and heartbeats (R = live replicas). Capacity leased but unused
  can thus sit idle for up to a second before another replica may have it.

The one slack: tokens spent while a renewal is in flight are charged to the new lease; if that lease
is smaller, the difference is admitted over the limit — a few requests, only at the moment a bucket
runs out. When Redis cannot be reached, each replica admits its share of the limit, ⌊limit / R⌋ per
window (R as last seen), on its own, and leasing resumes when Redis answers.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.ratelimit import Bucket, Decision, MemoryRateLimiter

log = logging.getLogger(__name__)

REPLICA_TTL_MS = 5_000
IDLE_SECONDS = 120.0  # a bucket unused this long is forgotten
HOLD_SECONDS = 1.0  # a lease unused this long goes back to the fleet

# KEYS[1] = replicas zset; then per bucket: current-window key, previous-window key.
# ARGV = now_ms, replica, stale_ms, then per bucket: limit, overlap (0..1), returned, want, ttl_ms.
_LEASE = """
local now, replica, stale = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, replica)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - stale)
local replicas = math.max(redis.call('ZCARD', KEYS[1]), 1)
local out = {replicas}
local n = (#KEYS - 1) / 2
for i = 0, n - 1 do
  local current, previous = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local a = 4 + 5 * i
  local limit, overlap = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local returned, want, ttl = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), ARGV[a + 4]
  local count = math.max(0, tonumber(redis.call('GET', current) or '0') - returned)
  local available = limit - math.ceil(tonumber(redis.call('GET', previous) or '0') * overlap) - count
  local lease = 0
  if want > 0 and available > 0 then
    lease = math.min(available, math.max(want, math.ceil(available / replicas)))
  end
  redis.call('SET', current, count + lease, 'PX', ttl)
  out[#out + 1] = lease
end
return out
"""


@dataclass(slots=True)
class _Lease:
    window: int = -1
    tokens: int = 0  # leased from the fleet for `window`, not yet spent
    exhausted: bool = False  # the fleet had nothing left at the last lease (until the next renewal)
    attempts: int = 0  # requests seen since the last renewal (the demand signal)
    local_count: int = 0  # admitted in `window` while Redis was away
    used: float = 0.0  # monotonic time of last use
    inflight: asyncio.Future[None] | None = None


class FleetRateLimiter:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        replica_id: str,
        sync_interval: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._prefix = prefix
        self._replica = replica_id
        self._interval = sync_interval
        self._clock = clock
        self._local = MemoryRateLimiter()
        self._leases: dict[str, tuple[Bucket, _Lease]] = {}
        self._script = client.register_script(_LEASE)
        self.replicas = 1
        self.healthy = True

    # ----- deciding -----

    def acquire(self, buckets: Sequence[Bucket], now: float) -> Decision:
        """Decide from the leases held; `pending` when a bucket needs a lease first (see `lease`)."""
        wall = self._clock()
        states: list[_Lease] = []
        for bucket in buckets:
            if math.isinf(bucket.interval):
                return Decision(False, 0, 0, 60.0)
            state = self._state(bucket, wall, now)
            if not self.healthy:
                if state.local_count >= max(1, bucket.requests // self.replicas):
                    return Decision(False, bucket.requests, 0, bucket.window - wall % bucket.window)
            elif state.tokens <= 0:
                if state.exhausted:
                    return Decision(False, bucket.requests, 0, max(self._interval, 1.0))
                return Decision(False, bucket.requests, 0, 0.0, pending=True)
            states.append(state)
        decision = self._local.acquire(buckets, now)
        if decision.allowed:
            for state in states:
                if self.healthy:
                    state.tokens -= 1
                else:
                    state.local_count += 1
        return decision

    def _state(self, bucket: Bucket, wall: float, now: float) -> _Lease:
        entry = self._leases.get(bucket.key)
        state = entry[1] if entry is not None else _Lease()
        self._leases[bucket.key] = (bucket, state)
        window = int(wall // bucket.window)
        if window != state.window:  # a lease never outlives its window
            state.window, state.tokens, state.exhausted, state.local_count = window, 0, False, 0
        state.attempts += 1
        state.used = now
        return state

    async def lease(self, buckets: Sequence[Bucket]) -> None:
        """Lease tokens now for the buckets that have none (one request in flight per bucket)."""
        waiting: list[asyncio.Future[None]] = []
        asking: list[tuple[Bucket, _Lease]] = []
        for bucket in buckets:
            entry = self._leases.get(bucket.key)
            if entry is None or entry[1].tokens > 0:
                continue
            state = entry[1]
            if state.inflight is not None:
                waiting.append(state.inflight)
            else:
                state.inflight = asyncio.get_running_loop().create_future()
                asking.append((bucket, state))
        try:
            if asking:
                await self._call([(bucket, state, 0) for bucket, state in asking])
        finally:
            for _, state in asking:
                if state.inflight is not None and not state.inflight.done():
                    state.inflight.set_result(None)
                state.inflight = None
        if waiting:
            await asyncio.gather(*waiting)

    # ----- talking to Redis -----

    async def run(self) -> None:
        task = asyncio.current_task()
        while task is None or not task.cancelling():
            await asyncio.sleep(self._interval)
            await self.sync()

    async def sync(self) -> None:
        """Renew leases of buckets in use, give back leases unused for HOLD_SECONDS, heartbeat."""
        now = time.monotonic()
        self._leases = {k: v for k, v in self._leases.items() if now - v[1].used < IDLE_SECONDS}
        asking = [
            (bucket, state, state.tokens)
            for bucket, state in self._leases.values()
            if state.inflight is None and (state.attempts or (state.tokens and now - state.used > HOLD_SECONDS))
        ]
        await self._call(asking)

    async def _call(self, asking: list[tuple[Bucket, _Lease, int]]) -> None:
        wall = self._clock()
        keys = [self._prefix + "rl:replicas"]
        args: list[str | int | float] = [int(wall * 1000), self._replica, REPLICA_TTL_MS]
        sent: list[tuple[_Lease, int, int, int]] = []
        for bucket, state, returned in asking:
            window = int(wall // bucket.window)
            if window != state.window:
                continue
            base = f"{self._prefix}rl:{bucket.key}:"
            keys += [f"{base}{window}", f"{base}{window - 1}"]
            want = min(bucket.requests, 2 * state.attempts) if state.attempts else 0
            overlap = 1 - (wall % bucket.window) / bucket.window
            args += [bucket.requests, overlap, returned if self.healthy else 0, want, int(bucket.window * 2000) + 1000]
            sent.append((state, window, returned, want))
        try:
            result = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            if self.healthy:
                log.warning("rate-limit leasing failed (%s); each replica enforces its share locally", exc)
            self.healthy = False
            return
        if not self.healthy:
            log.info("rate-limit leasing restored")
        self.healthy = True
        self.replicas = max(1, int(result[0]))
        for index, (state, window, returned, want) in enumerate(sent):
            if state.window != window:
                continue  # the window rolled during the call: the grant belongs to the old one
            spent_meanwhile = returned - state.tokens  # spent while the call was in flight
            granted = int(result[1 + index])
            state.tokens = max(0, granted - spent_meanwhile)
            state.exhausted = want > 0 and granted == 0
            state.attempts = 0
