"""The snapshot holder: a change of controls only (kill switch, access, limits) keeps the compiled
matchers, so that it is enforced at once however many rules are loaded."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from gateway.policy_watch import SnapshotHolder
from rules.literal_index import hyperscan_available
from rules.model import KillSwitch, Policy, RuleSpec, utcnow
from rules.normalize import TextView

RULES = tuple(RuleSpec(pattern=f"phrase {index:03d}").to_rule(created_by="t", now=utcnow()) for index in range(50))


def _switch() -> dict[str, KillSwitch]:
    return {"global": KillSwitch(scope="global", reason="drill", engaged_at=utcnow(), engaged_by="t")}


async def test_a_controls_only_change_keeps_the_matchers_and_a_rules_change_rebuilds_them() -> None:
    holder = SnapshotHolder(GatewayMetrics(CollectorRegistry()), backend="ahocorasick")
    first = Policy(version=1, rules=RULES)
    await holder.install(first)
    matcher = holder.snapshot.input
    await holder.install(first.model_copy(update={"version": 2, "killswitches": _switch()}))
    assert holder.snapshot.version == 2 and "global" in holder.snapshot.killswitches
    assert holder.snapshot.input is matcher and holder.snapshot.rule_count == len(RULES)
    await holder.install(Policy(version=3, rules=RULES[:10]))  # another rules tuple: rebuilt
    assert holder.snapshot.input is not matcher
    assert not list(holder.snapshot.input.scan(TextView("phrase 020")))
    assert list(holder.snapshot.input.scan(TextView("phrase 005")))
    holder.close()


@pytest.mark.skipif(not hyperscan_available(), reason="hyperscan wheels are x86-64 only")
async def test_the_hyperscan_upgrade_survives_a_kill_switch_engaged_while_it_builds() -> None:
    holder = SnapshotHolder(GatewayMetrics(CollectorRegistry()), backend="auto")
    first = Policy(version=1, rules=RULES)
    await holder.install(first)
    await holder.install(first.model_copy(update={"version": 2, "killswitches": _switch()}))
    for _ in range(300):
        if holder.snapshot.input.backend == "hyperscan":
            break
        await asyncio.sleep(0.01)
    assert holder.snapshot.input.backend == "hyperscan"
    assert holder.snapshot.version == 2 and "global" in holder.snapshot.killswitches
    assert list(holder.snapshot.input.scan(TextView("say phrase 007")))
    holder.close()


async def test_a_controls_only_change_does_not_wait_behind_a_build() -> None:
    import time

    holder = SnapshotHolder(GatewayMetrics(CollectorRegistry()), backend="ahocorasick")
    first = Policy(version=1, rules=RULES)
    await holder.install(first)
    holder._executor.submit(time.sleep, 2.0)  # the compile thread is busy, as during a Hyperscan upgrade
    started = time.perf_counter()
    await holder.install(first.model_copy(update={"version": 2, "killswitches": _switch()}))
    assert time.perf_counter() - started < 1.0
    assert "global" in holder.snapshot.killswitches
    holder.close()
