"""Starting the real processes the benchmarks measure: the mock upstream, gateways, a redis-server.

Each runs on a free loopback port; the caller terminates what it started.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-commander-token"
CLI = [sys.executable, "-m", "admin.cli"]


async def admin_call(session: aiohttp.ClientSession, method: str, url: str, payload: object, expect: int) -> None:
    """One admin API call with the bench's commander token; any other status than `expect` stops the run."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.request(method, url, json=payload, headers=headers) as response:
        if response.status != expect:
            raise SystemExit(f"{method} {url}: HTTP {response.status}: {await response.text()}")
        await response.read()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_mock(*, chunk_chars: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """`containment mock-upstream`: (process, port)."""
    port = free_port()
    command = [*CLI, "mock-upstream", "--port", str(port)]
    if chunk_chars is not None:
        command += ["--chunk-chars", str(chunk_chars)]
    return subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL), port


def start_gateway(
    upstream_port: int,
    *,
    state_dir: str | None = None,
    redis_url: str | None = None,
    env: dict[str, str] | None = None,
    tree: Path = ROOT,
) -> tuple[subprocess.Popen[bytes], int, int]:
    """`containment serve` in front of the mock upstream, from the source tree `tree`, with the bench's
    commander token: (process, data-plane port, admin port)."""
    port, admin = free_port(), free_port()
    command = [*CLI, "serve", "--upstream", f"http://127.0.0.1:{upstream_port}"]
    command += ["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
    command += ["--state-dir", state_dir or tempfile.mkdtemp(prefix="containment-bench-"), "--log-level", "warning"]
    if redis_url is not None:
        command += ["--redis-url", redis_url]
    environment = {**os.environ, "CONTAINMENT_ADMIN_TOKENS": f"bench:commander:{TOKEN}", **(env or {})}
    if tree != ROOT:
        environment["PYTHONPATH"] = str(tree)
    process = subprocess.Popen(command, cwd=tree, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, port, admin


def start_redis(workdir: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server that keeps nothing on disk: (process, port)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen([*command, "--dir", workdir or tempfile.mkdtemp()], stdout=subprocess.DEVNULL)
    time.sleep(0.3)
    return server, port
