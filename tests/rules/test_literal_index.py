"""One suite for both literal backends: pyahocorasick and Hyperscan report identical hits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.literal_index import AhoCorasickIndex, HyperscanIndex, hyperscan_available
from rules.match import Matcher
from rules.model import RuleSpec, utcnow
from rules.normalize import TextView
from tests.rules.test_normalize import NERVE_AGENT_VARIANTS

BACKENDS = ["ahocorasick", "hyperscan"]
needs_hyperscan = pytest.mark.skipif(not hyperscan_available(), reason="hyperscan wheels are x86-64 only")
ALPHABET = st.sampled_from(list("abcio") + ["é", "ж", "中", "𝐚"])


@needs_hyperscan
@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(ALPHABET, min_size=1, max_size=4), min_size=1, max_size=12, unique=True),
    st.text(ALPHABET, max_size=60),
)
def test_backends_report_identical_hits(keys: list[str], text: str) -> None:
    values = [f"v{index}" for index in range(len(keys))]
    expected = sorted(AhoCorasickIndex(keys, values).find(text))
    assert sorted(HyperscanIndex(keys, values).find(text)) == expected


@needs_hyperscan
@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(ALPHABET, min_size=1, max_size=5), min_size=1, max_size=12, unique=True),
    st.text(ALPHABET, min_size=1, max_size=6),
)
def test_backends_agree_on_what_could_begin_a_key(keys: list[str], text: str) -> None:
    values = list(range(len(keys)))
    expected = any(key.startswith(text) for key in keys)
    assert AhoCorasickIndex(keys, values).is_prefix(text) is expected
    assert HyperscanIndex(keys, values).is_prefix(text) is expected


@pytest.mark.parametrize(
    "backend", [pytest.param(b, marks=needs_hyperscan if b == "hyperscan" else ()) for b in BACKENDS]
)
@pytest.mark.parametrize("name", sorted(NERVE_AGENT_VARIANTS))
def test_every_backend_catches_the_evasion_table(backend: str, name: str) -> None:
    now = utcnow()
    rules = [
        RuleSpec(pattern="nerve agent").to_rule(created_by="t", now=now),
        RuleSpec(pattern="Nerve Agent", word_boundary=True).to_rule(created_by="t", now=now),
    ]
    matcher = Matcher(rules, backend=backend)
    assert matcher.backend == backend
    assert list(matcher.scan(TextView(NERVE_AGENT_VARIANTS[name])))


@needs_hyperscan
def test_auto_prefers_hyperscan() -> None:
    rule = RuleSpec(pattern="x y").to_rule(created_by="t", now=utcnow())
    assert Matcher([rule]).backend == "hyperscan"


@needs_hyperscan
async def test_auto_enforces_with_pyahocorasick_then_upgrades_to_hyperscan() -> None:
    import asyncio

    from prometheus_client import CollectorRegistry

    from gateway.metrics import GatewayMetrics
    from gateway.policy_watch import SnapshotHolder
    from rules.model import Policy

    holder = SnapshotHolder(GatewayMetrics(CollectorRegistry()), backend="auto")
    rule = RuleSpec(pattern="upgrade me").to_rule(created_by="t", now=utcnow())
    await holder.install(Policy(version=1, rules=(rule,)))
    assert holder.snapshot.input.backend == "ahocorasick"  # enforced at once
    for _ in range(200):
        if holder.snapshot.input.backend == "hyperscan":
            break
        await asyncio.sleep(0.01)
    assert holder.snapshot.input.backend == "hyperscan" and holder.snapshot.version == 1
    assert list(holder.snapshot.input.scan(TextView("please upgrade me")))
    holder.close()


@pytest.mark.parametrize("backend", ["ahocorasick", "auto"])
async def test_a_replaced_snapshot_s_heap_is_given_back(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    import asyncio

    from prometheus_client import CollectorRegistry

    import gateway.policy_watch as policy_watch
    from gateway.metrics import GatewayMetrics
    from rules.model import Policy

    trims: list[str] = []
    monkeypatch.setattr(policy_watch, "_TRIM_DELAY", 0.0)
    monkeypatch.setattr(policy_watch, "trim_heap", lambda: trims.append("trimmed"))
    holder = policy_watch.SnapshotHolder(GatewayMetrics(CollectorRegistry()), backend=backend)
    rule = RuleSpec(pattern="replace me").to_rule(created_by="t", now=utcnow())
    await holder.install(Policy(version=1, rules=(rule,)))
    for _ in range(300):
        if trims:
            break
        await asyncio.sleep(0.01)
    assert trims == ["trimmed"]
    holder.close()
