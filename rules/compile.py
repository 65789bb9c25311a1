"""Policy → compiled snapshot: the immutable object the data plane reads on every request.

Building a snapshot is pure and may take seconds for 100k rules, so callers run it off the event loop
and swap one reference when it is done; a failed build leaves the old snapshot in force.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from rules.match import LiteralMatcher
from rules.model import KillSwitch, Policy, Rule, RuleSpec, utcnow
from rules.normalize import normalize_pattern


class RuleError(ValueError):
    """A rule that cannot be compiled; `index` is its position in the pushed list."""

    def __init__(self, index: int, field: str, reason: str) -> None:
        super().__init__(f"rules[{index}].{field}: {reason}")
        self.index = index
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    version: int
    compiled_at: datetime
    input_literals: LiteralMatcher
    output_literals: LiteralMatcher
    killswitches: Mapping[str, KillSwitch] = field(default_factory=lambda: MappingProxyType({}))
    rule_count: int = 0


def _applies(rule: Rule, direction: str) -> bool:
    return rule.applies_to in (direction, "both")


def compile_policy(policy: Policy) -> CompiledPolicy:
    literals = [rule for rule in policy.rules if rule.kind == "literal"]
    return CompiledPolicy(
        version=policy.version,
        compiled_at=utcnow(),
        input_literals=LiteralMatcher([r for r in literals if _applies(r, "input")]),
        output_literals=LiteralMatcher([r for r in literals if _applies(r, "output")]),
        killswitches=MappingProxyType(dict(policy.killswitches)),
        rule_count=len(policy.rules),
    )


SUPPORTED_ACTIONS = frozenset({"block", "shadow"})


def check_specs(specs: Iterable[RuleSpec], categories: frozenset[str]) -> None:
    """Refuse what validation by type alone cannot see; raises RuleError for the first bad rule."""
    for index, spec in enumerate(specs):
        if spec.category not in categories:
            raise RuleError(index, "category", f"unknown category {spec.category!r}")
        if spec.kind != "literal":
            raise RuleError(index, "kind", "only literal rules are supported in this version")
        if spec.action not in SUPPORTED_ACTIONS:
            raise RuleError(index, "action", f"action {spec.action!r} is not supported in this version")
        if not normalize_pattern(spec.pattern).strip():
            raise RuleError(index, "pattern", "pattern is empty after normalization")
