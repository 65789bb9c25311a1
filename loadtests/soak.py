"""`make soak`: a bounded soak of a two-replica fleet under Redis faults (issue 16, "Done when").

What runs (all on free loopback ports, in a scratch dir under /tmp, every process killed at the end):
a real `redis-server`, two `containment serve --redis-url` replicas sharing it, the bundled
`containment mock-upstream`, and a slow SSE upstream inside this process (one event every 0.2 s, so
that a kill switch has running streams to cut). The replicas have three routes: `default` and
`completions` to the mock, and `slow` (chat with model `slow-stream`) to the slow upstream.

Concurrent loops, each bounded in count and in time:

- clean traffic: chat (plain and streaming) and completions through both replicas; expected 200;
- a responder: pushes a block rule with a fresh phrase (through either replica, with a TTL), then sends
  prompts carrying the phrase to BOTH replicas until shortly before the rule expires;
- a commander: engages a kill switch (`global`, `route:slow`, `route:completions`, `key:KEYID`) through
  either replica, with slow streams already running in its scope, sends in-scope requests (plain and
  streaming) to both replicas, then releases it (retrying while the store refuses);
- key floods: bursts of many distinct API keys against a per-key rate limit (model `flood-model`), plus
  one hot key;
- chaos: every 20-30 s (sooner in short runs) redis-server is SIGKILLed and restarted a few seconds
  later, every other time without its data (the first time always empty).

A restriction must hold on a replica once its grace period has passed. The grace period starts when
the admin API acknowledged the change and is `SOAK_GRACE` seconds (3). For the replica that took the
change, that is all. For the other replica, any Redis outage that begins before its deadline pushes the
deadline to the end of the outage plus the grace period; a change taken locally while the store was
down (`local_only`) also waits for the store's settle window (2.5 x the poll interval) after Redis is
back, since only then is it replayed to the fleet. Only requests *sent* after that deadline and before
the release (or the rule's expiry) was asked for are judged.

Counted as failures (the run exits 1 when any is non-zero):

- `restrictions_lifted`: a prompt carrying a pushed phrase answered 200 (or streamed content), a
  request in a kill switch's scope served, or a running stream in its scope still delivering content;
- `store_5xx`: any data-plane 5xx other than the documented fail-closed 503s (`service_suspended`: a
  kill switch; `containment_unavailable`: a check failed closed). A 500 or a `store_unavailable` on the
  data plane is a failure;
- `replica_exits`: a gateway replica exited during the run.

Everything else is reported for information: false 429s for fresh keys, clean requests refused, admin
calls refused while the store was down, transport errors, switches found engaged after their release.

Environment: `SOAK_SECONDS` (total wall time, default 180, capped at 600), `SOAK_GRACE` (3),
`SOAK_SEED` (random), `SOAK_KEEP=1` keeps the scratch dir (logs of every process; kept anyway on
failure), `SOAK_VERBOSE=1` prints events as they happen. `CONTAINMENT_PURE_PYTHON=1` is passed on to
the replicas.

    make soak                                   # ~3 minutes
    SOAK_SECONDS=600 make soak                  # the longest allowed
    CONTAINMENT_PURE_PYTHON=1 .venv/bin/python loadtests/soak.py
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "soak-commander-token"
ADMIN_AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_SECONDS = 600.0
POLL_SECONDS = 1.0
SETTLE_SECONDS = 2.5 * POLL_SECONDS
FLOOD_MODEL = "flood-model"
SLOW_MODEL = "slow-stream"
FLOOD_LIMIT = 3  # requests per key per minute, burst 3
CLEAN = [
    "summarise the history of Rome",
    "explain photosynthesis",
    "write a haiku about autumn",
    "how do vaccines work",
    "translate good morning into French",
]
# The only 5xx the data plane may answer: the documented fail-closed refusals.
FAIL_CLOSED = {"service_suspended", "containment_unavailable"}
FAILURES = ("restrictions_lifted", "store_5xx", "replica_exits")


def now() -> float:
    return time.monotonic()


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the soak dies, even by SIGKILL (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )


def terminate(process: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# --------------------------------------------------------------------------------------------- stats


@dataclass
class Stats:
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    verbose: bool = False
    started: float = field(default_factory=now)

    def add(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def note(self, name: str, what: str) -> None:
        self.counts[name] += 1
        kept = self.examples.setdefault(name, [])
        line = f"t={now() - self.started:6.1f}s {what}"
        if len(kept) < 12:
            kept.append(line)
        if self.verbose or name in FAILURES:
            print(f"soak: {name}: {line}", flush=True)

    def event(self, what: str) -> None:
        if self.verbose:
            print(f"soak: t={now() - self.started:6.1f}s {what}", flush=True)


# --------------------------------------------------------------------------------------------- redis


class Redis:
    """A redis-server on one fixed port, killed (SIGKILL) and restarted with or without its data."""

    def __init__(self, workdir: Path, logs: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("soak: redis-server is not installed (make test-services installs it)")
        self.binary = binary
        self.dir = workdir
        self.logs = logs
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.outages: list[list[float]] = []  # [down_at, up_at or inf]
        self.kills = 0
        self.empty_restarts = 0
        self.down_event = asyncio.Event()  # set while redis-server is down

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def up(self) -> bool:
        return not self.outages or self.outages[-1][1] != math.inf

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    async def start(self, *, empty: bool) -> None:
        if empty:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.empty_restarts += 1 if self.outages else 0
        self.dir.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)]
        command += ["--protected-mode", "no"]
        self.process = spawn(command, self.logs)
        deadline = now() + 10
        while not await asyncio.to_thread(self._ping):
            if now() > deadline or self.process.poll() is not None:
                raise SystemExit(f"soak: redis-server did not start on port {self.port} (see {self.logs})")
            await asyncio.sleep(0.02)
        if self.outages:
            self.outages[-1][1] = now()
        self.down_event.clear()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None
        self.kills += 1
        self.outages.append([now(), math.inf])
        self.down_event.set()

    def stop(self) -> None:
        terminate(self.process, 2)

    def deadline(self, acked: float, grace: float, *, acting: bool, local_only: bool) -> float:
        """When a change acknowledged at `acked` must hold on a replica (see the module docstring)."""
        deadline = acked + grace
        if acting:
            return deadline
        if local_only:  # replayed once the store is back and settled
            up = next((u for d, u in self.outages if d <= acked < u), acked)
            deadline = max(deadline, up + SETTLE_SECONDS + grace)
        for down, up in self.outages:
            if down < deadline and up > acked:
                deadline = max(deadline, up + SETTLE_SECONDS + grace)
        return deadline


# --------------------------------------------------------------------------------------------- slow upstream


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    payload = {
        "id": "chatcmpl-slow",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": SLOW_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def _slow_chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if body.get("stream") is True:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            for index in range(300):  # 60 s of ticks unless cut
                await response.write(_chunk(f"tick{index} "))
                await asyncio.sleep(0.2)
            await response.write(_chunk(None, "stop"))
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the gateway cut the stream and closed the upstream connection
        return response
    answer = {
        "id": "chatcmpl-slow",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": SLOW_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "slow answer"}, "finish_reason": "stop"}],
    }
    return web.json_response(answer)


# --------------------------------------------------------------------------------------------- the fleet


@dataclass
class Replica:
    name: str
    gateway: str
    admin: str
    process: subprocess.Popen[bytes]


@dataclass
class Outcome:
    """One data-plane answer: `kind` is ok, blocked, suspended, fail_closed, rate_limited, store_5xx,
    client_4xx or transport; for streams, `content_after` is when the last content event arrived."""

    kind: str
    status: int = 0
    code: str = ""
    content: bool = False  # the answer carried model content (a served request)
    stream_end: str = ""  # done, content_filter, error_event, closed
    content_times: list[float] = field(default_factory=list)


class Soak:
    def __init__(self, seconds: float, grace: float, seed: int, scratch: Path, verbose: bool) -> None:
        self.seconds = seconds
        self.grace = grace
        self.seed = seed
        self.rng = random.Random(seed)
        self.scratch = scratch
        self.stats = Stats(verbose=verbose)
        self.t0 = now()
        self.hard_end = self.t0 + seconds
        reserve = min(20.0, max(3.0, seconds * 0.12))
        self.traffic_end = self.hard_end - reserve
        self.redis = Redis(scratch / "redis", scratch / "redis.log")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.replicas: list[Replica] = []
        self.session: aiohttp.ClientSession | None = None
        self.slow_runner: web.AppRunner | None = None
        self.run_tag = "".join(self.rng.choices(string.ascii_lowercase, k=6))
        self.flood_serial = 0

    # ------------------------------------------------------------------ start and stop

    async def start(self) -> None:
        await self.redis.start(empty=True)
        mock_port, slow_port = free_port(), free_port()
        mock = spawn(
            [sys.executable, "-m", "admin.cli", "mock-upstream", "--port", str(mock_port)],
            self.scratch / "mock.log",
        )
        self.processes.append(mock)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", _slow_chat)
        self.slow_runner = web.AppRunner(app, access_log=None)
        await self.slow_runner.setup()
        await web.TCPSite(self.slow_runner, "127.0.0.1", slow_port).start()
        config = self.scratch / "routes.yaml"
        config.write_text(
            f'upstream: "http://127.0.0.1:{mock_port}"\n'
            "routes:\n"
            f'  - {{name: completions, path_prefix: /v1/completions, upstream: "http://127.0.0.1:{mock_port}"}}\n'
            f'  - {{name: slow, path_prefix: /v1/chat, upstream: "http://127.0.0.1:{slow_port}", '
            f"models: [{SLOW_MODEL}]}}\n"
        )
        env = {
            "CONTAINMENT_ADMIN_TOKENS": f"soak:commander:{TOKEN}",
            "CONTAINMENT_REDIS_POLL_SECONDS": str(POLL_SECONDS),
            "CONTAINMENT_SAMPLE_RATE": "0",
            "CONTAINMENT_SHUTDOWN_GRACE_SECONDS": "2",
        }
        for name in ("a", "b"):
            port, admin = free_port(), free_port()
            command = [sys.executable, "-m", "admin.cli", "serve", "--config", str(config)]
            command += ["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
            command += ["--state-dir", str(self.scratch / f"state-{name}"), "--redis-url", self.redis.url]
            command += ["--log-level", "warning"]
            process = spawn(command, self.scratch / f"replica-{name}.log", env)
            self.processes.append(process)
            self.replicas.append(Replica(name, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}", process))
        connector = aiohttp.TCPConnector(limit=400, limit_per_host=0, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=20))
        deadline = now() + 60
        for url in [f"http://127.0.0.1:{mock_port}/v1/models"] + [
            u for r in self.replicas for u in (f"{r.gateway}/_containment/readyz", f"{r.admin}/metrics")
        ]:
            while True:
                for process in self.processes:
                    if process.poll() is not None:
                        raise SystemExit(f"soak: a process exited at start-up (logs in {self.scratch})")
                try:
                    async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
                        if response.status == 200:
                            break
                except (TimeoutError, aiohttp.ClientError):
                    pass
                if now() > deadline:
                    raise SystemExit(f"soak: {url} did not answer within 60 s (logs in {self.scratch})")
                await asyncio.sleep(0.05)
        limit = {"subject": "key", "model": FLOOD_MODEL, "requests": FLOOD_LIMIT, "per_seconds": 60}
        status, body = await self.admin(
            self.replicas[0], "PUT", "/v1/ratelimits", {"limits": [limit], "reason": "soak"}
        )
        if status != 200:
            raise SystemExit(f"soak: could not set the rate limit: HTTP {status}: {body}")

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.slow_runner is not None:
            await self.slow_runner.cleanup()
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.terminate()
        for process in self.processes:
            with contextlib.suppress(Exception):
                terminate(process, 5)
        self.redis.stop()

    # ------------------------------------------------------------------ HTTP

    def running(self) -> bool:
        return now() < self.traffic_end

    async def admin(self, replica: Replica, method: str, path: str, body: object = None) -> tuple[int, Any]:
        assert self.session is not None
        self.stats.add("admin_calls")
        try:
            async with self.session.request(
                method, f"{replica.admin}{path}", json=body, headers=ADMIN_AUTH, timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.stats.note("admin_transport_errors", f"{replica.name} {method} {path}: {exc!r}")
            return 0, None
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        if status == 503:
            self.stats.add("admin_503_store_down")
        elif status >= 400:
            self.stats.note("admin_errors", f"{replica.name} {method} {path}: HTTP {status}: {str(payload)[:300]}")
        return status, payload

    async def send(
        self,
        replica: Replica,
        *,
        path: str = "/v1/chat/completions",
        text: str = "hello",
        model: str = "mock-echo",
        stream: bool = False,
        key: str | None = None,
        what: str,
        stream_until: Callable[[], bool] | None = None,
        on_content: Callable[[float], None] | None = None,
    ) -> Outcome:
        """One data-plane request, classified and counted (`store_5xx` noted here)."""
        assert self.session is not None
        if path.endswith("/completions") and not path.endswith("chat/completions"):
            body: dict[str, object] = {"model": model, "prompt": text, "stream": stream}
        else:
            body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.stats.add("requests_total")
        self.stats.add(f"requests_{replica.name}")
        self.stats.add(f"requests_{what}")
        timeout = aiohttp.ClientTimeout(total=90 if stream_until else 20, sock_read=15)
        try:
            async with self.session.post(
                f"{replica.gateway}{path}", json=body, headers=headers, timeout=timeout
            ) as response:
                status = response.status
                if status != 200 or not stream:
                    raw = await response.read()
                    outcome = self._classify(status, raw, stream=False)
                else:
                    outcome = Outcome("ok", 200)
                    await self._read_stream(response, outcome, stream_until, on_content)
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            if stream and stream_until is not None:
                outcome = Outcome("ok", 200, stream_end="closed")
            else:
                self.stats.note("transport_errors", f"{replica.name} {what}: {exc!r}")
                return Outcome("transport")
        if outcome.kind == "store_5xx":
            self.stats.note(
                "store_5xx",
                f"{replica.name} {what}: HTTP {outcome.status} {outcome.code or '(no code)'}; redis "
                f"{'up' if self.redis.up else 'down'}",
            )
        elif outcome.kind == "fail_closed":
            self.stats.note("fail_closed_503", f"{replica.name} {what} ({outcome.code})")
        return outcome

    @staticmethod
    def _classify(status: int, raw: bytes, *, stream: bool) -> Outcome:
        code = ""
        try:
            payload = json.loads(raw)
            if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                code = str(payload["error"].get("code", ""))
        except ValueError:
            payload = None
        if status == 200:
            content = False
            if isinstance(payload, dict):
                for choice in payload.get("choices") or []:
                    message = choice.get("message") or {}
                    if choice.get("finish_reason") == "content_filter":
                        continue
                    if message.get("content") or choice.get("text"):
                        content = True
            return Outcome("ok", 200, content=content)
        if status == 400 and code == "content_filter":
            return Outcome("blocked", status, code)
        if status == 429:
            return Outcome("rate_limited", status, code)
        if status >= 500:
            if code == "service_suspended":
                return Outcome("suspended", status, code)
            if code == "containment_unavailable":
                return Outcome("fail_closed", status, code)
            return Outcome("store_5xx", status, code)
        return Outcome("client_4xx", status, code)

    @staticmethod
    async def _read_stream(
        response: aiohttp.ClientResponse,
        outcome: Outcome,
        until: Callable[[], bool] | None,
        on_content: Callable[[float], None] | None,
    ) -> None:
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                outcome.stream_end = outcome.stream_end or "done"
                return
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if "error" in event:
                outcome.stream_end = "error_event"
                continue
            for choice in event.get("choices") or []:
                if choice.get("finish_reason") == "content_filter":
                    outcome.stream_end = "content_filter"
                text = (choice.get("delta") or {}).get("content") or choice.get("text")
                if text:
                    outcome.content = True
                    stamp = now()
                    outcome.content_times.append(stamp)
                    if on_content is not None:
                        on_content(stamp)
            if until is not None and until():
                outcome.stream_end = outcome.stream_end or "left"
                return

    # ------------------------------------------------------------------ loops

    async def clean_worker(self, index: int) -> None:
        turn = index
        while self.running():
            turn += 1
            replica = self.replicas[turn % 2]
            shape = turn % 5
            text = self.rng.choice(CLEAN)
            if shape in (0, 1):
                outcome = await self.send(replica, text=text, what="clean")
            elif shape in (2, 3):
                outcome = await self.send(replica, text=text, stream=True, what="clean")
            else:
                outcome = await self.send(replica, path="/v1/completions", text=text, what="clean")
            if outcome.kind == "ok" and outcome.stream_end in ("content_filter", "error_event"):
                self.stats.add("clean_streams_cut")
            elif outcome.kind == "ok":
                self.stats.add("clean_ok")
            elif outcome.kind == "suspended":
                self.stats.add("clean_refused_kill_switch")
            elif outcome.kind == "rate_limited":
                self.stats.note("false_429", f"{replica.name} clean request")
            elif outcome.kind not in ("store_5xx", "fail_closed", "transport"):
                self.stats.note("clean_refused_other", f"{replica.name} HTTP {outcome.status} {outcome.code}")
            await asyncio.sleep(0.005)

    async def responder(self) -> None:
        serial = 0
        tasks: set[asyncio.Task[None]] = set()
        while self.running():
            if len(tasks) < 3 and self.traffic_end - now() > 8:
                serial += 1
                task = asyncio.create_task(self.push_cycle(serial))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(self.rng.uniform(3, 6))
        if tasks:
            await asyncio.wait(tasks, timeout=max(1.0, self.hard_end - now()))

    async def push_cycle(self, serial: int) -> None:
        word = "".join(self.rng.choices(string.ascii_lowercase, k=8))
        phrase = f"soakphrase {word}{serial}"
        acting = self.replicas[serial % 2]
        ttl = 20
        rule = {"pattern": phrase, "applies_to": "both", "action": "block", "ttl_seconds": ttl}
        acked = None
        for _ in range(6):
            status, body = await self.admin(
                acting, "POST", "/v1/rules", {"rules": [rule], "reason": "soak", "force": True}
            )
            if status == 201:
                acked = now()
                break
            if not self.running():
                return
            await asyncio.sleep(1)
        if acked is None:
            self.stats.add("pushes_refused")
            return
        local_only = "local_only" in body
        self.stats.add("pushes")
        self.stats.add("pushes_local_only" if local_only else "pushes_to_store")
        self.stats.event(f"push {phrase!r} via {acting.name}{' (local only)' if local_only else ''}")
        until = min(acked + ttl - 4, self.hard_end - 2)
        turn = 0
        while now() < until:
            turn += 1
            for replica in self.replicas:
                sent = now()
                stream = turn % 3 == 0
                outcome = await self.send(
                    replica, text=f"tell me about {phrase} please", stream=stream, what="probe_rule"
                )
                deadline = self.redis.deadline(acked, self.grace, acting=replica is acting, local_only=local_only)
                forwarded = outcome.kind == "ok" and (outcome.content or not stream)
                if sent >= deadline:
                    self.stats.add("rule_probes_judged")
                    if forwarded:
                        self.stats.note(
                            "restrictions_lifted",
                            f"rule {phrase!r} (pushed via {acting.name}{', local only' if local_only else ''}, "
                            f"acked at t={acked - self.stats.started:.1f}s) forwarded by {replica.name}"
                            f"{' (stream)' if stream else ''}, {sent - acked:.1f}s after the ack",
                        )
                elif forwarded:
                    self.stats.add("rule_probes_forwarded_in_grace")
            await asyncio.sleep(0.25)

    async def commander(self) -> None:
        # Every other cycle waits for a Redis outage and engages during it (taken locally, replayed later).
        plan = [
            ("global", True),
            ("key", False),
            ("route:slow", True),
            ("route:completions", False),
            ("key", True),
            ("global", False),
            ("route:completions", True),
            ("route:slow", False),
        ]
        serial = 0
        while self.running() and self.traffic_end - now() > 6:
            await self.sweep_switches()
            scope_kind, during_outage = plan[serial % len(plan)]
            serial += 1
            await self.killswitch_cycle(serial, scope_kind, during_outage)
            await asyncio.sleep(self.rng.uniform(1, 2))

    async def sweep_switches(self) -> None:
        """Switches of earlier cycles still engaged (a release undone by a lineage merge): release them."""
        for replica in self.replicas:
            status, body = await self.admin(replica, "GET", "/v1/killswitches")
            if status != 200:
                continue
            for switch in body.get("killswitches", []):
                self.stats.note("switches_engaged_after_release", f"{switch['scope']} on {replica.name}")
                await self.admin(
                    replica, "PUT", f"/v1/killswitches/{switch['scope']}", {"engaged": False, "reason": "soak sweep"}
                )

    async def killswitch_cycle(self, serial: int, scope_kind: str, during_outage: bool) -> None:
        acting = self.replicas[serial % 2]
        key: str | None = None
        path, model = "/v1/chat/completions", "mock-echo"
        if scope_kind == "key":
            key = f"sk-soak-{self.run_tag}-cmd-{serial}"
            scope = f"key:{key_id(key)}"
        elif scope_kind == "route:slow":
            scope, model = "route:slow", SLOW_MODEL
        elif scope_kind == "route:completions":
            scope, path = "route:completions", "/v1/completions"
        else:
            scope = "global"
        state: dict[str, float | bool | None] = {
            "engage_sent": None,
            "acked": None,
            "release_sent": None,
            "local_only": False,
        }

        def deadline_for(replica: Replica) -> float:
            acked = state["acked"]
            if not isinstance(acked, float):
                return math.inf
            return self.redis.deadline(
                acked, self.grace, acting=replica is acting, local_only=bool(state["local_only"])
            )

        def holding(stamp: float) -> bool:
            release = state["release_sent"]
            return not isinstance(release, float) or stamp < release

        # Streams already running in scope when the switch is engaged (the slow route streams for a minute).
        streams: list[asyncio.Task[None]] = []
        if scope_kind != "route:completions":
            for replica in self.replicas:
                streams.append(
                    asyncio.create_task(self.running_stream(replica, key, scope, deadline_for, holding, state))
                )
            await asyncio.sleep(0.6)
        if during_outage:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.redis.down_event.wait(), max(0.0, min(35.0, self.traffic_end - now() - 8)))
            if self.redis.up:
                state["release_sent"] = now()
                for task in streams:
                    task.cancel()
                await asyncio.gather(*streams, return_exceptions=True)
                return
            await asyncio.sleep(0.3)

        state["engage_sent"] = now()
        body_in = {"engaged": True, "reason": f"soak {serial}", "mode": "reject", "ttl_seconds": 120}
        for _ in range(6):
            status, answer = await self.admin(acting, "PUT", f"/v1/killswitches/{scope}", body_in)
            if status == 200:
                state["acked"] = now()
                state["local_only"] = "local_only" in answer
                break
            await asyncio.sleep(1)
        if state["acked"] is None:
            self.stats.add("killswitch_engage_refused")
            state["release_sent"] = now()
            await asyncio.gather(*streams, return_exceptions=True)
            return
        self.stats.add("killswitch_cycles")
        self.stats.add(f"killswitch_cycles_{scope_kind.split(':')[0]}")
        if state["local_only"]:
            self.stats.add("killswitch_local_only")
        self.stats.event(f"engage {scope} via {acting.name}{' (local only)' if state['local_only'] else ''}")
        if state["local_only"] and not self.redis.up:
            # Releasing needs the store (503 while it is down): the switch must keep holding.
            status, answer = await self.admin(
                acting, "PUT", f"/v1/killswitches/{scope}", {"engaged": False, "reason": "soak early"}
            )
            if status == 200:
                state["release_sent"] = now()
                self.stats.note("release_accepted_while_store_down", f"{scope} on {acting.name}: {answer}")
            else:
                self.stats.add("release_refused_while_store_down")

        hold_after = self.rng.uniform(1.5, 3.0)
        hold_max = now() + 25
        judged = {replica.name: 0 for replica in self.replicas}
        turn = 0
        while True:
            ends = [deadline_for(r) for r in self.replicas]
            target = max(ends) + hold_after
            if now() >= target or now() >= hold_max or now() >= self.hard_end - 4:
                break
            turn += 1
            for replica in self.replicas:
                stream = turn % 2 == 0
                sent = now()
                outcome = await self.send(
                    replica, path=path, model=model, key=key, stream=stream, what="probe_killswitch"
                )
                served = outcome.kind == "ok" and (outcome.content or not stream)
                if sent >= deadline_for(replica) and holding(sent):
                    judged[replica.name] += 1
                    self.stats.add("killswitch_probes_judged")
                    if served:
                        self.stats.note(
                            "restrictions_lifted",
                            f"kill switch {scope} (engaged via {acting.name}"
                            f"{', local only' if state['local_only'] else ''}) served by {replica.name}"
                            f"{' (stream)' if stream else ''}, {sent - float(state['acked']):.1f}s after the ack",
                        )
                elif served:
                    self.stats.add("killswitch_probes_served_in_grace")
            await asyncio.sleep(0.2)
        if all(judged.values()):
            self.stats.add("killswitch_cycles_judged_on_both")

        # Release: the store is needed; retry while it is down or settling.
        state["release_sent"] = now()
        released = False
        turn = 0
        while now() < self.hard_end - 2:
            replica = self.replicas[(serial + turn) % 2]
            turn += 1
            status, _ = await self.admin(
                replica, "PUT", f"/v1/killswitches/{scope}", {"engaged": False, "reason": "soak"}
            )
            if status == 200:
                released = True
                break
            await asyncio.sleep(0.5)
        self.stats.add("killswitch_released" if released else "killswitch_release_pending_at_end")
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)

    async def running_stream(
        self,
        replica: Replica,
        key: str | None,
        scope: str,
        deadline_for: Callable[[Replica], float],
        holding: Callable[[float], bool],
        state: dict[str, float | bool | None],
    ) -> None:
        """A slow stream in the switch's scope: once the switch holds on this replica, no more content."""
        lifted = False

        def on_content(stamp: float) -> None:
            nonlocal lifted
            # One event (0.2 s apart) may already be on its way when the deadline passes.
            if not lifted and stamp >= deadline_for(replica) + 0.4 and holding(stamp):
                lifted = True
                acked = state["acked"]
                self.stats.note(
                    "restrictions_lifted",
                    f"running stream in {scope} on {replica.name} still streaming "
                    f"{stamp - float(acked or 0):.1f}s after the switch was engaged",
                )

        def stop_reading() -> bool:
            release = state["release_sent"]
            return isinstance(release, float)

        outcome = await self.send(
            replica,
            model=SLOW_MODEL,
            key=key,
            stream=True,
            what="running_stream",
            stream_until=stop_reading,
            on_content=on_content,
        )
        self.stats.event(
            f"running stream in {scope} on {replica.name}: {outcome.kind} {outcome.status} {outcome.stream_end} "
            f"{len(outcome.content_times)} events"
        )
        if outcome.kind != "ok" or state["engage_sent"] is None or state["acked"] is None:
            return  # refused before it ran, or no switch was engaged
        self.stats.add("running_streams_judged")
        if outcome.stream_end in ("content_filter", "error_event", "closed"):
            self.stats.add("running_streams_cut")

    async def flood(self) -> None:
        batch_size = 150
        while self.running():
            self.flood_serial += 1
            serial = self.flood_serial
            keys = [f"sk-soak-{self.run_tag}-flood-{serial}-{i}" for i in range(batch_size)]
            queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
            for index, key in enumerate(keys):
                queue.put_nowait((index, key))

            async def worker(queue: asyncio.Queue[tuple[int, str]]) -> None:
                while self.running() and not queue.empty():
                    index, key = queue.get_nowait()
                    outcome = await self.send(self.replicas[index % 2], model=FLOOD_MODEL, key=key, what="flood")
                    if outcome.kind == "ok":
                        self.stats.add("flood_admitted")
                    elif outcome.kind == "rate_limited":
                        self.stats.note("false_429", f"fresh flood key on {self.replicas[index % 2].name}")
                    elif outcome.kind == "suspended":
                        self.stats.add("flood_refused_kill_switch")

            await asyncio.gather(*(worker(queue) for _ in range(12)))
            # One hot key over its limit: over-admission is reported (the fleet leases capacity).
            hot = f"sk-soak-{self.run_tag}-hot-{serial}"
            admitted = 0
            for index in range(4 * FLOOD_LIMIT):
                outcome = await self.send(self.replicas[index % 2], model=FLOOD_MODEL, key=hot, what="flood")
                admitted += outcome.kind == "ok"
                if outcome.kind == "rate_limited":
                    self.stats.add("hot_key_429")
            if admitted > FLOOD_LIMIT:
                self.stats.note(
                    "hot_key_over_admitted",
                    f"{admitted} of {4 * FLOOD_LIMIT} admitted (limit {FLOOD_LIMIT}); "
                    f"redis {'up' if self.redis.up else 'down'}",
                )
            await asyncio.sleep(self.rng.uniform(0.5, 1.5))

    async def chaos(self) -> None:
        traffic = self.traffic_end - now()
        wake = now() + min(self.rng.uniform(20, 30), max(2.0, traffic * 0.25))
        kill = 0
        while True:
            await asyncio.sleep(max(0.0, wake - now()))
            down_for = self.rng.uniform(2, 5) if traffic >= 60 else self.rng.uniform(2, 3)  # short runs: short outages
            if now() + down_for + 1 > self.traffic_end:
                return
            empty = kill % 2 == 0
            kill += 1
            self.redis.kill()
            self.stats.event(f"redis killed (restart {'empty' if empty else 'with its data'} in {down_for:.1f}s)")
            await asyncio.sleep(down_for)
            await self.redis.start(empty=empty)
            self.stats.event("redis back")
            wake = now() + self.rng.uniform(20, 30)

    async def watch_replicas(self) -> None:
        seen: set[str] = set()
        while now() < self.hard_end:
            for replica in self.replicas:
                if replica.process.poll() is not None and replica.name not in seen:
                    seen.add(replica.name)
                    self.stats.note("replica_exits", f"{replica.name} exited with {replica.process.returncode}")
            await asyncio.sleep(0.2)

    async def converge(self) -> None:
        """At the end, with Redis up: both replicas enforce the same policy version."""
        deadline = min(now() + 10, self.hard_end)
        versions: list[object] = []
        while now() < deadline:
            versions = []
            for replica in self.replicas:
                status, body = await self.admin(replica, "GET", "/v1/policy")
                versions.append(body.get("enforced_version", body.get("version")) if status == 200 else None)
            if None not in versions and len(set(map(str, versions))) == 1:
                self.stats.counts["final_policy_version"] = int(str(versions[0]))
                return
            await asyncio.sleep(0.5)
        self.stats.note("fleet_not_converged_at_end", f"versions {versions}")

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        await self.start()
        self.stats.event(f"fleet up in {now() - self.t0:.1f}s")
        watcher = asyncio.create_task(self.watch_replicas())
        loops: list[Awaitable[None]] = [self.clean_worker(i) for i in range(4)]
        loops += [self.responder(), self.commander(), self.flood(), self.chaos()]
        tasks = [asyncio.ensure_future(loop) for loop in loops]
        done, pending = await asyncio.wait(tasks, timeout=max(1.0, self.hard_end - now() - 1))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if self.redis.up and now() < self.hard_end:
            await self.converge()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        for replica in self.replicas:
            if replica.process.poll() is not None and self.stats.counts["replica_exits"] == 0:
                self.stats.note("replica_exits", f"{replica.name} exited with {replica.process.returncode}")

    def report(self) -> int:
        c = self.stats.counts
        elapsed = now() - self.t0
        build = "pure Python" if os.environ.get("CONTAINMENT_PURE_PYTHON") == "1" else "default build"
        print(
            f"soak: {elapsed:.0f} s (budget {self.seconds:.0f} s), seed {self.seed}, grace {self.grace:g} s, "
            f"2 replicas on redis-server, {build}"
        )
        lines = [
            ("restrictions_lifted", c["restrictions_lifted"]),
            ("store_5xx", c["store_5xx"]),
            ("replica_exits", c["replica_exits"]),
            ("requests_total", c["requests_total"]),
            ("requests_per_replica", f"a={c['requests_a']} b={c['requests_b']}"),
            ("requests_clean", c["requests_clean"]),
            ("clean_ok", c["clean_ok"]),
            ("clean_refused_kill_switch", c["clean_refused_kill_switch"]),
            ("clean_streams_cut", c["clean_streams_cut"]),
            ("clean_refused_other", c["clean_refused_other"]),
            ("requests_flood", c["requests_flood"]),
            ("flood_admitted", c["flood_admitted"]),
            ("false_429", c["false_429"]),
            ("hot_key_over_admitted", c["hot_key_over_admitted"]),
            ("requests_probe_rule", c["requests_probe_rule"]),
            ("rule_probes_judged", c["rule_probes_judged"]),
            ("rule_probes_forwarded_in_grace", c["rule_probes_forwarded_in_grace"]),
            ("pushes", f"{c['pushes']} ({c['pushes_local_only']} local only, {c['pushes_refused']} refused)"),
            ("requests_probe_killswitch", c["requests_probe_killswitch"]),
            ("killswitch_probes_judged", c["killswitch_probes_judged"]),
            ("killswitch_probes_served_in_grace", c["killswitch_probes_served_in_grace"]),
            (
                "killswitch_cycles",
                f"{c['killswitch_cycles']} (global {c['killswitch_cycles_global']}, "
                f"route {c['killswitch_cycles_route']}, key {c['killswitch_cycles_key']}; "
                f"{c['killswitch_local_only']} local only; "
                f"{c['killswitch_cycles_judged_on_both']} judged on both replicas; "
                f"{c['killswitch_engage_refused']} engage refused)",
            ),
            (
                "killswitch_released",
                f"{c['killswitch_released']} ({c['killswitch_release_pending_at_end']} pending at end)",
            ),
            ("running_streams_judged", f"{c['running_streams_judged']} ({c['running_streams_cut']} cut)"),
            (
                "release_refused_while_store_down",
                f"{c['release_refused_while_store_down']} ({c['release_accepted_while_store_down']} accepted)",
            ),
            ("switches_engaged_after_release", c["switches_engaged_after_release"]),
            ("fail_closed_503", c["fail_closed_503"]),
            ("transport_errors", c["transport_errors"]),
            ("redis_kills", f"{self.redis.kills} ({self.redis.empty_restarts} restarted empty)"),
            (
                "admin_calls",
                f"{c['admin_calls']} ({c['admin_503_store_down']} answered 503, {c['admin_errors']} other errors)",
            ),
            ("fleet_not_converged_at_end", c["fleet_not_converged_at_end"]),
            ("final_policy_version", c["final_policy_version"]),
        ]
        for name, value in lines:
            print(f"{name:34} {value}")
        for name, examples in self.stats.examples.items():
            if name in FAILURES or name in ("false_429", "clean_refused_other", "transport_errors", "admin_errors"):
                for example in examples:
                    print(f"  {name}: {example}")
        failed = any(c[name] for name in FAILURES)
        print(f"soak: {'FAIL' if failed else 'PASS'}", flush=True)
        return 1 if failed else 0


def main() -> int:
    seconds = min(float(os.environ.get("SOAK_SECONDS", "180")), MAX_SECONDS)
    grace = float(os.environ.get("SOAK_GRACE", "3"))
    seed = int(os.environ.get("SOAK_SEED") or random.randrange(1_000_000))
    keep = os.environ.get("SOAK_KEEP") == "1"
    scratch = Path(tempfile.mkdtemp(prefix="containment-soak-"))
    soak = Soak(seconds, grace, seed, scratch, os.environ.get("SOAK_VERBOSE") == "1")
    print(f"soak: {seconds:.0f} s, seed {seed}, scratch {scratch}", flush=True)

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    code = 2
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(soak.run())
        code = soak.report()
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        code = 130
    finally:
        with contextlib.suppress(BaseException):
            loop.run_until_complete(soak.stop())
        for process in soak.processes:  # whatever stop() could not end
            if process.poll() is None:
                process.kill()
        soak.redis.stop()
        loop.close()
        if code == 0 and not keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"soak: logs kept in {scratch}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
