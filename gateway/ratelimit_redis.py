"""Fleet rate limiting: decisions are local, capacity is leased from Redis in batches.

Each replica runs the same GCRA as the embedded limiter (so no replica exceeds a limit's own rate
and burst), and on top of it spends *leases*: every `sync_interval`, one Lua call per replica settles,
for each bucket it used, the tokens it did not spend, and reserves a new lease sized to its recent
demand (twice the requests it saw) out of what the fleet has left in the bucket's sliding window
(the current window's count plus the previous one's, weighted by overlap). Leases are reserved
atomically, so the fleet cannot spend more than the limit — except for the first request a replica
sees for a bucket in a window, which it admits before it holds a lease (so a new caller never waits
for Redis): the fleet overshoots a limit by at most R requests per window (R = live replicas). A
replica whose lease runs out before its next sync answers 429 with `Retry-After: 1` until then.

When Redis cannot be reached, each replica admits its share of the limit, ⌊limit / R⌋ per window (R as
last seen), on its own, and leases resume when Redis answers: the fleet total stays near the limit
while Redis is away, and the outage neither blocks everyone nor lifts the limits.
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
IDLE_SECONDS = 120.0

# KEYS[1] = replicas zset; then per bucket: current-window key, previous-window key.
# ARGV = now_ms, replica, stale_ms, then per bucket: limit, overlap (0..1), returned, cold, want, ttl_ms.
_SYNC = """
local now, replica, stale = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, replica)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - stale)
local out = {redis.call('ZCARD', KEYS[1])}
local n = (#KEYS - 1) / 2
for i = 0, n - 1 do
  local current, previous = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local a = 4 + 6 * i
  local limit, overlap = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local returned, cold, want, ttl = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5]
  local count = tonumber(redis.call('GET', current) or '0') - returned + cold
  if count < 0 then count = 0 end
  local earlier = tonumber(redis.call('GET', previous) or '0')
  local available = limit - math.ceil(earlier * overlap) - count
  local lease = math.max(0, math.min(want, available))
  count = count + lease
  redis.call('SET', current, count, 'PX', ttl)
  out[#out + 1] = lease
end
return out
"""


@dataclass(slots=True)
class _Lease:
    window: int = -1
    tokens: int = 0  # leased from the fleet for `window`, not yet spent
    leased: bool = False  # whether this replica holds (or held) a lease in `window`
    cold: int = 0  # admitted before holding a lease: to be counted in Redis
    attempts: int = 0  # requests seen since the last sync (the demand signal)
    local_count: int = 0  # admitted in `window` while Redis was away
    used: float = 0.0  # monotonic time of last use


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
        self._client = client
        self._prefix = prefix
        self._replica = replica_id
        self._interval = sync_interval
        self._clock = clock
        self._local = MemoryRateLimiter()
        self._leases: dict[str, tuple[Bucket, _Lease]] = {}
        self._script = client.register_script(_SYNC)
        self.replicas = 1
        self.healthy = True

    # ----- the hot path: no I/O -----

    def acquire(self, buckets: Sequence[Bucket], now: float) -> Decision:
        wall = self._clock()
        states: list[_Lease] = []
        for bucket in buckets:
            if math.isinf(bucket.interval):
                return Decision(False, 0, 0, 60.0)
            entry = self._leases.get(bucket.key)
            state = entry[1] if entry is not None else _Lease()
            self._leases[bucket.key] = (bucket, state)
            self._roll(state, int(wall // bucket.window))
            state.attempts += 1
            state.used = now
            if not self._may_admit(bucket, state):
                return Decision(False, bucket.requests, 0, self._interval)
            states.append(state)
        decision = self._local.acquire(buckets, now)
        if decision.allowed:
            for state in states:
                self._spend(state)
        return decision

    @staticmethod
    def _roll(state: _Lease, window: int) -> None:
        if window != state.window:  # a lease never outlives its window
            state.window, state.tokens, state.leased, state.cold, state.local_count = window, 0, False, 0, 0

    def _may_admit(self, bucket: Bucket, state: _Lease) -> bool:
        if not self.healthy:
            return state.local_count < max(1, bucket.requests // max(1, self.replicas))
        return state.tokens > 0 or (not state.leased and state.cold == 0)

    def _spend(self, state: _Lease) -> None:
        if not self.healthy:
            state.local_count += 1
        elif state.tokens > 0:
            state.tokens -= 1
        else:
            state.cold += 1

    # ----- reconciliation -----

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.sync()

    async def sync(self) -> None:
        now = time.monotonic()
        wall = self._clock()
        active = [(key, b, s) for key, (b, s) in self._leases.items() if now - s.used < IDLE_SECONDS]
        self._leases = {key: (b, s) for key, b, s in active}
        keys = [self._prefix + "rl:replicas"]
        args: list[str | int | float] = [int(wall * 1000), self._replica, REPLICA_TTL_MS]
        asked: list[tuple[_Lease, int, int, int]] = []
        for key, bucket, state in active:
            window = int(wall // bucket.window)
            self._roll(state, window)
            want = min(bucket.requests, max(1, 2 * state.attempts)) if state.attempts else 0
            if not (want or state.tokens or state.cold):
                continue
            base = f"{self._prefix}rl:{key}:"
            keys += [f"{base}{window}", f"{base}{window - 1}"]
            overlap = 1 - (wall % bucket.window) / bucket.window
            returned = state.tokens if self.healthy else 0
            args += [bucket.requests, overlap, returned, state.cold, want, int(bucket.window * 2000) + 1000]
            asked.append((state, window, returned, state.cold))
        try:
            result = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            if self.healthy:
                log.warning("rate-limit sync failed (%s); each replica enforces its share locally", exc)
            self.healthy = False
            return
        if not self.healthy:
            log.info("rate-limit sync restored")
        self.healthy = True
        self.replicas = max(1, int(result[0]))
        for index, (state, window, returned, cold) in enumerate(asked):
            if state.window != window:
                continue  # the window rolled during the call: the grant belongs to the old one
            spent_meanwhile = returned - state.tokens  # tokens spent while the call was in flight
            state.tokens = max(0, int(result[1 + index]) - spent_meanwhile)
            state.cold -= cold
            state.leased = True
            state.attempts = 0
