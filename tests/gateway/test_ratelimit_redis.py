"""Fleet rate limits across replicas on a real Redis: the total stays within the documented margin."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as redis

from gateway.ratelimit import Bucket
from gateway.ratelimit_redis import FleetRateLimiter
from rules.redis_client import connect
from tests.redis_server import RedisServer

WINDOW = 20.0


def _clock() -> Callable[[], float]:
    """Wall time that starts 1 s into a fresh window, so a test run stays inside one window."""
    base = (time.time() // WINDOW + 1) * WINDOW + 1.0
    started = time.monotonic()
    return lambda: base + (time.monotonic() - started)


async def admit(limiter: FleetRateLimiter, bucket: Bucket) -> bool:
    """One decision as the rate-limit filter makes it: with a lease fetched on the cold path."""
    decision = limiter.acquire([bucket], time.monotonic())
    if decision.pending:
        await limiter.lease([bucket])
        decision = limiter.acquire([bucket], time.monotonic())
    return decision.allowed


def _bucket(limit: int) -> Bucket:
    interval = WINDOW / limit
    return Bucket("test:key:k1", limit, interval, interval * (limit - 1), WINDOW)


Replicas = Callable[[str, int, Callable[[], float]], Awaitable[list[FleetRateLimiter]]]


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    clients: list[redis.Redis] = []

    async def make(url: str, count: int, clock: Callable[[], float]) -> list[FleetRateLimiter]:
        limiters = []
        for index in range(count):
            client: redis.Redis = connect(url, timeout=0.3)
            clients.append(client)
            limiters.append(
                FleetRateLimiter(client, prefix="{t}:", replica_id=f"r{index}", sync_interval=0.05, clock=clock)
            )
        for limiter in limiters:
            await limiter.sync()  # heartbeats: every replica knows R
        for limiter in limiters:
            await limiter.sync()
        return limiters

    yield make
    for client in clients:
        with contextlib.suppress(Exception):
            await client.aclose()


async def test_fleet_total_never_exceeds_the_limit_by_more_than_replicas(
    redis_server: RedisServer, replicas: Replicas
) -> None:
    clock = _clock()
    limiters = await replicas(redis_server.url, 3, clock)
    assert [limiter.replicas for limiter in limiters] == [3, 3, 3]
    tasks = [asyncio.create_task(limiter.run()) for limiter in limiters]
    bucket = _bucket(60)
    admitted = 0
    rng = random.Random(5)
    deadline = time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline:
            limiter = rng.choice(limiters)
            if await admit(limiter, bucket):
                admitted += 1
            await asyncio.sleep(0.0005)
    finally:
        for task in tasks:
            task.cancel()
    assert 60 - 3 <= admitted <= 60, admitted  # leases are reserved: the fleet never goes over


async def test_one_replica_alone_gets_the_whole_limit(redis_server: RedisServer, replicas: Replicas) -> None:
    clock = _clock()
    (limiter,) = await replicas(redis_server.url, 1, clock)
    task = asyncio.create_task(limiter.run())
    bucket = _bucket(30)
    admitted = 0
    deadline = time.monotonic() + 1.0
    try:
        while time.monotonic() < deadline:
            admitted += await admit(limiter, bucket)
            await asyncio.sleep(0.001)
    finally:
        task.cancel()
    assert admitted == 30


async def test_a_burst_on_a_new_key_is_not_refused_while_the_fleet_has_room(
    redis_server: RedisServer, replicas: Replicas
) -> None:
    limiters = await replicas(redis_server.url, 2, _clock())
    bucket = _bucket(100)
    results = await asyncio.gather(*(admit(limiters[0], bucket) for _ in range(30)))
    assert all(results)  # concurrent cold requests share one lease call and are all admitted


async def test_without_redis_each_replica_admits_its_share(redis_server: RedisServer, replicas: Replicas) -> None:
    clock = _clock()
    limiters = await replicas(redis_server.url, 2, clock)
    redis_server.stop()
    for limiter in limiters:
        await limiter.sync()
        assert not limiter.healthy
    bucket = _bucket(40)
    counts = [sum([await admit(limiter, bucket) for _ in range(100)]) for limiter in limiters]
    assert counts == [20, 20]  # 40 / R=2 each: the fleet total stays at the limit
