"""One request's regex time is one budget, summed over its texts (issue 16, item 2)."""

from __future__ import annotations

import time

import pytest

from rules.match import Matcher, RegexBudget, RegexTimeout
from rules.model import RuleSpec, utcnow
from rules.normalize import TextView

SLOW_TEXT = "instructions " + "ignore " * 1300  # about 12 ms for `ignore.*instructions`, under 25 ms


def _matcher(pattern: str) -> Matcher:
    rule = RuleSpec.model_validate({"pattern": pattern, "kind": "regex", "id": "r"}).to_rule(
        created_by="t", now=utcnow()
    )
    return Matcher([rule], regex_budget=0.025)


def test_many_texts_cannot_multiply_the_per_search_budget() -> None:
    matcher = _matcher("ignore.*instructions")
    budget = RegexBudget(0.1)
    started = time.perf_counter()
    with pytest.raises(RegexTimeout):
        for _ in range(100):  # each search alone stays under its 25 ms
            list(matcher.scan(TextView(SLOW_TEXT), budget=budget))
    assert time.perf_counter() - started < 0.3  # stopped at the total, not after 100 × 12 ms
    assert budget.remaining <= 0


def test_a_spent_budget_refuses_before_searching() -> None:
    matcher = _matcher(r"\bsk-[a-z0-9]{8,}\b")
    with pytest.raises(RegexTimeout):
        list(matcher.scan(TextView("key sk-0123456789"), budget=RegexBudget(0.0)))


def test_hits_are_reported_and_charged() -> None:
    matcher = _matcher(r"\bsk-[a-z0-9]{8,}\b")
    budget = RegexBudget(1.0)
    assert [hit.rule.id for hit in matcher.scan(TextView("a sk-0123456789 b sk-abcdefghij"), budget=budget)] == [
        "r",
        "r",
    ]
    assert 0 < budget.remaining < 1.0
