"""Proxy benchmark: the same chat request direct to the mock upstream and through the gateway, side by
side in one run, with every check on: 100k literal + 100 regex rules (input and output scanning), a
deny list, a per-IP rate limit, and the default 1 % sampling.

    .venv/bin/python bench/proxy.py                    # wrk when installed, else a Python load client
    .venv/bin/python bench/proxy.py --seconds 10 --literals 100000 --regexes 100
    .venv/bin/python bench/proxy.py --pure-python      # the gateway's sources, as without a C compiler

For each mode (non-streaming, streaming with 20 chunks) and concurrency (1, 32): requests per second,
p50/p99 latency, the ratio to direct, and the gateway's CPU time per request (from /proc). Direct and
gateway runs alternate for --rounds rounds and the round with the median ratio is reported (a shared
machine's speed drifts between runs). Bounded by --seconds per run; starts and stops its own processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import rules as make_rules  # noqa: E402
from bench.processes import admin_call, rss_mb, start_gateway, start_mock  # noqa: E402

TEXT = "Please summarise the history of the water system for the research team in plain words"  # 80 chars


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    cpu_us: float | None = None


def body(stream: bool) -> bytes:
    return json.dumps(
        {"model": "mock-echo", "stream": stream, "messages": [{"role": "user", "content": TEXT}]}
    ).encode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, payload: bytes, concurrency: int, seconds: float) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(payload.decode())}\n"
        )
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            str(concurrency),
            "-d",
            f"{max(1, round(seconds))}s",
            "--latency",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    os.unlink(script.name)

    def latency(label: str) -> float:
        found = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not found:
            return float("nan")
        value, unit = float(found.group(1)), found.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{errors.group(1)} failed requests against {url}:\n{out}")
    return Result(rps, latency("50"), latency("99"), total)


async def run_python(url: str, payload: bytes, concurrency: int, seconds: float) -> Result:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"HTTP {response.status} from {url}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return Result(
        len(ordered) / elapsed, statistics.median(ordered) * 1e3, ordered[int(len(ordered) * 0.99)] * 1e3, len(ordered)
    )


def measure(url: str, payload: bytes, concurrency: int, seconds: float, use_wrk: bool) -> Result:
    if use_wrk:
        return run_wrk(url, payload, concurrency, seconds)
    return asyncio.run(run_python(url, payload, concurrency, seconds))


def start(pure_python: bool = False) -> tuple[list[subprocess.Popen[bytes]], int, int, int]:
    """The mock upstream (20 chunks per streamed answer) and one gateway with its default settings
    (sampling 1 % of requests), compiled or (`pure_python`) running its sources."""
    mock, mock_port = start_mock(chunk_chars=len(TEXT) // 20)
    env = {"CONTAINMENT_PURE_PYTHON": "1"} if pure_python else None
    gateway, gw_port, admin_port = start_gateway(mock_port, env=env)
    return [mock, gateway], mock_port, gw_port, admin_port


# Every check on: besides the rules, a deny list (none of it loopback) and a per-IP rate limit far above
# what a run sends, so that both are evaluated on every request without refusing any.
ACCESS = {"deny": {"cidrs": [f"10.{index}.0.0/16" for index in range(100)]}, "reason": "bench"}
LIMITS = {"limits": [{"subject": "ip", "requests": 10_000_000, "per_seconds": 60}], "reason": "bench"}


async def load_policy(admin_port: int, gw_port: int, literals: int, regexes: int) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        for _ in range(200):
            try:
                async with session.get(f"http://127.0.0.1:{gw_port}/_containment/readyz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        rules = make_rules(literals, regexes)
        for rule in rules:
            rule["stage"] = 2  # no default expiry needed here
        admin = f"http://127.0.0.1:{admin_port}"
        push = {"rules": rules, "reason": "bench", "force": True}  # made-up patterns: past the safety net
        await admin_call(session, "POST", f"{admin}/v1/rules", push, 201)
        await admin_call(session, "PUT", f"{admin}/v1/access", ACCESS, 200)
        await admin_call(session, "PUT", f"{admin}/v1/ratelimits", LIMITS, 200)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--literals", type=int, default=100_000)
    parser.add_argument("--regexes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="alternating direct/gateway rounds per cell (median)")
    parser.add_argument("--python-client", action="store_true", help="use the Python load client even if wrk exists")
    parser.add_argument(
        "--pure-python",
        action="store_true",
        help="run the gateway's sources, not its mypyc build (as without a compiler)",
    )
    args = parser.parse_args()
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    processes, mock_port, gw_port, admin_port = start(args.pure_python)
    rows = []
    try:
        time.sleep(1.0)
        asyncio.run(load_policy(admin_port, gw_port, args.literals, args.regexes))
        # With Hyperscan installed, its build of the policy replaces pyahocorasick's by then (heap trimmed).
        time.sleep(12)
        gateway_pid = processes[1].pid
        rss = rss_mb(gateway_pid)
        for stream in (False, True):
            payload = body(stream)
            for concurrency in (1, 32):
                pairs = []
                for _ in range(args.rounds):  # alternating, so that both sides see the same machine
                    direct = measure(
                        f"http://127.0.0.1:{mock_port}/v1/chat/completions", payload, concurrency, args.seconds, use_wrk
                    )
                    cpu_before = cpu_seconds(gateway_pid)
                    through = measure(
                        f"http://127.0.0.1:{gw_port}/v1/chat/completions", payload, concurrency, args.seconds, use_wrk
                    )
                    through.cpu_us = (cpu_seconds(gateway_pid) - cpu_before) / through.requests * 1e6
                    pairs.append((direct, through))
                # the round with the median ratio stands for the cell
                pairs.sort(key=lambda pair: pair[1].rps / pair[0].rps)
                direct, through = pairs[len(pairs) // 2]
                rows.append((stream, concurrency, direct, through))
    finally:
        for process in processes:
            process.terminate()
    client = "wrk (1 thread)" if use_wrk else "Python aiohttp client"
    print(
        f"gateway: {'pure Python' if args.pure_python else 'as installed'}; "
        f"client: {client}; {args.seconds:.0f} s per run, median of {args.rounds} alternating rounds; "
        f"{args.literals:,} literals + {args.regexes} regexes "
        f"(input and output); gateway RSS {rss:.0f} MB"
    )
    print()
    print(
        "| mode | c | direct RPS | gateway RPS | ratio | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 ms "
        "| gateway CPU µs/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for stream, concurrency, direct, through in rows:
        print(
            f"| {'stream (20 chunks)' if stream else 'non-stream'} | {concurrency} | {direct.rps:,.0f} | "
            f"{through.rps:,.0f} | {through.rps / direct.rps:.2f} | {direct.p50_ms:.2f} / {direct.p99_ms:.2f} | "
            f"{through.p50_ms:.2f} / {through.p99_ms:.2f} | {through.p50_ms - direct.p50_ms:.2f} | "
            f"{through.cpu_us:.0f} |"
        )


if __name__ == "__main__":
    main()
