"""`containment serve`: the composition root that wires the data plane and the admin plane together.

Process 0 (the primary) owns the policy store and serves the admin API and the data plane. With
`--workers N`, it also starts N − 1 worker processes that serve the data plane only, on the same port
(SO_REUSEPORT: the kernel spreads connections); workers read the policy (from Redis, or by following the
primary's state dir) and report metrics through prometheus-client's multiprocess mode.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys

from prometheus_client import CollectorRegistry

from admin.app import build_admin_app
from admin.context import Enforcement, Insight
from admin.listener import AdminListener, on_loop, raise_fd_limit
from admin.runtime import build_runtime, cancel_all
from admin.scopes import known_from
from admin.workers import Supervisor
from gateway.app import DataPlane
from gateway.metrics import GatewayMetrics
from gateway.policy_watch import SnapshotHolder
from gateway.settings import Settings
from gateway.telemetry import Telemetry, load_secret
from rules._build import compiled
from rules.alerts import AnomalyDetector
from rules.store import StoreError

log = logging.getLogger("containment")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class StartupError(Exception):
    pass


async def _start_site(listener: AdminListener, host: str, port: int, what: str) -> None:
    try:
        await listener.start()
    except OSError as exc:
        raise StartupError(f"cannot listen for the {what} on {host}:{port}: {exc.strerror}") from None


def tune_gc() -> None:
    """A policy of 100k rules is ~10^6 long-lived objects; with CPython's default thresholds the cyclic
    collector keeps re-walking them (up to ~100 ms a time) while a push allocates. Collect young
    objects less often, and move what start-up loaded out of the collector's way."""
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()


def scrape_registry(registry: CollectorRegistry) -> CollectorRegistry:
    """What `/metrics` reads: this process's registry, or every process's files in multiprocess mode."""
    if not os.environ.get(MULTIPROC_ENV):
        return registry
    from prometheus_client import multiprocess

    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)
    return combined


async def serve(settings: Settings, *, worker: int = 0, ready: asyncio.Event | None = None) -> None:
    primary = worker == 0
    raise_fd_limit()  # a connection flood meets the hard limit, not a low default soft one
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    runtime = build_runtime(settings, primary=primary, worker=worker)
    try:
        policy = await runtime.store.open()
        if runtime.sink_opener is not None:
            await runtime.sink_opener()
    except StoreError as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(f"cannot open the sample store under {settings.state_dir}: {exc.strerror}") from None
    detector = AnomalyDetector()
    telemetry = Telemetry(
        sink=runtime.sink,
        hits=runtime.hits,
        detector=detector,
        metrics=metrics,
        sample_rate=settings.sample_rate,
        route_rates=settings.sample_rates,
        hmac_secret=load_secret(settings.sample_hmac_secret, settings.state_dir),
    )
    holder = SnapshotHolder(
        metrics, policy, regex_budget=settings.regex_budget_ms / 1000, backend=settings.matcher_backend
    )
    runtime.store.add_listener(holder.install)
    await holder.upgrade_initial(policy)
    tune_gc()

    def enforcement() -> Enforcement:
        return Enforcement(holder.snapshot.version, holder.snapshot.compiled_at)

    plane = DataPlane(
        settings, holder=holder, metrics=metrics, telemetry=telemetry, limiter=runtime.limiter, health=runtime.problems
    )
    grace = settings.shutdown_grace_seconds
    admin_listener: AdminListener | None = None
    if primary:
        # The admin API runs on its own thread and loop (admin/listener.py); what it shares with the data
        # plane stays on this loop.
        here = asyncio.get_running_loop()
        admin = build_admin_app(
            store=on_loop(runtime.store, here),
            tokens=settings.admin_tokens,
            registry=scrape_registry(registry),
            categories=settings.categories,
            enforcement=enforcement,
            stage1_default_ttl=settings.stage1_default_ttl_seconds,
            known=known_from(settings),
            insight=Insight(
                sink=on_loop(runtime.sink, here),
                hits=on_loop(runtime.hits, here),
                detector=detector,
                forensic_max_rate=settings.forensic_max_rate,
                forensic_max_seconds=settings.forensic_max_seconds,
                on_reveal=lambda responder, count: metrics.sample_reveals.labels(responder).inc(count),
            ),
        )
        host, port = settings.admin_listen.host, settings.admin_listen.port
        admin_listener = AdminListener(lambda: admin, host, port, shutdown_timeout=grace)
    tasks = [asyncio.create_task(start()) for start in runtime.background]
    tasks.append(asyncio.create_task(runtime.watch_health(metrics, detector)))
    tasks.append(asyncio.create_task(telemetry.run()))
    supervisor = Supervisor(settings) if primary and settings.workers > 1 else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    listening = False
    try:
        try:
            await plane.start(settings.listen.host, settings.listen.port, reuse_port=settings.workers > 1)
        except OSError as exc:
            raise StartupError(
                f"cannot listen for the data plane on {settings.listen.host}:{settings.listen.port}: {exc.strerror}"
            ) from None
        listening = True
        if admin_listener is not None:
            await _start_site(admin_listener, settings.admin_listen.host, settings.admin_listen.port, "admin API")
            _announce(settings, policy.version, len(policy.rules), runtime.store.healthy)
        if supervisor is not None:
            supervisor.start()
            tasks.append(asyncio.create_task(supervisor.watch()))
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        if supervisor is not None:
            supervisor.stop()
        if listening:
            await plane.close(grace)  # requests in progress finish first, with their telemetry
        await cancel_all(tasks)
        if admin_listener is not None:
            await admin_listener.stop()
        holder.close()
        await runtime.hits.flush()
        await runtime.sink.close()  # samples still batched in memory go to disk
        await runtime.store.close()


def _announce(settings: Settings, version: int, rules: int, healthy: bool) -> None:
    routes = ", ".join(f"{r.path_prefix} → {r.upstream}" for r in settings.effective_routes())
    store = f"Redis {settings.redis_url}" if settings.redis_url else f"state in {settings.state_dir}"
    print(
        f"containment: data plane on http://{settings.listen} ({routes}), {settings.workers} worker(s), "
        f"{'compiled' if compiled() else 'pure Python'}; "
        f"admin API on http://{settings.admin_listen}; policy version {version} ({rules} rules); {store}",
        file=sys.stderr,
        flush=True,
    )
    if not healthy:
        print("containment: Redis unreachable at start: enforcing the cached policy (degraded)", file=sys.stderr)
    if not settings.admin_tokens:
        print(
            "containment: no admin tokens configured; every admin call will be refused "
            "(set CONTAINMENT_ADMIN_TOKENS=name:role:token)",
            file=sys.stderr,
            flush=True,
        )
