"""`make soak` in small: loadtests/soak.py for ~20 s against two real fleet replicas and a real redis-server.

The soak kills redis-server once (restarted empty), engages a global kill switch while it is down (with
streams running in scope), pushes rules, floods keys; its report must count zero restrictions lifted and
zero store-caused 5xx, and show that the Redis kill and the kill switch really happened and were judged
on both replicas.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "loadtests" / "soak.py"


def _counts(report: str) -> dict[str, int]:
    """`name   N ...` report lines: the first number after each counter name."""
    counts = {}
    for line in report.splitlines():
        match = re.match(r"^([a-z_0-9]+)\s+(\d+)", line)
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


@pytest.mark.timeout(60)
def test_a_short_soak_lifts_no_restriction_and_answers_no_store_5xx() -> None:
    env = {**os.environ, "SOAK_SECONDS": "20"}
    env.pop("SOAK_KEEP", None)
    result = subprocess.run(
        [sys.executable, str(SOAK)], env=env, capture_output=True, text=True, timeout=50, check=False
    )
    report = result.stdout
    counts = _counts(report)
    assert result.returncode == 0, report + result.stderr
    assert counts["restrictions_lifted"] == 0, report
    assert counts["store_5xx"] == 0, report
    assert counts["replica_exits"] == 0, report
    assert counts["redis_kills"] >= 1, report  # redis-server was SIGKILLed (and restarted) at least once
    assert re.search(r"^killswitch_cycles\s+\d+ \(.*[1-9]\d* local only", report, re.M), report
    assert counts["killswitch_probes_judged"] > 0, report  # in-scope requests after the grace period
    assert re.search(r"^killswitch_cycles\s+.*[1-9]\d* judged on both replicas", report, re.M), report
    assert counts["rule_probes_judged"] > 0, report
    assert counts["running_streams_judged"] > 0, report
    assert counts["requests_flood"] > 0 and counts["clean_ok"] > 0, report
