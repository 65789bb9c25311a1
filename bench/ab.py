"""A/B: two builds of the gateway side by side against one mock upstream, in alternating rounds.

    .venv/bin/python bench/ab.py 75660fa HEAD              # c=32, non-streaming and streaming
    .venv/bin/python bench/ab.py main WORKTREE --rounds 5   # WORKTREE: the working tree as it is
    .venv/bin/python bench/ab.py HEAD /tmp/other-checkout   # a directory: that source tree as it is

On a shared machine whose speed drifts between runs, comparing two separate runs of bench/proxy.py
says little; here both builds serve the same load in alternation, within seconds of each other. Each
revision is checked out into a temporary git worktree and run with this project's .venv. Prints the
gateway CPU µs per request and RPS of every round, and the direct (mock upstream) RPS of each round.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.processes import start_gateway, start_mock  # noqa: E402
from bench.proxy import TEXT, body, cpu_seconds, load_policy, measure  # noqa: E402


def checkout(revision: str, into: Path) -> Path:
    if revision == "WORKTREE":
        return ROOT
    if Path(revision).is_dir():  # a source tree as it is (say, another checkout with compiled modules)
        return Path(revision).resolve()
    target = into / revision.replace("/", "_")
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(target), revision], cwd=ROOT, check=True, capture_output=True
    )
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("revisions", nargs=2, help="git revisions, or WORKTREE for the working tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--literals", type=int, default=100_000)
    parser.add_argument("--regexes", type=int, default=100)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/ab.py needs wrk (apt-get install wrk)")
    scratch = Path(tempfile.mkdtemp(prefix="containment-ab-"))
    trees = [checkout(revision, scratch) for revision in args.revisions]
    mock, mock_port = start_mock(chunk_chars=len(TEXT) // 20)
    gateways: list[tuple[str, subprocess.Popen[bytes], int, int]] = []
    try:
        for revision, tree in zip(args.revisions, trees, strict=True):
            process, port, admin = start_gateway(mock_port, state_dir=tempfile.mkdtemp(dir=scratch), tree=tree)
            gateways.append((revision, process, port, admin))
        time.sleep(2)
        for _, _, port, admin in gateways:
            asyncio.run(load_policy(admin, port, args.literals, args.regexes))
        time.sleep(12)  # Hyperscan builds replace the first ones; heaps trimmed
        for stream in (False, True):
            payload = body(stream)
            direct: list[float] = []
            rows: dict[str, list[str]] = {revision: [] for revision, *_ in gateways}
            for _ in range(args.rounds):
                url = f"http://127.0.0.1:{mock_port}/v1/chat/completions"
                direct.append(measure(url, payload, 32, args.seconds, True).rps)
                for revision, process, port, _ in gateways:
                    before = cpu_seconds(process.pid)
                    result = measure(f"http://127.0.0.1:{port}/v1/chat/completions", payload, 32, args.seconds, True)
                    cpu = (cpu_seconds(process.pid) - before) / result.requests * 1e6
                    rows[revision].append(f"{cpu:5.0f} µs/{result.rps:6.0f} RPS")
            print(f"{'stream' if stream else 'non-stream'} c=32; direct RPS: {', '.join(f'{r:.0f}' for r in direct)}")
            for revision, cells in rows.items():
                print(f"  {revision:>12}: {' | '.join(cells)}")
    finally:
        for _, process, _, _ in gateways:
            process.terminate()
        mock.terminate()
        for tree in trees:
            if tree.is_relative_to(scratch):
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
