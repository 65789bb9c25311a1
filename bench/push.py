"""Push-to-enforcement benchmark: a 100k-literal (+100 regex) push into a running gateway under traffic.

    .venv/bin/python bench/push.py                 # 100,000 literals + 100 regexes, 8 concurrent clients
    .venv/bin/python bench/push.py --literals 20000 --clients 4

Starts `containment mock-upstream` and `containment serve` as real processes on free loopback ports,
keeps clean chat traffic flowing, pushes the rule set through the admin API, and reports: the push
call's duration, the time from the push until a request containing a pushed phrase is refused, the
traffic's failures and latency during the push, the time a kill switch then takes to be enforced with
the rules loaded, and the gateway's RSS. Bounded: stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import rules as make_rules  # noqa: E402
from bench.processes import admin_call, rss_mb, start_gateway, start_mock  # noqa: E402


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise SystemExit(f"{url} never became ready")


def chat(text: str) -> dict[str, object]:
    return {"model": "mock-echo", "messages": [{"role": "user", "content": text}]}


async def traffic(
    session: aiohttp.ClientSession, url: str, stop: asyncio.Event, latencies: list[float], failures: list[str]
) -> None:
    body = chat("Please summarise the history of the water system for the research team. " * 4)
    while not stop.is_set():
        started = time.perf_counter()
        try:
            async with session.post(url, json=body) as response:
                await response.read()
                if response.status != 200:
                    failures.append(str(response.status))
        except aiohttp.ClientError as exc:
            failures.append(type(exc).__name__)
        latencies.append(time.perf_counter() - started)


async def engage_kill_switch(session: aiohttp.ClientSession, base: str, admin: str) -> float:
    """With the rules loaded: engage a kill switch scoped to a model the clean traffic does not use, and
    return the time from the call until a request for that model is refused."""
    started = time.perf_counter()
    switch = {"engaged": True, "reason": "bench"}
    await admin_call(session, "PUT", f"{admin}/v1/killswitches/model:bench-killed", switch, 200)
    probe = {"model": "bench-killed", "messages": [{"role": "user", "content": "hello"}]}
    while time.perf_counter() - started < 30:
        async with session.post(f"{base}/v1/chat/completions", json=probe) as answer:
            if answer.status == 503:
                return time.perf_counter() - started
    return float("nan")


async def run(args: argparse.Namespace) -> None:
    mock, mock_port = start_mock()
    gateway, gw_port, admin_port = start_gateway(mock_port)
    base, admin = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{admin_port}"
    rules = make_rules(args.literals, args.regexes)
    probe_phrase = rules[len(rules) // 2]["pattern"] if args.literals else "x"
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            await wait_ready(session, f"{base}/_containment/readyz")
            await wait_ready(session, f"http://127.0.0.1:{mock_port}/v1/models")
            rss_before = rss_mb(gateway.pid)
            stop = asyncio.Event()
            baseline: list[float] = []
            failures: list[str] = []
            workers = [
                asyncio.create_task(traffic(session, f"{base}/v1/chat/completions", stop, baseline, failures))
                for _ in range(args.clients)
            ]
            await asyncio.sleep(2)
            before_push = list(baseline)
            baseline.clear()
            started = time.perf_counter()
            # Forced: a few of the 100k made-up syllable patterns hit the benign corpus; forcing skips only the
            # refusal, the safety net still scans and self-tests them (its cost is part of the push).
            push = {"rules": rules, "reason": "bench", "force": True}
            await admin_call(session, "POST", f"{admin}/v1/rules", push, 201)
            push_seconds = time.perf_counter() - started
            enforced_seconds = float("nan")
            deadline = time.perf_counter() + 30
            while time.perf_counter() < deadline:
                async with session.post(f"{base}/v1/chat/completions", json=chat(f"tell me {probe_phrase}")) as probe:
                    if probe.status == 400:
                        enforced_seconds = time.perf_counter() - started
                        break
                await asyncio.sleep(0.01)
            during = list(baseline)
            await asyncio.sleep(1)
            kill_seconds = await engage_kill_switch(session, base, admin)
            stop.set()
            await asyncio.gather(*workers)
            rss_after = rss_mb(gateway.pid)
    finally:
        for process in (gateway, mock):
            process.terminate()

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3 if ordered else float("nan")

    print(f"rules pushed: {args.literals:,} literals + {args.regexes} regexes; clean traffic: {args.clients} clients")
    print()
    print("| measure | value |")
    print("|---|---:|")
    print(f"| push call (validate + persist + compile + swap), s | {push_seconds:.2f} |")
    print(f"| push start → first refused request, s | {enforced_seconds:.2f} |")
    print(f"| clean requests during the push | {len(during):,} |")
    print(f"| failed clean requests during the push | {len(failures)} |")
    print(
        f"| latency before the push p50 / p99, ms | {statistics.median(before_push) * 1e3:.2f} / "
        f"{pct(before_push, 0.99):.2f} |"
    )
    print(
        f"| latency during the push p50 / p99 / max, ms | {pct(during, 0.5):.2f} / {pct(during, 0.99):.2f} / "
        f"{pct(during, 1.0):.2f} |"
    )
    print(f"| kill switch call → first refused request, rules loaded, ms | {kill_seconds * 1e3:.1f} |")
    print(f"| gateway RSS before / after, MB | {rss_before:.0f} / {rss_after:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--literals", type=int, default=100_000)
    parser.add_argument("--regexes", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
