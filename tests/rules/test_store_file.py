"""The embedded store: restarts keep everything, a failed write changes nothing, torn audit lines are dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.model import AuditEntry, KillSwitch, Policy, RuleSpec, utcnow
from rules.store import NotFound, StoreError
from rules.store_file import EmbeddedStore


def _add(pattern: str):  # type: ignore[no-untyped-def]
    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        rule = RuleSpec(pattern=pattern).to_rule(created_by="t", now=utcnow())
        entry = AuditEntry(at=utcnow(), actor="t", role="responder", action="rules.add", target=rule.id)
        return policy.model_copy(update={"rules": policy.rules + (rule,)}), entry

    return mutate


async def test_restart_keeps_rules_switches_and_audit(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    await store.open()
    await store.update(_add("one"))

    def engage(policy: Policy) -> tuple[Policy, AuditEntry]:
        switch = KillSwitch(scope="global", reason="r", engaged_at=utcnow(), engaged_by="c")
        entry = AuditEntry(at=utcnow(), actor="c", role="commander", action="killswitch.engage", target="global")
        return policy.model_copy(update={"killswitches": {"global": switch}}), entry

    await store.update(engage)
    await store.close()

    reopened = EmbeddedStore(tmp_path)
    policy = await reopened.open()
    assert policy.version == 2
    assert [r.pattern for r in policy.rules] == ["one"]
    assert "global" in policy.killswitches
    assert [e.version for e in await reopened.audit(limit=10)] == [2, 1]
    await reopened.close()


async def test_a_failing_mutation_changes_nothing(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    await store.open()
    await store.update(_add("one"))

    def broken(policy: Policy) -> tuple[Policy, AuditEntry]:
        raise ValueError("refused")

    with pytest.raises(ValueError):
        await store.update(broken)
    assert store.current().version == 1
    assert len(await store.audit(limit=10)) == 1
    await store.close()


async def test_a_failed_write_changes_nothing_on_disk_or_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EmbeddedStore(tmp_path)
    await store.open()
    await store.update(_add("one"))
    audit_before = (tmp_path / "audit.jsonl").read_bytes()
    policy_before = (tmp_path / "policy.json").read_bytes()

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("rules.store_file.write_atomic", disk_full)
    with pytest.raises(StoreError, match="No space left"):
        await store.update(_add("two"))
    assert store.current().version == 1
    assert (tmp_path / "audit.jsonl").read_bytes() == audit_before
    assert (tmp_path / "policy.json").read_bytes() == policy_before
    monkeypatch.undo()
    policy, entry = await store.update(_add("three"))
    assert policy.version == 2 and entry.version == 2
    await store.close()


async def test_audit_records_of_uncommitted_versions_are_dropped_on_start(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path)
    await store.open()
    await store.update(_add("one"))
    await store.close()
    orphan = AuditEntry(at=utcnow(), actor="x", role="responder", action="rules.add", target="t", version=2)
    audit = tmp_path / "audit.jsonl"
    torn = b'{"at": "2026-01-01T00:00'
    audit.write_bytes(audit.read_bytes() + orphan.model_dump_json().encode() + b"\n" + torn)
    reopened = EmbeddedStore(tmp_path)
    await reopened.open()
    assert [e.version for e in await reopened.audit(limit=10)] == [1]
    assert len((tmp_path / "audit.jsonl").read_bytes().splitlines()) == 1
    await reopened.close()


async def test_two_processes_cannot_share_a_state_dir(tmp_path: Path) -> None:
    first = EmbeddedStore(tmp_path)
    await first.open()
    with pytest.raises(StoreError, match="in use"):
        await EmbeddedStore(tmp_path).open()
    await first.close()


async def test_corrupt_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_text('{"version": "many"}')
    with pytest.raises(StoreError, match="not a valid policy manifest"):
        await EmbeddedStore(tmp_path).open()


def test_sliced_serialization_round_trips() -> None:
    from pydantic import TypeAdapter

    from rules.model import Rule, to_rules
    from rules.store_file import serialize_rules

    now = utcnow()
    rules = to_rules([RuleSpec(pattern=f"p{i}") for i in range(4_500)], created_by="t", now=now)
    for chosen in ((), tuple(rules[:1]), tuple(rules)):
        assert tuple(TypeAdapter(list[Rule]).validate_json(serialize_rules(chosen))) == chosen


def _rules_files(state: Path) -> list[str]:
    return sorted(p.name for p in state.glob("rules-v*.json"))


async def test_history_keeps_whole_policies_and_rules_files_only_when_rules_change(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path, history_versions=3)
    await store.open()
    await store.update(_add("one"))  # v1
    await store.update(_add("two"))  # v2

    def engage(policy: Policy) -> tuple[Policy, AuditEntry]:
        switch = KillSwitch(scope="global", reason="r", engaged_at=utcnow(), engaged_by="c")
        entry = AuditEntry(at=utcnow(), actor="c", role="commander", action="killswitch.engage", target="global")
        return policy.model_copy(update={"killswitches": {"global": switch}}), entry

    await store.update(engage)  # v3: no new rules file
    assert _rules_files(tmp_path) == ["rules-v1.json", "rules-v2.json"]
    v1 = await store.history(1)
    assert [r.pattern for r in v1.rules] == ["one"] and not v1.killswitches
    v3 = await store.history(3)
    assert [r.pattern for r in v3.rules] == ["one", "two"] and "global" in v3.killswitches
    await store.update(_add("three"))  # v4: v1 falls out of the kept history
    await store.update(_add("four"))  # v5
    with pytest.raises(NotFound):
        await store.history(1)
    assert "rules-v1.json" not in _rules_files(tmp_path)
    await store.close()
    reopened = EmbeddedStore(tmp_path)
    assert [r.pattern for r in (await reopened.open()).rules] == ["one", "two", "three", "four"]
    await reopened.close()


async def test_a_follower_keeps_its_rules_when_only_controls_change(tmp_path: Path) -> None:
    # `--workers`: the same tuple, not a re-read one, so that a worker keeps its compiled matchers.
    from rules.store_file import FileFollower
    from tests.rules.test_store_contract import engage

    store = EmbeddedStore(tmp_path)
    await store.open()
    follower = FileFollower(tmp_path)
    try:
        await store.update(_add("keep me"))
        assert await follower.refresh()
        rules = follower.current().rules
        await store.update(engage)
        assert await follower.refresh()
        assert "global" in follower.current().killswitches and follower.current().rules is rules
        await store.update(_add("another"))
        assert await follower.refresh()
        assert len(follower.current().rules) == 2 and follower.current().rules is not rules
    finally:
        await store.close()
