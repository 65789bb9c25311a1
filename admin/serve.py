"""`containment serve`: the composition root that wires the data plane and the admin plane in one process."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web
from prometheus_client import CollectorRegistry

from admin.app import build_admin_app
from admin.context import Enforcement
from gateway.app import build_app
from gateway.metrics import GatewayMetrics
from gateway.policy_watch import SnapshotHolder
from gateway.settings import Settings
from rules.store import StoreError
from rules.store_file import EmbeddedStore

log = logging.getLogger("containment")


class StartupError(Exception):
    pass


async def _start_site(runner: web.AppRunner, host: str, port: int, what: str) -> None:
    site = web.TCPSite(runner, host, port, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(f"cannot listen for the {what} on {host}:{port}: {exc.strerror}") from None


def tune_gc() -> None:
    """A policy of 100k rules is ~10^6 long-lived objects; with CPython's default thresholds the cyclic
    collector keeps re-walking them (up to ~100 ms a time) while a push allocates. Collect young
    objects less often, and move what start-up loaded out of the collector's way."""
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    store = EmbeddedStore(settings.state_dir, history_versions=settings.history_versions)
    try:
        policy = await store.open()
    except StoreError as exc:
        raise StartupError(str(exc)) from None
    holder = SnapshotHolder(metrics, policy, regex_budget=settings.regex_budget_ms / 1000)
    tune_gc()
    store.add_listener(holder.install)

    def enforcement() -> Enforcement:
        return Enforcement(holder.snapshot.version, holder.snapshot.compiled_at)

    gateway_runner = web.AppRunner(
        build_app(settings, holder=holder, metrics=metrics), access_log=None, handler_cancellation=True
    )
    admin_runner = web.AppRunner(
        build_admin_app(
            store=store,
            tokens=settings.admin_tokens,
            registry=registry,
            categories=settings.categories,
            enforcement=enforcement,
            stage1_default_ttl=settings.stage1_default_ttl_seconds,
        ),
        access_log=None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await gateway_runner.setup()
        await admin_runner.setup()
        await _start_site(gateway_runner, settings.listen.host, settings.listen.port, "data plane")
        await _start_site(admin_runner, settings.admin_listen.host, settings.admin_listen.port, "admin API")
        routes = ", ".join(f"{r.path_prefix} → {r.upstream}" for r in settings.effective_routes())
        print(
            f"containment: data plane on http://{settings.listen} ({routes}); "
            f"admin API on http://{settings.admin_listen}; policy version {policy.version} "
            f"({len(policy.rules)} rules); state in {settings.state_dir}",
            file=sys.stderr,
            flush=True,
        )
        if not settings.admin_tokens:
            print(
                "containment: no admin tokens configured; every admin call will be refused "
                "(set CONTAINMENT_ADMIN_TOKENS=name:role:token)",
                file=sys.stderr,
                flush=True,
            )
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        await gateway_runner.cleanup()
        await admin_runner.cleanup()
        holder.close()
        await store.close()
