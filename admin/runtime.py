"""What a serving process is made of, chosen from the settings: the policy store (embedded files, a
read-only follower of them, or Redis), the rate limiter (in memory, or leased from Redis), the
background tasks they need, and the health report for `/_containment/readyz`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from gateway.metrics import GatewayMetrics
from gateway.ratelimit import MemoryRateLimiter, RateLimiter
from gateway.ratelimit_redis import FleetRateLimiter
from gateway.settings import Settings
from rules.store import PolicyStore
from rules.store_file import EmbeddedStore, FileFollower
from rules.store_redis import RedisStore


@dataclass
class Runtime:
    store: PolicyStore
    limiter: RateLimiter
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    fleet: FleetRateLimiter | None = None

    def problems(self) -> list[str]:
        found = []
        if not self.store.healthy:
            version = self.store.current().version
            found.append(f"policy store unreachable: enforcing the last good policy (version {version})")
        if self.fleet is not None and not self.fleet.healthy:
            found.append(f"rate limits: Redis unreachable, each replica enforces 1/{self.fleet.replicas} locally")
        return found

    async def watch_health(self, metrics: GatewayMetrics) -> None:
        while True:
            metrics.store_up.set(0 if self.problems() else 1)
            await asyncio.sleep(1.0)


def build_runtime(settings: Settings, *, primary: bool) -> Runtime:
    """The primary process owns the store (and the admin API); worker processes only read it."""
    if settings.redis_url is not None:
        store = RedisStore(
            settings.redis_url,
            cache_dir=settings.state_dir / "cache",
            prefix=settings.redis_prefix,
            timeout=settings.redis_timeout_ms / 1000,
            poll_interval=settings.redis_poll_seconds,
            history_versions=settings.history_versions,
        )
        replica = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        fleet = FleetRateLimiter(
            store.client,
            prefix=settings.redis_prefix,
            replica_id=replica,
            sync_interval=settings.ratelimit_sync_ms / 1000,
        )
        return Runtime(store, fleet, [fleet.run], fleet)
    if primary:
        embedded: PolicyStore = EmbeddedStore(settings.state_dir, history_versions=settings.history_versions)
    else:
        embedded = FileFollower(settings.state_dir)
    return Runtime(embedded, MemoryRateLimiter(parts=settings.workers))


async def cancel_all(tasks: list[asyncio.Task[None]], *, within: float = 5.0) -> None:
    """Cancel background tasks and wait for them, but never longer than `within`: a client library
    that swallows a cancellation must not keep the process from shutting down."""
    for task in tasks:
        task.cancel()
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=within)
        for task in done:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
