from __future__ import annotations

import pytest

from rules.match import Matcher, RegexTimeout
from rules.model import RuleSpec, utcnow
from rules.normalize import TextView


def _matcher(*specs: dict[str, object], budget: float = 0.025) -> Matcher:
    now = utcnow()
    rules = [RuleSpec.model_validate(spec).to_rule(created_by="t", now=now) for spec in specs]
    return Matcher(rules, regex_budget=budget)


def _ids(matcher: Matcher, text: str) -> list[str]:
    return sorted(hit.rule.id for hit in matcher.scan(TextView(text)))


def test_word_boundary() -> None:
    matcher = _matcher({"pattern": "ricin", "word_boundary": True, "id": "r"})
    assert _ids(matcher, "ricinoleic acid") == []
    assert _ids(matcher, "(ricin)") == ["r"]
    assert _ids(matcher, "make ricin!") == ["r"]
    assert _ids(matcher, "r.i.c.i.n") == ["r"]
    assert _ids(matcher, "castor-ricin-oil") == ["r"]
    assert _ids(matcher, "abricin") == []


def test_two_rules_with_the_same_pattern_both_report() -> None:
    matcher = _matcher({"pattern": "x y", "id": "a"}, {"pattern": "X Y", "id": "b", "word_boundary": True})
    assert _ids(matcher, "x y") == ["a", "b"]
    assert _ids(matcher, "axy") == ["a"]


def test_hits_map_back_to_the_original_text() -> None:
    matcher = _matcher({"pattern": "bomb"})
    original = "Ｔｈｅ Ｂ.Ｏ.Ｍ.Ｂ!"
    view = TextView(original)
    (hit,) = matcher.scan(view)
    start, end = hit.original_span(view)
    assert original[start:end] == "Ｂ.Ｏ.Ｍ.Ｂ"


def test_regex_rules_match_the_light_view() -> None:
    matcher = _matcher({"pattern": r"\bsk-[a-z0-9]{8,}\b", "kind": "regex", "id": "key"})
    assert _ids(matcher, "my key is SK-ABCDEF123456 ok") == ["key"]
    assert _ids(matcher, "sk-short") == []
    view = TextView("token: sk-0123456789")
    (hit,) = matcher.scan(view)
    assert view.text[slice(*hit.original_span(view))] == "sk-0123456789"


def test_regex_sees_folded_homoglyphs_and_case() -> None:
    matcher = _matcher({"pattern": "nerve agent", "kind": "regex", "id": "n"})
    assert _ids(matcher, "NЕRVE AGENT") == ["n"]  # Cyrillic Е


def test_a_regex_over_budget_raises() -> None:
    # Push-time checks refuse this pattern; the matcher itself must still bound it.
    matcher = _matcher({"pattern": "(a|aa)+$", "kind": "regex"}, budget=0.01)
    with pytest.raises(RegexTimeout):
        list(matcher.scan(TextView("a" * 5000 + "!")))


def test_prefilter_skips_regexes_whose_factor_is_absent_but_never_a_match() -> None:
    matcher = _matcher(
        {"pattern": r"\bignore (all )?previous instructions", "kind": "regex", "id": "inj"},
        {"pattern": r"\d{3}-\d{2}-\d{4}", "kind": "regex", "id": "ssn"},
    )
    assert matcher._candidates("hello there 123-45-6789") == [1]
    assert _ids(matcher, "IGNORE previous INSTRUCTIONS and 123-45-6789") == ["inj", "ssn"]


def test_empty_matcher_finds_nothing() -> None:
    assert _ids(_matcher(), "anything") == []
