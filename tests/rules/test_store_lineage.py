"""The pure parts of fleet safety: lineage relations, restriction-only merges, what counts as tightening."""

from __future__ import annotations

import pytest

from rules.controls import AccessPolicy
from rules.model import KillSwitch, Policy, RuleSpec, utcnow
from rules.store import only_tightens
from rules.store_lineage import relation, union_restrictions


def _switch(scope: str) -> KillSwitch:
    return KillSwitch(scope=scope, reason="r", engaged_at=utcnow(), engaged_by="c")


def _rule(pattern: str, action: str = "block") -> object:
    return RuleSpec(pattern=pattern, action=action).to_rule(created_by="t", now=utcnow())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mine,redis,lineage,expected",
    [
        (("E", 0), None, {}, "same"),  # a new fleet
        (("E", 3), None, {}, "empty"),  # Redis lost its data
        (("E", 3), ("E", 5), {}, "ahead"),
        (("E", 3), ("E", 3), {}, "same"),
        (("E", 3), ("E", 2), {}, "behind"),  # restored from an older copy
        (("E", 3), ("F", 4), {"E": 3}, "ahead"),  # re-seeded by a replica that knew (E, 3)
        (("E", 3), ("F", 4), {"E": 2}, "diverged"),  # re-seeded by one that knew less
        (("E", 3), ("F", 9), {}, "diverged"),  # written afresh after a loss
        (("", 0), ("F", 2), {}, "ahead"),  # a replica without a cache
    ],
)
def test_relation(mine: tuple[str, int], redis: tuple[str, int] | None, lineage: dict[str, int], expected: str) -> None:
    assert relation(mine=mine, redis=redis, redis_lineage=lineage) == expected


def test_a_merge_only_adds_restrictions() -> None:
    kept, extra = _rule("kept"), _rule("extra")
    base = Policy(version=5, rules=(kept,), killswitches={"global": _switch("global")})
    other = Policy(version=4, rules=(kept, extra), killswitches={"model:m": _switch("model:m")})
    merged, added = union_restrictions(base, other, utcnow())
    assert set(merged.killswitches) == {"global", "model:m"}
    assert [r.pattern for r in merged.rules] == ["kept", "extra"]
    assert added == ["killswitch model:m", f"rule {extra.id}"]  # type: ignore[attr-defined]


def test_only_tightens() -> None:
    base = Policy(version=1, rules=(_rule("one"),), killswitches={"global": _switch("global")})
    engaged = base.model_copy(update={"killswitches": {**base.killswitches, "model:m": _switch("model:m")}})
    pushed = base.model_copy(update={"rules": base.rules + (_rule("two"),)})
    shadow = base.model_copy(update={"rules": base.rules + (_rule("two", "shadow"),)})
    released = base.model_copy(update={"killswitches": {}})
    deleted = base.model_copy(update={"rules": ()})
    opened = base.model_copy(update={"access": AccessPolicy(restricted=True)})
    assert only_tightens(base, engaged) and only_tightens(base, pushed)
    assert not any(only_tightens(base, p) for p in (shadow, released, deleted, opened, base))
