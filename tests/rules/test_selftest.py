"""The evasion self-test: its renderings are what they claim to be, and its verdicts are what the
engine does with each rendering (checked here by scanning every rendering directly)."""

from __future__ import annotations

from typing import Any

import pytest

from rules.match import Matcher
from rules.model import Rule, RuleSpec, utcnow
from rules.normalize import TextView
from rules.selftest import CONTEXT, RENDERINGS, SPLIT_CHUNKS, STREAM_CHUNK, regex_example, self_test, variants
from rules.stream_scan import StreamScanner


def _rule(**spec: Any) -> Rule:
    return RuleSpec.model_validate(spec).to_rule(created_by="t", now=utcnow())


@pytest.mark.parametrize(
    "name,text,expected",
    [
        ("case", "nerve agent", {"upper": "NERVE AGENT", "mixed": "NeRvE aGeNt"}),
        ("fullwidth", "sarin 1", {"fullwidth": "ｓａｒｉｎ\u3000１"}),
        ("homoglyphs", "sarin", {"cyrillic": "ѕаrіn", "greek": "sαrιη"}),
        ("invisibles", "ab cd", {"zero-width space": "a\u200bb c\u200bd", "soft hyphen": "a\u00adb c\u00add",
                                 "word joiner": "a\u2060b c\u2060d"}),
        ("leet", "sarin", {"digits": "54r1n", "symbols": "$@r!n"}),
        ("separators", "ab cd", {"dots": "a.b c.d", "spaces": "a b   c d", "hyphens": "a-b c-d"}),
        ("split", "sarin", {"chunks of 1": "sarin", "chunks of 2": "sarin", "chunks of 3": "sarin"}),
    ],
)  # fmt: skip
def test_renderings(name: str, text: str, expected: dict[str, str]) -> None:
    assert variants(name, text) == expected


@pytest.mark.parametrize("name,text", [("case", "1234"), ("homoglyphs", "1234"), ("leet", "xyz"), ("split", "x")])
def test_a_rendering_that_changes_nothing_is_not_applicable(name: str, text: str) -> None:
    assert variants(name, text) == {}


@pytest.mark.parametrize(
    "pattern,example",
    [
        (r"\bnerve\s+agent\b", "nerve agent"),
        (r"sk-[a-z0-9]{4,}", "sk-aaaa"),
        (r"colou?r (?:red|blue)", "color red"),
        (r"^secret\d{3}$", "secret000"),
        (r"(a)\1", None),  # back reference
        (r"[^xy]yz", None),  # negated class
    ],
)
def test_regex_examples(pattern: str, example: str | None) -> None:
    assert regex_example(pattern) == example


def _input(matcher: Matcher, text: str) -> bool:
    return any(True for _ in matcher.scan(TextView(text)))


def _streamed(matcher: Matcher, pieces: list[str]) -> bool:
    scanner = StreamScanner(matcher)
    emissions = [scanner.feed(piece) for piece in pieces] + [scanner.finish()]
    return any(emission.blocked is not None or emission.hits for emission in emissions)


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


RULES = [
    {"pattern": "sarin"},
    {"pattern": "nerve agent"},
    {"pattern": "ignore previous instructions", "word_boundary": True},
    {"pattern": "semtex + detonator"},
    {"pattern": "s@r1n"},
    {"pattern": "vx agent", "action": "redact"},
    {"pattern": r"\bnerve\s+agent\b", "kind": "regex"},
    {"pattern": r"synthes[iy]ze\s+sarin", "kind": "regex", "action": "shadow"},
]


@pytest.mark.parametrize("spec", RULES, ids=[r["pattern"] for r in RULES])
def test_the_verdicts_are_what_the_engine_does(spec: dict[str, Any]) -> None:
    rule = _rule(**spec)
    result = self_test(rule)
    plain = rule.pattern if rule.kind == "literal" else regex_example(rule.pattern)
    assert plain is not None and result.note is None
    assert result.example == (plain if rule.kind == "regex" else None)
    matcher = Matcher([rule])
    before, after = CONTEXT
    assert _input(matcher, before + plain + after)
    caught, missed, missed_on = [], [], {}
    for name in RENDERINGS:
        where = []
        for label, text in variants(name, plain).items():
            sentence = before + text + after
            if name == "split":  # the pattern streamed in pieces of 1, 2, 3 between the sentence's halves
                size = SPLIT_CHUNKS[int(label[-1]) - 1]
                streamed = _streamed(matcher, [before, *_pieces(text, size), after])
            else:
                streamed = _streamed(matcher, _pieces(sentence, STREAM_CHUNK))
                if not _input(matcher, sentence):
                    where.append(f"{label} on input")
            if not streamed:
                where.append(f"{label} on stream")
        if where:
            missed.append(name)
            missed_on[name] = where
        elif variants(name, plain):
            caught.append(name)
    assert (result.caught, result.missed, result.missed_on) == (caught, missed, missed_on)
    assert result.score == f"{len(caught)}/{len(caught) + len(missed)}"
    assert {"case", "fullwidth", "split"} <= set(result.caught)  # folded by every version of the engine


def test_a_regex_without_a_derivable_example_is_not_applicable() -> None:
    result = self_test(_rule(pattern=r"(ab)\1", kind="regex"))
    assert result.not_applicable == list(RENDERINGS) and result.score == "0/0"
    assert result.as_json()["note"] == "no example string could be derived from the regex"


def test_a_pattern_not_caught_itself_says_so() -> None:
    # The walk skips the lookahead, so the example "ac" does not match: nothing is claimed.
    result = self_test(_rule(pattern=r"a(?=b)c", kind="regex"))
    assert result.caught == [] and result.missed == [] and result.not_applicable == list(RENDERINGS)
    assert result.note == "the pattern itself is not caught, so its renderings were not tried"


def test_an_anchored_regex_is_tried_alone() -> None:
    result = self_test(_rule(pattern=r"^secret\d{3}$", kind="regex"))
    assert result.note is None and "case" in result.caught
