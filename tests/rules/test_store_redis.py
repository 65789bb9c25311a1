"""The Redis store across replicas and through faults, against real redis-server processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as redis

from rules.model import Policy
from rules.store import StoreUnavailable
from rules.store_redis import RedisStore
from tests.redis_server import RedisServer
from tests.rules.test_store_contract import add, engage

Opener = Callable[..., "asyncio.Future[RedisStore]"]


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    opened: list[RedisStore] = []

    async def open_replica(url: str, name: str) -> RedisStore:
        store = RedisStore(url, cache_dir=tmp_path / name, timeout=0.3, poll_interval=0.3)
        await store.open()
        opened.append(store)
        return store

    yield open_replica
    for store in opened:
        await store.close()


async def _wait_for(predicate: Callable[[], bool], within: float = 3.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def test_a_change_reaches_every_replica_within_a_second(redis_server: RedisServer, replicas: object) -> None:
    a = await replicas(redis_server.url, "a")  # type: ignore[operator]
    b = await replicas(redis_server.url, "b")  # type: ignore[operator]
    c = await replicas(redis_server.url, "c")  # type: ignore[operator]
    seen: list[int] = []

    async def listener(policy: Policy) -> None:
        seen.append(policy.version)

    c.add_listener(listener)
    await asyncio.sleep(0.1)  # subscriptions settle
    for version in range(1, 6):
        await a.update(add(f"rule {version}"))
        elapsed = await _wait_for(lambda v=version: b.current().version == v and c.current().version == v)
        assert elapsed < 1.0
    await _wait_for(lambda: len(seen) == 5)
    assert seen == [1, 2, 3, 4, 5]
    assert [r.pattern for r in c.current().rules] == [f"rule {i}" for i in range(1, 6)]


async def test_concurrent_writers_lose_nothing(redis_server: RedisServer, replicas: object) -> None:
    a = await replicas(redis_server.url, "a")  # type: ignore[operator]
    b = await replicas(redis_server.url, "b")  # type: ignore[operator]
    await asyncio.gather(*(store.update(add(f"{name}{i}")) for i in range(8) for name, store in (("a", a), ("b", b))))
    await _wait_for(lambda: a.current().version == 16 and b.current().version == 16)
    assert sorted(r.pattern for r in a.current().rules) == sorted(f"{n}{i}" for i in range(8) for n in "ab")
    assert len(await a.audit(limit=100)) == 16


async def test_redis_down_keeps_the_policy_refuses_writes_and_recovers(tmp_path: Path, replicas: object) -> None:
    server = RedisServer(tmp_path / "redis", persist=True)
    (tmp_path / "redis").mkdir()
    server.start()
    try:
        a = await replicas(server.url, "a")  # type: ignore[operator]
        b = await replicas(server.url, "b")  # type: ignore[operator]
        await a.update(engage)
        await _wait_for(lambda: "global" in b.current().killswitches)
        server.stop()
        with pytest.raises(StoreUnavailable):
            await a.update(add("lost?"))
        await _wait_for(lambda: not b.healthy)
        assert "global" in b.current().killswitches  # kill switches never fail open
        assert a.current().version == 1
        server.start()
        await _wait_for(lambda: a.healthy and b.healthy, within=5)
        await a.update(add("after recovery"))
        await _wait_for(lambda: b.current().version == 2, within=3)
    finally:
        server.stop()


async def test_cold_start_while_redis_is_down_uses_the_disk_cache(tmp_path: Path, redis_server: RedisServer) -> None:
    first = RedisStore(redis_server.url, cache_dir=tmp_path / "cache", timeout=0.3)
    await first.open()
    await first.update(add("cached rule"))
    await first.update(engage)
    await first.close()
    redis_server.stop()
    started = time.monotonic()
    cold = RedisStore(redis_server.url, cache_dir=tmp_path / "cache", timeout=0.3)
    policy = await cold.open()
    try:
        assert time.monotonic() - started < 3
        assert policy.version == 2 and [r.pattern for r in policy.rules] == ["cached rule"]
        assert "global" in policy.killswitches and not cold.healthy
    finally:
        await cold.close()


async def test_redis_that_lost_its_data_is_reseeded(redis_server: RedisServer, replicas: object) -> None:
    a = await replicas(redis_server.url, "a")  # type: ignore[operator]
    b = await replicas(redis_server.url, "b")  # type: ignore[operator]
    await a.update(add("one"))
    await a.update(add("two"))
    await _wait_for(lambda: b.current().version == 2)
    client = redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    await a.update(add("three"))  # re-seeds Redis first (an audited version of its own), then writes
    await _wait_for(lambda: b.current().version == 4)
    assert [r.pattern for r in b.current().rules] == ["one", "two", "three"]
    assert [e.action for e in await b.audit(limit=10, oldest_first=True)] == ["policy.reseed", "rules.add"]


async def test_an_idle_replica_stays_healthy(redis_server: RedisServer, replicas: object) -> None:
    a = await replicas(redis_server.url, "a")  # type: ignore[operator]
    samples = []
    for _ in range(25):
        await asyncio.sleep(0.1)
        samples.append(a.healthy)
    assert all(samples)


async def test_a_controls_change_hands_every_replica_the_same_rules(
    redis_server: RedisServer, replicas: object
) -> None:
    # The same tuple, not an equal one: the data plane keeps its compiled matchers only then.
    a = await replicas(redis_server.url, "a")  # type: ignore[operator]
    b = await replicas(redis_server.url, "b")  # type: ignore[operator]
    await a.update(add("keep me"))
    await _wait_for(lambda: b.current().version == 1)
    rules_a, rules_b = a.current().rules, b.current().rules
    await a.update(engage)
    await _wait_for(lambda: b.current().version == 2)
    assert "global" in b.current().killswitches
    assert a.current().rules is rules_a and b.current().rules is rules_b
    await a.update(add("new rule"))
    await _wait_for(lambda: b.current().version == 3)
    assert b.current().rules is not rules_b and len(b.current().rules) == 2


async def test_a_write_right_after_redis_restarts_succeeds(tmp_path: Path, replicas: object) -> None:
    # The client never retries, so a connection that died with Redis must not refuse the first write
    # after Redis is back (the replica already reports itself ready by then).
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", persist=True)
    server.start()
    try:
        store = await replicas(server.url, "a")  # type: ignore[operator]
        await store.update(add("before"))
        server.stop()
        server.start()
        policy, _ = await store.update(add("after"))
        assert [rule.pattern for rule in policy.rules] == ["before", "after"]
    finally:
        server.stop()
