"""Matching one direction's rules against a text: literals in one Aho-Corasick automaton over the compact
view, regexes (compiled once per snapshot) over the light view, each search under a time budget."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import ahocorasick
import regex

from rules.literal_index import LiteralIndex, build_index
from rules.model import Rule
from rules.normalize import AsciiDetail, Detail, TextView, compact
from rules.regex_prefilter import required_factors

DEFAULT_REGEX_BUDGET = 0.025  # seconds per regex search
REGEX_FLAGS = regex.IGNORECASE | regex.UNICODE | regex.VERSION0

ViewKind = Literal["compact", "light"]


class RegexTimeout(Exception):
    """A regex exceeded its time budget on real traffic; the caller fails closed."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One match of one rule, as a half-open span of the `view` named."""

    rule: Rule
    start: int
    end: int
    view: ViewKind

    def original_span(self, text: TextView) -> tuple[int, int]:
        detail = text.compact_detail if self.view == "compact" else text.light_detail
        return detail.original_span(self.start, self.end)


def compile_regex(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern, REGEX_FLAGS)


class Matcher:
    """All rules of one direction. Built once per policy snapshot, then read-only."""

    def __init__(
        self, rules: Sequence[Rule], *, regex_budget: float = DEFAULT_REGEX_BUDGET, backend: str = "auto"
    ) -> None:
        grouped: dict[str, list[Rule]] = {}
        self._regexes: list[tuple[Rule, regex.Pattern[str]]] = []
        self._always: list[int] = []  # regexes without a usable literal factor
        factors: dict[str, list[int]] = {}
        for rule in rules:
            if rule.kind == "regex":
                index = len(self._regexes)
                self._regexes.append((rule, compile_regex(rule.pattern)))
                required = required_factors(rule.pattern)
                if required is None:
                    self._always.append(index)
                for factor in required or ():
                    factors.setdefault(factor, []).append(index)
            else:
                grouped.setdefault(compact(rule.pattern), []).append(rule)
        self._prefilter: ahocorasick.Automaton | None = None
        if factors:
            prefilter = ahocorasick.Automaton()
            for factor, indexes in factors.items():
                prefilter.add_word(factor, tuple(indexes))
            prefilter.make_automaton()
            self._prefilter = prefilter
        grouped.pop("", None)  # refused at push time; never let an empty key match everywhere
        self.size = len(rules)
        self.has_redact = any(rule.action == "redact" for rule in rules)
        self.has_regex_redact = any(rule.action == "redact" for rule, _ in self._regexes)
        self.longest_literal = max((len(key) for key in grouped), default=0)
        self.longest_factor = max((len(factor) for factor in factors), default=0)
        self._budget = regex_budget
        self._index: LiteralIndex | None = None
        if grouped:
            keys, values = [], []
            for key, members in grouped.items():
                value: tuple[int, tuple[Rule, ...], bool]
                if len(members) == 1:
                    value = (len(key), (members[0],), members[0].word_boundary)
                else:
                    value = (len(key), tuple(members), any(r.word_boundary for r in members))
                keys.append(key)
                values.append(value)
            self._index = build_index(keys, values, backend)
        self.backend = self._index.name if self._index is not None else "none"

    @property
    def has_regex(self) -> bool:
        return bool(self._regexes)

    def scan(self, text: TextView, accept: Callable[[Rule], bool] | None = None) -> Iterator[Hit]:
        """Every hit in `text` of a rule that `accept` (if given) lets through."""
        yield from self.scan_literals(text.compact, lambda: text.compact_detail, accept)
        if self._regexes:
            yield from self.scan_regexes(text.light, accept)

    def scan_literals(
        self,
        view: str,
        detail: Callable[[], Detail | AsciiDetail] | None,
        accept: Callable[[Rule], bool] | None = None,
    ) -> Iterator[Hit]:
        """Literal hits in a compact view; word boundaries are checked with `detail` (None: the caller
        judges them itself)."""
        if self._index is None or not view:
            return
        for end_index, (length, members, any_bounded) in self._index.find(view):
            end = end_index + 1
            start = end - length
            whole_word = True if detail is None or not any_bounded else detail().is_word(start, end)
            for rule in members:
                if (whole_word or not rule.word_boundary) and (accept is None or accept(rule)):
                    yield Hit(rule, start, end, "compact")

    def _candidates(self, view: str) -> list[int]:
        """The regexes that could match `view`: those with no factor, and those whose factor occurs."""
        if self._prefilter is None:
            return self._always
        return sorted(self.factor_hits(view).union(self._always))

    @property
    def always(self) -> list[int]:
        """The regexes without a required literal factor: every text is a candidate for them."""
        return self._always

    def factor_hits(self, view: str) -> set[int]:
        """The regexes one of whose required factors occurs in the light view `view`."""
        found: set[int] = set()
        if self._prefilter is not None:
            for _, indexes in self._prefilter.iter(view):
                found.update(indexes)
        return found

    def scan_regexes(
        self, view: str, accept: Callable[[Rule], bool] | None = None, candidates: Sequence[int] | None = None
    ) -> Iterator[Hit]:
        """Regex hits in a light view: of the regexes `candidates` names, or else of those the prefilter
        finds candidates in `view`."""
        for index in self._candidates(view) if candidates is None else candidates:
            rule, pattern = self._regexes[index]
            if accept is not None and not accept(rule):
                continue
            try:
                for found in pattern.finditer(view, timeout=self._budget):
                    if found.end() > found.start():
                        yield Hit(rule, found.start(), found.end(), "light")
            except TimeoutError:
                raise RegexTimeout(rule.id) from None
