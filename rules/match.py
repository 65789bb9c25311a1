"""Literal matching: every literal rule of a snapshot in one pyahocorasick automaton over normalized text."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import ahocorasick

from rules.model import Rule
from rules.normalize import NormalizedText, normalize_pattern


@dataclass(frozen=True, slots=True)
class Hit:
    """One match of one rule, as a half-open span of the normalized text."""

    rule: Rule
    start: int
    end: int


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class LiteralMatcher:
    """Finds every literal rule in a text in one pass. Built once per policy snapshot, then read-only."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        grouped: dict[str, list[Rule]] = {}
        for rule in rules:
            key = normalize_pattern(rule.pattern)
            grouped.setdefault(key, []).append(rule)
        self.size = len(rules)
        self._automaton: ahocorasick.Automaton | None = None
        if grouped:
            automaton = ahocorasick.Automaton()
            for key, members in grouped.items():
                automaton.add_word(key, (len(key), tuple(members)))
            automaton.make_automaton()
            self._automaton = automaton

    def scan(self, view: NormalizedText) -> Iterator[Hit]:
        if self._automaton is None:
            return
        text = view.text
        for end_index, (length, members) in self._automaton.iter(text):
            end = end_index + 1
            start = end - length
            bounded = (start == 0 or not _is_word_char(text[start - 1])) and (
                end == len(text) or not _is_word_char(text[end])
            )
            for rule in members:
                if bounded or not rule.word_boundary:
                    yield Hit(rule, start, end)
