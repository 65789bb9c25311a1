"""Containment outlives store faults (issue 16, items 1, 10 and 11), end to end: real `containment serve`
processes, a real redis-server that the tests kill and restart without persistence."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from tests.processes import Served, http, serve, serve_mock_upstream, stop
from tests.redis_server import RedisServer

TOKEN = "fleet-safety-commander"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Replica(Served):
    def chat(self, text: str, model: str = "mock-echo") -> int:
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
        return http("POST", f"{self.gateway}/v1/chat/completions", body)[0]

    def version(self) -> int:
        version: int = http("GET", f"{self.admin}/v1/policy", headers=AUTH)[2]["version"]
        return version

    def alerts(self) -> list[str]:
        return [a["kind"] for a in http("GET", f"{self.admin}/v1/alerts", headers=AUTH)[2]["alerts"]]

    def metric(self, line_start: str) -> float | None:
        for line in http("GET", f"{self.admin}/metrics")[2].splitlines():
            if line.startswith(line_start):
                return float(line.split()[-1])
        return None

    def kill(self, scope: str, engaged: bool = True) -> tuple[int, Any]:
        status, _, body = http(
            "PUT", f"{self.admin}/v1/killswitches/{scope}", {"engaged": engaged, "reason": "r"}, AUTH
        )
        return status, body

    def push(self, pattern: str) -> tuple[int, Any]:
        status, _, body = http("POST", f"{self.admin}/v1/rules", {"rules": [{"pattern": pattern}], "reason": "r"}, AUTH)
        return status, body


def _serve(upstream: str, state: Path, *extra: str, poll: float = 0.5) -> Replica:
    env = {"CONTAINMENT_ADMIN_TOKENS": f"ops:commander:{TOKEN}", "CONTAINMENT_REDIS_POLL_SECONDS": str(poll)}
    return Replica(*serve(upstream, state, *extra, env=env))


def _until(predicate: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _redis_version(server: RedisServer) -> int:
    client = redis_sync.Redis.from_url(server.url)
    try:
        return int(client.get("{containment}:version") or 0)
    finally:
        client.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_mock_upstream() as url:
        yield url


@pytest.fixture
def redis_empty(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")  # no persistence: a restart loses everything
    server.start()
    yield server
    server.stop()


def test_a_replica_restarted_after_redis_lost_its_data_starts_from_its_cache_and_reseeds(
    upstream: str, tmp_path: Path, redis_empty: RedisServer
) -> None:
    url = redis_empty.url
    a = _serve(upstream, tmp_path / "a", "--redis-url", url)
    b = _serve(upstream, tmp_path / "b", "--redis-url", url)
    replicas = [a, b]
    try:
        assert a.push("first blocked phrase")[0] == 201
        assert a.kill("model:frozen")[0] == 200  # v2
        _until(lambda: b.chat("first blocked phrase") == 400 and b.chat("x", "frozen") == 503, within=2)
        stop(b.process)  # b's disk cache: v2
        assert a.push("second blocked phrase")[0] == 201  # v3, which b never saw
        stop(a.process)  # a's disk cache: v3
        redis_empty.stop()
        redis_empty.start()  # Redis is back, empty

        # b (a poll of 4 s: 10 s for the fleet to settle after a re-seed) enforces its cache from the start.
        b = replicas[1] = _serve(upstream, tmp_path / "b", "--redis-url", url, poll=4)
        assert b.chat("first blocked phrase") == 400 and b.chat("x", "frozen") == 503
        assert b.version() == 3 and _redis_version(redis_empty) == 3  # re-seeded as a version above its cache
        _until(lambda: "store_reseeded" in b.alerts(), within=3)
        _until(lambda: b.metric('containment_alert_active{kind="store_reseeded"}') == 1.0, within=3)

        # b is behind (a knew v3): until the fleet settles it takes restrictions, but refuses anything else.
        status, body = b.kill("model:frozen", engaged=False)
        assert status == 503 and body["error"]["code"] == "store_unavailable", body
        assert b.kill("model:b-only")[0] == 200  # v4

        # a comes back with v3: Redis (b's lineage) lacks it, so a merges, keeping every restriction.
        a = replicas[0] = _serve(upstream, tmp_path / "a", "--redis-url", url)
        for replica in (a, b):
            _until(lambda r=replica: r.chat("second blocked phrase") == 400, within=3)  # type: ignore[misc]
            assert replica.chat("first blocked phrase") == 400
            assert replica.chat("x", "frozen") == 503 and replica.chat("x", "b-only") == 503
            assert replica.version() >= 5
        _until(lambda: "store_reseeded" in a.alerts(), within=3)
        audit = http("GET", f"{a.admin}/v1/audit?limit=10", headers=AUTH)[2]["entries"]
        merge = next(e for e in audit if e["action"] == "policy.reseed" and e["after"]["relation"] == "diverged")
        assert [item.split()[0] for item in merge["after"]["merged"]] == ["rule"]  # a's v3 rule, kept

        # Once settled, b writes again, and the fleet follows.
        _until(lambda: b.kill("model:b-only", engaged=False)[0] == 200, within=15)
        _until(lambda: a.chat("x", "b-only") == 200, within=2)
        assert a.chat("first blocked phrase") == 400 and a.chat("x", "frozen") == 503
    finally:
        for replica in replicas:
            stop(replica.process)


def test_running_replicas_reseed_an_emptied_redis_without_lifting_anything(
    upstream: str, tmp_path: Path, redis_empty: RedisServer
) -> None:
    a = _serve(upstream, tmp_path / "a", "--redis-url", redis_empty.url)
    b = _serve(upstream, tmp_path / "b", "--redis-url", redis_empty.url)
    try:
        assert a.push("fleet blocked phrase")[0] == 201
        assert a.kill("model:frozen")[0] == 200
        _until(lambda: b.chat("x", "frozen") == 503, within=2)
        redis_empty.stop()
        redis_empty.start()  # empty
        seen: list[int] = []
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and _redis_version(redis_empty) < 3:
            seen += [r.chat("fleet blocked phrase") for r in (a, b)] + [r.chat("x", "frozen") for r in (a, b)]
        assert _redis_version(redis_empty) == 3, "Redis was not re-seeded without a write"
        assert set(seen) <= {400, 503} and all(r.chat("x", "frozen") == 503 for r in (a, b))
        _until(lambda: "store_reseeded" in a.alerts() + b.alerts(), within=3)
        assert b.push("pushed after the re-seed")[0] == 201
        _until(lambda: a.chat("pushed after the re-seed") == 400, within=2)
        assert a.version() == b.version() == 4
    finally:
        stop(a.process)
        stop(b.process)


def test_restrictive_writes_while_redis_is_down_are_local_journaled_and_replayed(upstream: str, tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", persist=True)
    server.start()
    a = _serve(upstream, tmp_path / "a", "--redis-url", server.url)
    b = _serve(upstream, tmp_path / "b", "--redis-url", server.url)
    replicas = [a, b]
    try:
        assert a.kill("model:before")[0] == 200
        _until(lambda: b.chat("x", "before") == 503, within=2)
        time.sleep(0.5)  # the rate limiter's heartbeat has counted both replicas
        server.stop()

        status, body = a.kill("model:frozen")
        assert status == 200, body
        assert body["engaged"] is True and body["version"] == 2
        assert body["local_only"]["message"] == "local only, 1 replicas not reached"
        assert body["local_only"]["replicas_not_reached"] == 1 and body["local_only"]["journal"] == "disk"
        assert a.chat("x", "frozen") == 503  # in force on this replica at once
        assert a.push("pushed during the outage")[0] == 201
        assert a.chat("pushed during the outage") == 400
        status, body = a.kill("model:before", engaged=False)
        assert status == 503 and body["error"]["code"] == "store_unavailable"  # releasing needs the store
        ready = http("GET", f"{a.gateway}/_containment/readyz")[2]
        assert ready["status"] == "degraded" and any("this replica only" in d for d in ready["degraded"])

        stop(a.process)  # the journal outlives a restart while Redis is still down
        a = replicas[0] = _serve(upstream, tmp_path / "a", "--redis-url", server.url)
        assert a.chat("x", "frozen") == 503 and a.chat("pushed during the outage") == 400
        assert b.chat("x", "frozen") == 200  # b was not reached

        server.start()
        for replica in (a, b):
            _until(lambda r=replica: r.chat("x", "frozen") == 503, within=5)  # type: ignore[misc]
            _until(lambda r=replica: r.chat("pushed during the outage") == 400, within=2)  # type: ignore[misc]
        _until(lambda: not (tmp_path / "a" / "cache" / "journal.jsonl").exists(), within=2)
        audit = http("GET", f"{b.admin}/v1/audit?limit=10", headers=AUTH)[2]["entries"]
        replayed = [e for e in audit if isinstance(e["after"], dict) and e["after"].get("replayed")]
        assert {e["action"] for e in replayed} == {"killswitch.engage", "rules.add"}
        assert a.kill("model:frozen", engaged=False)[0] == 200  # and now it can be released
        _until(lambda: b.chat("x", "frozen") == 200, within=2)
    finally:
        for replica in replicas:
            stop(replica.process)
        server.stop()


def _fill(directory: Path) -> Callable[[], None]:
    """Make writes under `directory` fail: a full tmpfs where the test may mount one, else a state dir
    whose history directory has become a file. Returns what undoes it."""
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(directory)], capture_output=True)
    if mounted.returncode != 0:
        history = directory / "history"
        shutil.rmtree(history)
        history.write_bytes(b"")

        def restore() -> None:
            history.unlink()
            history.mkdir()

        return restore
    return lambda: None


def test_embedded_store_that_cannot_write_still_takes_a_kill_switch(upstream: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(state)], capture_output=True)
    filler = state / "filler"
    replica = _serve(upstream, state)
    try:
        assert replica.push("before the disk filled")[0] == 201
        if tmpfs.returncode == 0:  # the disk is really full
            with open(filler, "wb") as handle, __import__("contextlib").suppress(OSError):
                while True:
                    handle.write(os.urandom(64 * 1024))
                    handle.flush()
            undo: Callable[[], None] = lambda: filler.unlink()  # noqa: E731
        else:
            undo = _fill(state)
        status, body = replica.kill("global")
        assert status == 200, body
        assert body["local_only"]["replicas_not_reached"] == 0
        assert replica.chat("hello") == 503
        status, body = replica.kill("global", engaged=False)
        assert status == 503 and body["error"]["code"] == "store_error"
        undo()
        _until(lambda: b'"global"' in (state / "policy.json").read_bytes(), within=3)  # replayed
        assert replica.chat("hello") == 503 and replica.chat("before the disk filled") == 503
        assert replica.kill("global", engaged=False)[0] == 200
        assert replica.chat("hello") == 200
    finally:
        stop(replica.process)
        if tmpfs.returncode == 0:
            subprocess.run(["umount", "-l", str(state)], capture_output=True)


def test_rollback_keeps_engaged_kill_switches_unless_asked(upstream: str, tmp_path: Path) -> None:
    replica = _serve(upstream, tmp_path / "state")
    rollback = f"{replica.admin}/v1/policy/rollback"
    try:
        assert replica.push("rollback phrase")[0] == 201  # v1
        assert replica.kill("model:frozen")[0] == 200  # v2
        status, _, body = http("POST", rollback, {"version": 1, "reason": "undo"}, AUTH)  # v3
        assert status == 200, body
        assert body["changes"]["killswitches"] == {
            "engaged": [],
            "released": [],
            "changed": [],
            "kept": ["model:frozen"],
        }
        assert body["release_killswitches"] is False and body["version"] == 3
        assert replica.chat("x", "frozen") == 503  # still engaged

        assert replica.kill("model:other")[0] == 200  # v4
        assert replica.kill("model:other", engaged=False)[0] == 200  # v5
        status, _, body = http("POST", rollback, {"version": 4, "reason": "r", "release_killswitches": True}, AUTH)
        assert status == 200, body
        assert body["changes"]["killswitches"]["engaged"] == ["model:other"]  # it was engaged at v4
        status, _, body = http("POST", rollback, {"version": 1, "reason": "r", "release_killswitches": True}, AUTH)
        assert body["changes"]["killswitches"] == {
            "engaged": [],
            "released": ["model:frozen", "model:other"],
            "changed": [],
            "kept": [],
        }
        assert replica.chat("x", "frozen") == 200 and replica.chat("rollback phrase") == 400

        status, _, body = http("POST", rollback, {"version": 1, "reason": "r", "release_killswitches": "yes"}, AUTH)
        assert status == 422 and body["error"]["code"] == "invalid_rollback"
        assert body["error"]["field"] == "release_killswitches"
    finally:
        stop(replica.process)
