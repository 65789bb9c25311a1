"""Fleet mode end to end: real `containment serve` replicas sharing a real redis-server, and workers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import Served, free_port, http, serve, serve_mock_upstream, stop
from tests.redis_server import RedisServer

TOKEN = "fleet-commander-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _chat(gateway: str, text: str) -> int:
    body = {"model": "mock-echo", "messages": [{"role": "user", "content": text}]}
    return http("POST", f"{gateway}/v1/chat/completions", body)[0]


def _serve(upstream: str, state: Path, *extra: str) -> Served:
    env = {"CONTAINMENT_ADMIN_TOKENS": f"ops:commander:{TOKEN}", "CONTAINMENT_REDIS_POLL_SECONDS": "0.5"}
    return serve(upstream, state, *extra, env=env)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_mock_upstream() as url:
        yield url


def _until(predicate: object, within: float) -> float:
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > within:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
    return time.monotonic() - started


def test_replicas_share_one_policy_and_survive_redis_death(upstream: str, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path, persist=True)
    redis.start()
    replicas: list[Served] = []
    try:
        replicas = [_serve(upstream, tmp_path / name, "--redis-url", redis.url) for name in ("a", "b")]
        a, b = replicas
        status, _, _ = http(
            "POST", f"{a.admin}/v1/rules", {"rules": [{"pattern": "fleet phrase"}], "reason": "r"}, AUTH
        )
        assert status == 201
        assert _until(lambda: _chat(b.gateway, "say fleet phrase") == 400, within=1.0) < 1.0
        http("PUT", f"{a.admin}/v1/killswitches/model:frozen", {"engaged": True, "reason": "r"}, AUTH)
        _until(
            lambda: http("POST", f"{b.gateway}/v1/chat/completions", {"model": "frozen", "messages": []})[0] == 503,
            within=1.0,
        )

        traffic: list[int] = []
        running = threading.Event()
        running.set()

        def clean_traffic() -> None:
            while running.is_set():
                for replica in replicas:
                    traffic.append(_chat(replica.gateway, "hello"))

        sender = threading.Thread(target=clean_traffic)
        sender.start()
        time.sleep(0.3)
        redis.stop()  # Redis dies under traffic
        time.sleep(1.0)
        running.clear()
        sender.join(10)
        assert len(traffic) > 20 and set(traffic) == {200}  # no 5xx caused by the store
        assert _chat(b.gateway, "fleet phrase") == 400  # the last good policy stays in force
        assert http("POST", f"{b.gateway}/v1/chat/completions", {"model": "frozen", "messages": []})[0] == 503
        _until(lambda: http("GET", f"{a.gateway}/_containment/readyz")[2]["status"] == "degraded", within=3.0)
        release = {"engaged": False, "reason": "r"}
        status, _, body = http("PUT", f"{a.admin}/v1/killswitches/model:frozen", release, AUTH)
        assert status == 503 and body["error"]["code"] == "store_unavailable"  # releasing still needs the store
        _until(lambda: "containment_store_up 0.0" in http("GET", f"{a.admin}/metrics")[2], within=3.0)

        redis.start()
        _until(
            lambda: all(http("GET", f"{r.gateway}/_containment/readyz")[2]["status"] == "ready" for r in replicas),
            within=5.0,
        )
        status, _, _ = http(
            "POST", f"{b.admin}/v1/rules", {"rules": [{"pattern": "after the outage"}], "reason": "r"}, AUTH
        )
        assert status == 201
        _until(lambda: _chat(a.gateway, "after the outage") == 400, within=1.0)

        redis.stop()  # SIGTERM while Redis is away still shuts a replica down promptly
        started = time.monotonic()
        stop(a.process)
        assert a.process.returncode == 0 and time.monotonic() - started < 8
    finally:
        for replica in replicas:
            stop(replica.process)
        redis.stop()


def test_a_replica_started_while_redis_is_down_enforces_the_cached_policy(upstream: str, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    first = _serve(upstream, tmp_path / "a", "--redis-url", redis.url)
    try:
        http("POST", f"{first.admin}/v1/rules", {"rules": [{"pattern": "cached phrase"}], "reason": "r"}, AUTH)
        assert _chat(first.gateway, "cached phrase") == 400
    finally:
        stop(first.process)
    redis.stop()
    cold = _serve(upstream, tmp_path / "a", "--redis-url", redis.url)
    try:
        assert _chat(cold.gateway, "cached phrase") == 400
        assert http("GET", f"{cold.gateway}/_containment/readyz")[2]["status"] == "degraded"
    finally:
        stop(cold.process)


def test_workers_share_one_policy_and_one_metrics_endpoint(upstream: str, tmp_path: Path) -> None:
    primary = _serve(upstream, tmp_path / "w", "--workers", "2")
    try:
        time.sleep(1.5)  # the second worker binds the same port
        http("POST", f"{primary.admin}/v1/rules", {"rules": [{"pattern": "worker phrase"}], "reason": "r"}, AUTH)
        time.sleep(0.6)  # the follower polls every 0.25 s
        assert {_chat(primary.gateway, "worker phrase") for _ in range(40)} == {400}
        for _ in range(40):
            _chat(primary.gateway, "hello")

        def requests_total(outcome: str) -> float:
            for line in metrics.splitlines():
                if line.startswith("containment_requests_total") and f'outcome="{outcome}"' in line:
                    return float(line.split()[-1])
            return 0.0

        for _ in range(30):  # each worker adds its batched counts to the shared files every second
            metrics = http("GET", f"{primary.admin}/metrics")[2]
            if requests_total("proxied") >= 40 and requests_total("block") >= 40:
                break
            time.sleep(0.2)
        assert requests_total("proxied") == 40.0
        assert requests_total("block") == 40.0
        version = [line for line in metrics.splitlines() if line.startswith("containment_policy_version")]
        assert version and float(version[0].split()[-1]) == 1.0
    finally:
        stop(primary.process)


def test_sigterm_lets_an_inflight_stream_finish(tmp_path: Path) -> None:
    import signal

    slow_port = free_port()
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import asyncio, sys\nfrom aiohttp import web\n"
        "async def chat(request):\n"
        "    r = web.StreamResponse(headers={'Content-Type': 'text/event-stream'})\n"
        "    await r.prepare(request)\n"
        "    for i in range(10):\n"
        '        await r.write(b\'data: {"object": "chat.completion.chunk", "choices": [{"index": 0, \'\n'
        '                      b\'"delta": {"content": "tick "}}]}\\n\\n\')\n'
        "        await asyncio.sleep(0.15)\n"
        "    await r.write(b'data: [DONE]\\n\\n')\n"
        "    return r\n"
        "app = web.Application(); app.router.add_post('/v1/chat/completions', chat)\n"
        f"web.run_app(app, host='127.0.0.1', port={slow_port}, print=None)\n"
    )
    upstream = subprocess.Popen([sys.executable, str(slow)])
    replica = None
    try:
        time.sleep(0.8)
        replica = _serve(f"http://127.0.0.1:{slow_port}", tmp_path / "state")
        import urllib.request

        request = urllib.request.Request(
            f"{replica.gateway}/v1/chat/completions",
            method="POST",
            data=b'{"model": "m", "stream": true, "messages": []}',
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            first = response.readline()
            replica.process.send_signal(signal.SIGTERM)  # mid-stream
            rest = response.read()
        assert first.startswith(b"data:") and rest.rstrip().endswith(b"data: [DONE]")
        assert replica.process.wait(10) == 0
    finally:
        if replica is not None:
            stop(replica.process)
        upstream.kill()
        upstream.wait(5)


def test_headers_that_never_finish_are_cut_off(upstream: str, tmp_path: Path) -> None:
    import socket

    gateway, _, process = serve(upstream, tmp_path / "s", env={"CONTAINMENT_IDLE_TIMEOUT_SECONDS": "1"})
    gateway_port = int(gateway.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", gateway_port), timeout=10) as sock:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: a\r\nX-Slow: ")  # and never the rest
            started = time.monotonic()
            assert sock.recv(100) == b""  # the gateway closed the connection
            assert time.monotonic() - started < 5
    finally:
        stop(process)
