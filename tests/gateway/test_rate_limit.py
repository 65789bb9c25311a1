"""GCRA rate limits per key/tenant/ip/global, scoped by route or model, with burst and a global throttle."""

from __future__ import annotations

import hashlib
from typing import Any

from gateway.ratelimit import Bucket, MemoryRateLimiter
from tests.conftest import Stack, StackFactory, chat


def test_gcra_burst_then_steady_rate() -> None:
    limiter = MemoryRateLimiter()
    bucket = Bucket("k", requests=10, interval=1.0, tolerance=2.0)  # 1/s, burst of 3
    decisions = [limiter.acquire([bucket], 100.0) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert decisions[3].retry_after == 1.0
    assert limiter.acquire([bucket], 101.0).allowed
    assert not limiter.acquire([bucket], 101.0).allowed


def test_all_or_nothing_across_buckets() -> None:
    limiter = MemoryRateLimiter()
    roomy = Bucket("roomy", 100, 0.01, 1.0)
    tight = Bucket("tight", 1, 10.0, 0.0)
    assert limiter.acquire([roomy, tight], 0.0).allowed
    before = limiter.tat(roomy)
    assert not limiter.acquire([roomy, tight], 0.0).allowed
    assert limiter.tat(roomy) == before  # the refused request charged nothing


def test_one_of_several_workers_enforces_its_share() -> None:
    """With --workers 2 on the embedded store, each process admits half the rate and half the burst."""
    limiter = MemoryRateLimiter(parts=2)
    bucket = Bucket("k", requests=10, interval=6.0, tolerance=54.0)  # 10 a minute, burst of 10
    decisions = [limiter.acquire([bucket], 1000.0) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert decisions[5].retry_after == 12.0  # one every 12 s: 5 a minute
    assert limiter.acquire([bucket], 1012.0).allowed
    assert not limiter.acquire([bucket], 1012.0).allowed
    assert not MemoryRateLimiter(parts=2).acquire([Bucket("z", 0, float("inf"), 0.0)], 0.0).allowed


def test_zero_throttle_admits_nothing() -> None:
    decision = MemoryRateLimiter().acquire([Bucket("k", 0, float("inf"), 0.0)], 0.0)
    assert not decision.allowed and decision.retry_after > 0


def test_expired_buckets_are_pruned() -> None:
    limiter = MemoryRateLimiter(max_buckets=10)
    for index in range(20):
        limiter.acquire([Bucket(f"k{index}", 1, 0.001, 0.0)], float(index))
    assert len(limiter) <= 2  # each one full again by the next: dropped as the next arrives
    assert limiter.evicted_live == 0


def test_buckets_full_again_are_dropped_in_constant_time_per_request() -> None:
    """A flood of distinct keys is shed as it arrives: the table holds only the buckets still running
    ahead, and a request never walks the table (issue 16: `_prune` was O(n) per request)."""
    limiter = MemoryRateLimiter(max_buckets=1_000_000)
    bucket = Bucket("", 60, 1.0, 9.0)  # 60 a minute, burst of 10: a bucket is full again 1 s after one request
    for index in range(50_000):
        now = index / 10_000  # 10k distinct keys a second
        assert limiter.acquire([bucket._replace(key=f"flood:{index}")], now).allowed
    assert len(limiter) <= 10_001  # one second of keys, not 50k
    assert limiter.evicted_live == 0


def test_past_the_bound_the_least_recently_charged_bucket_goes_and_is_counted() -> None:
    limiter = MemoryRateLimiter(max_buckets=100)
    hourly = Bucket("", 1, 3600.0, 0.0)
    victim = hourly._replace(key="victim")
    assert limiter.acquire([victim], 0.0).allowed
    assert not limiter.acquire([victim], 1.0).allowed
    for index in range(100):
        limiter.acquire([hourly._replace(key=f"flood:{index}")], 2.0)
    assert len(limiter) == 100
    assert limiter.evicted_live == 1 and limiter.tat(victim) is None


def test_shapes_do_not_hold_each_other_up() -> None:
    """A slow limit's buckets (1 an hour) never keep a fast limit's full buckets in memory."""
    limiter = MemoryRateLimiter()
    limiter.acquire([Bucket("slow", 1, 3600.0, 0.0)], 0.0)
    for index in range(1000):
        limiter.acquire([Bucket(f"fast:{index}", 60, 1.0, 0.0)], float(index))
    assert len(limiter) <= 3


async def _post(stack: Stack, key: str = "sk-a", model: str = "m", path: str = "/v1/chat/completions") -> Any:
    return await stack.gateway.post(path, json=chat("hi", model=model), headers={"Authorization": f"Bearer {key}"})


async def test_per_key_limit_answers_429_with_headers(stack: Stack) -> None:
    await stack.put("/v1/ratelimits", {"limits": [{"subject": "key", "requests": 2, "per_seconds": 60}]})
    first = await _post(stack)
    assert first.status == 200
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert (await _post(stack)).status == 200
    refused = await _post(stack)
    assert refused.status == 429
    body = await refused.json()
    assert body["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 29
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert (await _post(stack, key="sk-b")).status == 200


async def test_scoped_to_a_model_and_a_route(stack: Stack) -> None:
    await stack.put(
        "/v1/ratelimits",
        {
            "limits": [
                {"subject": "global", "model": "big", "requests": 1, "per_seconds": 60},
                {"subject": "ip", "route": "other", "requests": 1, "per_seconds": 60},
            ]
        },
    )
    assert (await _post(stack, model="big")).status == 200
    assert (await _post(stack, key="sk-z", model="big")).status == 429
    for _ in range(3):
        assert (await _post(stack, model="small")).status == 200


async def test_tenant_limit_is_shared_by_the_tenants_keys(make_stack: StackFactory) -> None:
    ids = {key: hashlib.sha256(key.encode()).hexdigest()[:16] for key in ("sk-1", "sk-2")}
    stack = await make_stack(tenants={ids["sk-1"]: "acme", ids["sk-2"]: "acme"})
    await stack.put("/v1/ratelimits", {"limits": [{"subject": "tenant", "requests": 1, "per_seconds": 60}]})
    assert (await _post(stack, key="sk-1")).status == 200
    assert (await _post(stack, key="sk-2")).status == 429


async def test_throttle_cuts_every_limit(stack: Stack) -> None:
    await stack.put(
        "/v1/ratelimits", {"limits": [{"subject": "key", "requests": 4, "per_seconds": 60}], "throttle": 0.5}
    )
    statuses = [(await _post(stack)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    await stack.put("/v1/ratelimits", {"limits": [{"subject": "key", "requests": 4, "per_seconds": 60}], "throttle": 0})
    assert (await _post(stack, key="sk-fresh")).status == 429


def test_a_fresh_bucket_reports_its_burst_less_one_at_any_clock_value() -> None:
    # A monotonic clock reads like 998.6 s: (now + 30) - now is not always 30.0 in floating point, and
    # at these readings the remaining count used to come out one short.
    for now in (998.6088878263243, 32753.171527937662, 262136.4223085183, 12345.678):
        decision = MemoryRateLimiter().acquire([Bucket("k", 2, 30.0, 30.0)], now)
        assert decision.allowed and decision.remaining == 1, now
