from __future__ import annotations

import pytest

from rules.match import LiteralMatcher
from rules.model import RuleSpec, utcnow
from rules.normalize import normalize


def _matcher(*specs: dict[str, object]) -> LiteralMatcher:
    now = utcnow()
    return LiteralMatcher([RuleSpec.model_validate(spec).to_rule(created_by="t", now=now) for spec in specs])


@pytest.mark.parametrize(
    "text,found",
    [
        ("Bomb", True),
        ("BOMB", True),
        ("ｂｏｍｂ", True),  # full-width
        ("a bombastic speech", True),
        ("bo mb", False),
    ],
)
def test_literal_is_case_and_width_insensitive(text: str, found: bool) -> None:
    matcher = _matcher({"pattern": "bomb"})
    assert bool(list(matcher.scan(normalize(text)))) is found


def test_word_boundary() -> None:
    matcher = _matcher({"pattern": "ricin", "word_boundary": True})
    assert list(matcher.scan(normalize("ricinoleic"))) == []
    assert len(list(matcher.scan(normalize("(ricin)")))) == 1


def test_two_rules_with_the_same_pattern_both_report() -> None:
    matcher = _matcher({"pattern": "x y", "id": "a"}, {"pattern": "X Y", "id": "b", "word_boundary": True})
    assert sorted(hit.rule.id for hit in matcher.scan(normalize("x y"))) == ["a", "b"]


def test_hits_map_back_to_the_original_text() -> None:
    matcher = _matcher({"pattern": "bomb"})
    original = "Ｔｈｅ ＢＯＭＢ!"
    view = normalize(original)
    (hit,) = matcher.scan(view)
    start, end = view.original_span(hit.start, hit.end)
    assert original[start:end] == "ＢＯＭＢ"


def test_empty_matcher_finds_nothing() -> None:
    assert list(_matcher().scan(normalize("anything"))) == []
