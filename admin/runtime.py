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
from datetime import timedelta
from typing import Any

from gateway.metrics import GatewayMetrics
from gateway.ratelimit import MemoryRateLimiter, RateLimiter
from gateway.ratelimit_redis import FleetRateLimiter
from gateway.settings import Settings
from rules.alerts import AnomalyDetector
from rules.samples import FileSampleSink, RedisSampleSink, SampleSink
from rules.store import PolicyStore
from rules.store_file import EmbeddedStore, FileFollower
from rules.store_journal import JournaledStore
from rules.store_redis import RedisStore
from rules.watch import FileHits, HitCounter, RedisHits


@dataclass
class Runtime:
    store: PolicyStore
    limiter: RateLimiter
    sink: SampleSink
    hits: HitCounter
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    fleet: FleetRateLimiter | None = None
    sink_opener: Callable[[], Coroutine[Any, Any, None]] | None = None
    redis_store: RedisStore | None = None  # the fleet store under `store`, for its re-seed events
    journal: JournaledStore | None = None

    def problems(self) -> list[str]:
        found = []
        if not self.store.healthy:
            version = self.store.current().version
            found.append(f"policy store unreachable: enforcing the last good policy (version {version})")
        if self.journal is not None and self.journal.pending:
            where = "on disk" if self.journal.journal_on_disk else "in memory only"
            found.append(
                f"{self.journal.pending} restrictive change(s) applied on this replica only, journaled {where}, "
                "waiting for the store to replay them"
            )
        if self.fleet is not None and not self.fleet.healthy:
            found.append(f"rate limits: Redis unreachable, each replica enforces 1/{self.fleet.replicas} locally")
        return found

    async def watch_health(self, metrics: GatewayMetrics, detector: AnomalyDetector) -> None:
        """Once a second: store health, open alerts (as gauges), and the watch-period counts flushed."""
        kinds = ("block_rate", "output_length", "report_volume", "classifier_score", "store_reseeded")
        ticks = 0
        reported = 0
        while True:
            metrics.store_up.set(0 if self.problems() else 1)
            if self.redis_store is not None:
                events = list(self.redis_store.reconciles)
                for event in events[len(events) - min(len(events), self.redis_store.reconcile_count - reported) :]:
                    detector.raise_alert(
                        "store_reseeded",
                        event.describe(),
                        since=event.at,
                        baseline=event.redis_version,
                        now=event.version,
                    )
                reported = self.redis_store.reconcile_count
            open_kinds = {alert.kind for alert in detector.alerts()}
            for kind in kinds:
                metrics.alerts.labels(kind).set(1 if kind in open_kinds else 0)
            ticks += 1
            if ticks % 5 == 0:
                await self.hits.flush()
            await asyncio.sleep(1.0)


def build_runtime(settings: Settings, *, primary: bool, worker: int = 0) -> Runtime:
    """The primary process owns the store (and the admin API); worker processes only read it."""
    age = timedelta(hours=settings.sample_max_age_hours)
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
        sink = RedisSampleSink(
            store.client, prefix=settings.redis_prefix, max_count=settings.sample_max_count, max_age=age
        )
        hits = RedisHits(store.client, prefix=settings.redis_prefix)
        if not primary:
            return Runtime(store, fleet, sink, hits, [fleet.run], fleet, redis_store=store)
        journaled = JournaledStore(store, settings.state_dir / "cache", peers=lambda: fleet.replicas - 1)
        return Runtime(journaled, fleet, sink, hits, [fleet.run], fleet, redis_store=store, journal=journaled)
    journal: JournaledStore | None = None
    if primary:
        workers = settings.workers
        journal = JournaledStore(
            EmbeddedStore(settings.state_dir, history_versions=settings.history_versions),
            settings.state_dir,
            peers=lambda: workers - 1,  # worker processes follow policy.json, which a local change does not reach
        )
        embedded: PolicyStore = journal
    else:
        embedded = FileFollower(settings.state_dir)
    suffix = "" if primary else f"-w{worker}"
    file_sink = FileSampleSink(
        settings.state_dir / "samples", max_count=settings.sample_max_count, max_age=age, name=f"samples{suffix}"
    )
    file_hits = FileHits(settings.state_dir / "samples" / f"hits{suffix}.json")

    async def open_files() -> None:
        await file_sink.open()
        await asyncio.to_thread(file_hits.load)

    return Runtime(
        embedded,
        MemoryRateLimiter(parts=settings.workers),
        file_sink,
        file_hits,
        sink_opener=open_files,
        journal=journal,
    )


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
