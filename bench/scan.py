"""Matching-engine benchmark: scan throughput, per-prompt latency, compile time and memory.

    .venv/bin/python bench/scan.py            # full run (10k and 100k literals, 100 regexes)
    .venv/bin/python bench/scan.py --quick    # smaller, for a smoke check

Prints a Markdown table (paste into docs/performance.md with the command line).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus import policy as make_policy  # noqa: E402
from bench.corpus import text as make_text  # noqa: E402
from rules.compile import compile_policy  # noqa: E402
from rules.literal_index import hyperscan_available  # noqa: E402
from rules.model import Policy  # noqa: E402
from rules.normalize import TextView  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(literals: int, regexes: int, backend: str) -> tuple[Policy, float, float]:
    policy = make_policy(literals, regexes)
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    compiled = compile_policy(policy, backend=backend)
    seconds = time.perf_counter() - started
    gc.collect()
    grown = rss_mb() - before
    build.last = compiled  # type: ignore[attr-defined]
    return policy, seconds, grown


def scan_times(text: str, repeat: int) -> list[float]:
    matcher = build.last.input  # type: ignore[attr-defined]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _hit in matcher.scan(TextView(text)):
            pass
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [(2_000, 100), (10_000, 100)] if args.quick else [(10_000, 100), (100_000, 100), (100_000, 0)]
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.processor() or 'cpu'}")
    print()
    backends = ["ahocorasick"] + (["hyperscan"] if hyperscan_available() else [])
    print("| backend | literals | regexes | compile s | RSS growth MB | text | p50 ms | p99 ms | MB/s |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    for backend, (literals, regexes) in ((b, size) for size in sizes for b in backends):
        _, seconds, grown = build(literals, regexes, backend)
        for label, size, repeat in (("1 KB", 1_000, 2000), ("4 KB", 4_096, 1000), ("100 KB", 100_000, 40)):
            text = make_text(size)
            times = sorted(scan_times(text, repeat if not args.quick else max(10, repeat // 10)))
            p50 = statistics.median(times)
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            mbps = len(text.encode()) / p50 / 1e6
            print(
                f"| {backend} | {literals:,} | {regexes} | {seconds:.2f} | {grown:.0f} | {label} | "
                f"{p50 * 1e3:.3f} | {p99 * 1e3:.3f} | {mbps:.1f} |"
            )
    print()
    print("Scan = both views (compact + light) + the literal index + the regex prefilter and the regexes it selects,")
    print("on benign text.")


if __name__ == "__main__":
    main()
