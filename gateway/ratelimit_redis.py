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

**Recovery.** When Redis answers again, the first replica to renew must not take the whole limit, or
the others find it exhausted and refuse (a false 429): so demand is counted per renewal attempt (a failed
call starts the count again; an outage is not "demand"), and for REPLICA_TTL_MS after recovery the fair
share divides by at least the R seen before the outage (a restarted Redis has no heartbeats yet, and
after 5 s of outage the old ones have expired: R would read 1). The first renewal after recovery gives
back the tokens held since before the outage, less what was admitted locally meanwhile (charged instead).

**Bounded state.** Lease states are kept in LRU order, at most `max_leases` of them (the least recently
used is given back and dropped past it); a renewal asks only for the buckets used since the last one,
and each sync looks at no more than SWEEP_LIMIT of the least recently used for leases to give back and
states to forget, so neither memory nor a sync grows with a flood of distinct keys.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from gateway.ratelimit import Bucket, Decision, MemoryRateLimiter

log = logging.getLogger(__name__)

REPLICA_TTL_MS = 5_000
IDLE_SECONDS = 120.0  # a bucket unused this long is forgotten
HOLD_SECONDS = 1.0  # a lease unused this long goes back to the fleet
MAX_LEASES = 100_000  # lease states kept per replica (least recently used dropped past it)
SWEEP_LIMIT = 2_000  # least recently used states a sync looks at

# KEYS[1] = replicas zset; then per bucket: current-window key, previous-window key.
# ARGV = now_ms, replica, stale_ms, replicas_floor, then per bucket: limit, overlap (0..1), returned, want,
# ttl_ms. `returned` may be negative: requests admitted locally while Redis was away, charged.
_LEASE = """
local now, replica, stale = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now, replica)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - stale)
local replicas = math.max(redis.call('ZCARD', KEYS[1]), tonumber(ARGV[4]), 1)
local out = {replicas}
local n = (#KEYS - 1) / 2
for i = 0, n - 1 do
  local current, previous = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local a = 5 + 5 * i
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
    charged: int = 0  # of `local_count`, how many Redis has been told of
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
        max_leases: int = MAX_LEASES,
    ) -> None:
        self._prefix = prefix
        self._replica = replica_id
        self._interval = sync_interval
        self._clock = clock
        self._local = MemoryRateLimiter()
        self._leases: OrderedDict[str, tuple[Bucket, _Lease]] = OrderedDict()  # least recently used first
        self._active: dict[str, tuple[Bucket, _Lease]] = {}  # used since the last renewal
        self._dropped: list[tuple[Bucket, _Lease]] = []  # dropped while holding tokens: given back next sync
        self._max = max_leases
        self._script = client.register_script(_LEASE)
        self.replicas = 1
        self.healthy = True
        self._before_outage = 1  # R when Redis was last reached before an outage
        self._recovered_at = -math.inf  # monotonic time Redis answered again after an outage

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
        if entry is None:
            state = _Lease()
            self._leases[bucket.key] = (bucket, state)
            if len(self._leases) > self._max:
                self._drop(*self._leases.popitem(last=False)[1])
        else:
            state = entry[1]
            self._leases[bucket.key] = (bucket, state)  # the limit may have changed
            self._leases.move_to_end(bucket.key)
        window = int(wall // bucket.window)
        if window != state.window:  # a lease never outlives its window
            state.window, state.tokens, state.exhausted, state.local_count, state.charged = window, 0, False, 0, 0
        state.attempts += 1
        state.used = now
        self._active[bucket.key] = (bucket, state)
        return state

    def _drop(self, bucket: Bucket, state: _Lease) -> None:
        if state.tokens > 0 or state.local_count > state.charged:
            self._dropped.append((bucket, state))  # its tokens go back (its local admissions are charged)

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
                await self._call(asking)
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
        """Renew leases of buckets used since the last renewal; give back leases unused for HOLD_SECONDS
        and forget idle states (looking at SWEEP_LIMIT of the least recently used at most); heartbeat."""
        now = time.monotonic()
        active, self._active = self._active, {}
        asking = [(bucket, state) for bucket, state in active.values() if state.inflight is None]
        asking += self._dropped
        self._dropped = []
        for _ in range(min(SWEEP_LIMIT, len(self._leases))):
            key, (bucket, state) = next(iter(self._leases.items()))
            idle = now - state.used
            if idle < HOLD_SECONDS:
                break
            if state.tokens > 0 and state.inflight is None:
                if key not in active:
                    asking.append((bucket, state))  # unused for a second: back to the fleet
                self._leases.move_to_end(key)
            elif state.inflight is not None or (state.local_count > 0 and idle < IDLE_SECONDS):
                self._leases.move_to_end(key)  # still counts for this replica's local share
            else:
                del self._leases[key]
        await self._call(asking)

    async def _call(self, asking: Sequence[tuple[Bucket, _Lease]]) -> None:
        wall = self._clock()
        now = time.monotonic()
        floor = self._before_outage if now - self._recovered_at < REPLICA_TTL_MS / 1000 or not self.healthy else 1
        keys = [self._prefix + "rl:replicas"]
        args: list[str | int | float] = [int(wall * 1000), self._replica, REPLICA_TTL_MS, floor]
        sent: list[tuple[_Lease, int, int, int, int]] = []
        for bucket, state in asking:
            window = int(wall // bucket.window)
            if window != state.window:
                continue
            base = f"{self._prefix}rl:{bucket.key}:"
            keys += [f"{base}{window}", f"{base}{window - 1}"]
            want = min(bucket.requests, 2 * state.attempts) if state.attempts else 0
            overlap = 1 - (wall % bucket.window) / bucket.window
            held, local = state.tokens, state.local_count
            # Unspent tokens go back; requests admitted locally while Redis was away are charged.
            args += [bucket.requests, overlap, held - (local - state.charged), want, int(bucket.window * 2000) + 1000]
            sent.append((state, window, held, local, want))
        try:
            result = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            if self.healthy:
                log.warning("rate-limit leasing failed (%s); each replica enforces its share locally", exc)
                self._before_outage = self.replicas
            self.healthy = False
            for state, *_ in sent:
                state.attempts = 0  # demand is counted per renewal: an outage is not demand
            return
        if not self.healthy:
            log.info("rate-limit leasing restored")
            self._recovered_at = now
        self.healthy = True
        self.replicas = max(1, int(result[0]))
        for index, (state, window, held, local, want) in enumerate(sent):
            if state.window != window:
                continue  # the window rolled during the call: the grant belongs to the old one
            spent_meanwhile = held - state.tokens  # spent while the call was in flight
            granted = int(result[1 + index])
            state.tokens = max(0, granted - spent_meanwhile)
            state.exhausted = want > 0 and granted == 0
            state.attempts = 0
            state.charged = local
