"""Policy → compiled snapshot: the immutable object the data plane reads on every request.

Building a snapshot is pure and may take seconds for 100k rules, so callers run it off the event loop
and swap one reference when it is done; a failed build leaves the old snapshot in force.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from rules.match import DEFAULT_REGEX_BUDGET, Matcher
from rules.model import KillSwitch, Policy, Rule, RuleSpec, utcnow
from rules.normalize import compact
from rules.regex_safety import regex_problem


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
    input: Matcher
    output: Matcher
    killswitches: Mapping[str, KillSwitch] = field(default_factory=lambda: MappingProxyType({}))
    rule_count: int = 0


def _applies(rule: Rule, direction: str) -> bool:
    return rule.applies_to in (direction, "both")


def compile_policy(policy: Policy, *, regex_budget: float = DEFAULT_REGEX_BUDGET) -> CompiledPolicy:
    now = utcnow()
    live = [rule for rule in policy.rules if not rule.expired(now)]
    inputs = [r for r in live if _applies(r, "input")]
    outputs = [r for r in live if _applies(r, "output")]
    input_matcher = Matcher(inputs, regex_budget=regex_budget)
    # Rules default to "both": then one matcher serves both directions (half the build time and memory).
    same = len(inputs) == len(outputs) and all(a is b for a, b in zip(inputs, outputs, strict=True))
    return CompiledPolicy(
        version=policy.version,
        compiled_at=now,
        input=input_matcher,
        output=input_matcher if same else Matcher(outputs, regex_budget=regex_budget),
        killswitches=MappingProxyType(dict(policy.killswitches)),
        rule_count=len(policy.rules),
    )


def check_specs(specs: Iterable[RuleSpec], categories: frozenset[str]) -> None:
    """Refuse what validation by type alone cannot see; raises RuleError for the first bad rule."""
    for index, spec in enumerate(specs):
        if not spec.pattern.strip():
            raise RuleError(index, "pattern", "pattern must contain non-whitespace text")
        if spec.category not in categories:
            raise RuleError(index, "category", f"unknown category {spec.category!r}")
        if spec.kind == "regex":
            problem = regex_problem(spec.pattern)
            if problem is not None:
                raise RuleError(index, "pattern", problem)
        elif not compact(spec.pattern):
            raise RuleError(index, "pattern", "pattern has no letters or digits, so it would match nothing")
