"""Shared fixtures: a real mock upstream and a real gateway + admin stack on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from yarl import URL

from admin.app import build_admin_app
from admin.context import Enforcement, Insight
from admin.scopes import known_from
from gateway.app import DataPlane
from gateway.metrics import GatewayMetrics
from gateway.mock_upstream import build_mock_app
from gateway.policy_watch import SnapshotHolder
from gateway.settings import Settings
from gateway.telemetry import Telemetry
from rules._build import compiled
from rules.alerts import AnomalyDetector
from rules.roles import AdminToken
from rules.samples import FileSampleSink
from rules.store_file import EmbeddedStore
from rules.watch import FileHits
from tests.redis_server import RedisServer

# `make test` runs the suite twice: on the mypyc-compiled build and on the pure-Python sources
# (CONTAINMENT_PURE_PYTHON=1). A test that injects a fault by patching a module's globals can only do so
# in the interpreted run: compiled code binds them when it is built.
interpreted_only = pytest.mark.skipif(
    compiled(), reason="patches module globals, which compiled code binds at build time (the pure-Python run covers it)"
)

# The data plane runs on uvloop in production (and on asyncio's own loop where uvloop is missing): the
# tests of the proxy path run on both, since the two loops' transports differ in ways that matter.
BOTH_LOOPS = frozenset({"test_server.py", "test_upstream.py", "test_proxy.py", "test_sse.py", "test_hostile.py"})


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    if item.path.name in BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


VIEWER = "viewer-token-0001"
RESPONDER = "responder-token-0001"
COMMANDER = "commander-token-0001"
TOKENS = [
    AdminToken.parse(f"vera:viewer:{VIEWER}"),
    AdminToken.parse(f"rory:responder:{RESPONDER}"),
    AdminToken.parse(f"cleo:commander:{COMMANDER}"),
]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def chat(text: str, *, model: str = "mock-echo", stream: bool = False) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}


@dataclass(frozen=True)
class Address:
    host: str
    port: int


class GatewayClient:
    """A client session on a data plane listening on a free loopback port; it answers the calls the
    tests make the way aiohttp's TestClient does (`await client.post("/path", json=...)`)."""

    def __init__(self, plane: DataPlane, host: str, port: int) -> None:
        self.plane = plane
        self.server = Address(host, port)
        self.session = aiohttp.ClientSession(base_url=f"http://{host}:{port}")

    def make_url(self, path: str) -> URL:
        return URL(f"http://{self.server.host}:{self.server.port}{path}")

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.session.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.session.post(path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> Any:
        return self.session.put(path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.session.delete(path, **kwargs)

    async def close(self) -> None:
        await self.session.close()
        await self.plane.close(grace=0)


async def start_gateway(settings: Settings, **parts: Any) -> GatewayClient:
    plane = DataPlane(settings, **parts)
    host, port = await plane.start("127.0.0.1", 0)
    return GatewayClient(plane, host, port)


@dataclass
class Stack:
    gateway: GatewayClient
    admin: TestClient[web.Request, web.Application]
    store: EmbeddedStore
    holder: SnapshotHolder
    registry: CollectorRegistry
    state_dir: Path
    telemetry: Telemetry
    sink: FileSampleSink

    async def settle(self) -> None:
        """Let the sample writer catch up."""
        for _ in range(50):
            if self.telemetry._queue.empty():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)

    async def push(self, *rules: dict[str, Any], token: str = RESPONDER, force: bool = True) -> dict[str, Any]:
        # Forced by default: tests push short made-up patterns ("x") that the push-time safety net would
        # refuse; the net itself is tested in tests/admin/test_push_safety.py.
        body = {"rules": list(rules), "reason": "test", "force": force}
        response = await self.admin.post("/v1/rules", json=body, headers=auth(token))
        assert response.status == 201, await response.text()
        result: dict[str, Any] = await response.json()
        return result

    async def put(self, path: str, body: dict[str, Any], token: str = COMMANDER) -> dict[str, Any]:
        response = await self.admin.put(path, json={"reason": "test"} | body, headers=auth(token))
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result

    async def kill(self, scope: str, **body: Any) -> dict[str, Any]:
        payload = {"engaged": True, "reason": "test"} | body
        response = await self.admin.put(f"/v1/killswitches/{scope}", json=payload, headers=auth(COMMANDER))
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def upstream_server(aiohttp_server: Any) -> TestServer:
    server: TestServer = await aiohttp_server(build_mock_app(chunk_chars=4))
    return server


@pytest.fixture
async def make_stack(aiohttp_client: Any, upstream_server: TestServer, tmp_path: Path) -> AsyncIterator[StackFactory]:
    stores: list[EmbeddedStore] = []
    writers: list[asyncio.Task[None]] = []
    gateways: list[GatewayClient] = []

    async def factory(upstream: str | None = None, state_dir: Path | None = None, **overrides: Any) -> Stack:
        state = state_dir or tmp_path / "state"
        settings = Settings(
            upstream=upstream or str(upstream_server.make_url("")),
            state_dir=state,
            admin_tokens=TOKENS,
            **overrides,
        )
        registry = CollectorRegistry()
        metrics = GatewayMetrics(registry)
        store = EmbeddedStore(state)
        stores.append(store)
        holder = SnapshotHolder(metrics, await store.open())
        store.add_listener(holder.install)
        sink = FileSampleSink(state / "samples", max_count=settings.sample_max_count, max_age=timedelta(days=7))
        await sink.open()
        hits = FileHits(state / "samples" / "hits.json")
        detector = AnomalyDetector()
        telemetry = Telemetry(
            sink=sink,
            hits=hits,
            detector=detector,
            metrics=metrics,
            sample_rate=settings.sample_rate,
            route_rates=settings.sample_rates,
            hmac_secret=b"test-secret",
        )
        writer = asyncio.create_task(telemetry.run())
        writers.append(writer)
        gateway = await start_gateway(settings, holder=holder, metrics=metrics, telemetry=telemetry)
        gateways.append(gateway)
        admin = await aiohttp_client(
            build_admin_app(
                store=store,
                tokens=TOKENS,
                registry=registry,
                categories=settings.categories,
                enforcement=lambda: Enforcement(holder.snapshot.version, holder.snapshot.compiled_at),
                stage1_default_ttl=settings.stage1_default_ttl_seconds,
                known=known_from(settings),
                insight=Insight(
                    sink=sink,
                    hits=hits,
                    detector=detector,
                    forensic_max_rate=settings.forensic_max_rate,
                    forensic_max_seconds=settings.forensic_max_seconds,
                    on_reveal=lambda responder, count: metrics.sample_reveals.labels(responder).inc(count),
                ),
            )
        )
        return Stack(gateway, admin, store, holder, registry, state, telemetry, sink)

    yield factory
    for gateway in gateways:
        await gateway.close()
    for writer in writers:
        writer.cancel()
    for store in stores:
        await store.close()


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
