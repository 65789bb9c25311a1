"""Propagation benchmark: how long until every replica enforces a rule pushed to one of them.

    .venv/bin/python bench/propagation.py                  # 4 replicas, 40 pushes, one redis-server
    .venv/bin/python bench/propagation.py --replicas 6 --pushes 100

Starts a redis-server (free port, no persistence), `containment mock-upstream`, and N `containment
serve --redis-url` processes; pushes one rule at a time to a replica chosen round-robin and polls every
replica with a request carrying the new phrase until each refuses it. Reports per-replica propagation
time (push call returned → refused) as p50 / p99 / max, and the push call itself. Bounded; cleans up.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.processes import admin_call, start_gateway, start_mock, start_redis  # noqa: E402
from bench.push import wait_ready  # noqa: E402


def start_all(replicas: int, workdir: str) -> tuple[list[subprocess.Popen[bytes]], int, list[tuple[int, int]]]:
    redis, redis_port = start_redis(workdir)
    mock, mock_port = start_mock()
    processes, ports = [redis, mock], []
    for index in range(replicas):
        gateway, port, admin = start_gateway(
            mock_port, state_dir=f"{workdir}/r{index}", redis_url=f"redis://127.0.0.1:{redis_port}/0"
        )
        processes.append(gateway)
        ports.append((port, admin))
    return processes, mock_port, ports


async def blocked(session: aiohttp.ClientSession, port: int, phrase: str) -> bool:
    body = {"model": "mock-echo", "messages": [{"role": "user", "content": phrase}]}
    async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as response:
        await response.read()
        return response.status == 400


async def run(args: argparse.Namespace) -> None:
    workdir = tempfile.mkdtemp(prefix="containment-propagation-")
    processes, mock_port, ports = start_all(args.replicas, workdir)
    delays: list[float] = []
    calls: list[float] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for gw, _ in ports:
                await wait_ready(session, f"http://127.0.0.1:{gw}/_containment/readyz")
            await wait_ready(session, f"http://127.0.0.1:{mock_port}/v1/models")
            await asyncio.sleep(0.5)
            for push in range(args.pushes):
                phrase = f"propagation probe {push} zq"
                _, admin = ports[push % len(ports)]
                started = time.perf_counter()
                payload = {"rules": [{"pattern": phrase}], "reason": "bench"}
                await admin_call(session, "POST", f"http://127.0.0.1:{admin}/v1/rules", payload, 201)
                pushed = time.perf_counter()
                calls.append(pushed - started)

                async def until_blocked(port: int, phrase: str = phrase, pushed: float = pushed) -> float:
                    deadline = pushed + 10
                    while time.perf_counter() < deadline:
                        if await blocked(session, port, phrase):
                            return time.perf_counter() - pushed
                        await asyncio.sleep(0.002)
                    return float("inf")

                delays.extend(await asyncio.gather(*(until_blocked(gw) for gw, _ in ports)))
    finally:
        for process in processes:
            process.terminate()

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3

    print(f"{args.replicas} replicas, {args.pushes} pushes, {len(delays)} replica-propagations")
    print()
    print("| measure | p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|")
    print(
        f"| push call (admin API, commit to Redis) | {pct(calls, 0.5):.1f} | {pct(calls, 0.99):.1f} | "
        f"{pct(calls, 1.0):.1f} |"
    )
    print(
        f"| push returned → replica refuses the phrase | {pct(delays, 0.5):.1f} | {pct(delays, 0.99):.1f} | "
        f"{pct(delays, 1.0):.1f} |"
    )
    print(f"\nmean {statistics.mean(delays) * 1e3:.1f} ms; all within 1 s: {all(d < 1 for d in delays)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--pushes", type=int, default=40)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
