"""Matching one direction's rules against a text: literals in one Aho-Corasick automaton over the compact
view, regexes (compiled once per snapshot) over the light view, each search under a time budget and, given
a `RegexBudget`, all the searches of one request under a total budget."""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import ahocorasick
import regex

from rules.literal_index import LiteralIndex, build_index
from rules.model import Rule
from rules.normalize import CompactDetail, TextView, ViewKind, breaks, compact, pattern_gaps
from rules.regex_prefilter import required_factors

DEFAULT_REGEX_BUDGET = 0.025  # seconds per regex search
DEFAULT_REQUEST_REGEX_BUDGET = 0.2  # seconds of regex searching per request, summed over its texts
PARTIAL_LIMIT = 16  # block regexes a stream looks for partial matches of (see Matcher.partial_starts)
REGEX_FLAGS = regex.IGNORECASE | regex.UNICODE | regex.VERSION0


class RegexTimeout(Exception):
    """A regex exceeded its time budget (one search's, or the request's total) on real traffic; the caller
    fails closed."""


class RegexBudget:
    """What is left of one request's regex time, charged by every search made for it (in any text, any
    view): a request of many texts cannot multiply the per-search budget. Used by one request at a time."""

    __slots__ = ("remaining",)

    def __init__(self, seconds: float) -> None:
        self.remaining = seconds

    def charge(self, seconds: float) -> None:
        self.remaining -= seconds


@dataclass(frozen=True, slots=True)
class Hit:
    """One match of one rule, as a half-open span of the `view` named."""

    rule: Rule
    start: int
    end: int
    view: ViewKind

    def original_span(self, text: TextView) -> tuple[int, int]:
        return text.detail(self.view).original_span(self.start, self.end)


_NO_GAPS: frozenset[int] = frozenset()


def _slack(detail: CompactDetail, position: int, step: int, limit: int = 4) -> int:
    """Letters of the same word before view position `position` (step -1) or from it on (step 1), up to
    `limit`."""
    count = 0
    length = len(detail.text)
    while count < limit:
        if step < 0:
            if position - count <= 0 or detail.begins(position - count):
                break
        elif position + count >= length or detail.ends(position + count):
            break
        count += 1
    return count


# Characters a pattern may have between its words without them counting as its own punctuation.
_PLAIN_GAPS = str.maketrans("", "", " \t\n-_'’")
_EDGES = string.punctuation + string.whitespace


def _has_punctuation(pattern: str) -> bool:
    """Whether a literal has punctuation of its own (`semtex + detonator`); a str method per pattern, as a
    100k-rule push calls it 100k times."""
    plain = pattern.translate(_PLAIN_GAPS)
    return bool(plain) and not plain.isalnum()


def _several_words(pattern: str) -> bool:
    """Whether a literal has a separator between two of its words (`DAN mode`, `nerve-agent`)."""
    core = pattern.strip(_EDGES)
    return bool(core) and not core.isalnum()


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
        self._block_regexes = [(rule, pattern) for rule, pattern in self._regexes if rule.action == "block"]
        self._phrases = frozenset(
            rule.id for members in grouped.values() for rule in members if _several_words(rule.pattern)
        )
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
                value: tuple[int, tuple[Rule, ...], bool, tuple[frozenset[int], ...]]
                gaps = tuple(
                    pattern_gaps(rule.pattern) if _has_punctuation(rule.pattern) else _NO_GAPS for rule in members
                )
                if len(members) == 1:
                    value = (len(key), (members[0],), members[0].word_boundary, gaps)
                else:
                    value = (len(key), tuple(members), any(r.word_boundary for r in members), gaps)
                keys.append(key)
                values.append(value)
            self._index = build_index(keys, values, backend)
        self.backend = self._index.name if self._index is not None else "none"

    @property
    def has_regex(self) -> bool:
        return bool(self._regexes)

    def scan(
        self, text: TextView, accept: Callable[[Rule], bool] | None = None, budget: RegexBudget | None = None
    ) -> Iterator[Hit]:
        """Every hit in `text` of a rule that `accept` (if given) lets through: literals in each compact
        view (the same rule at the same original span is reported once), then regexes (charged to
        `budget` when given)."""
        if self._index is not None:
            seen: set[tuple[str, int, int]] | None = None
            extra = text.extra_views()
            for hit in self.scan_literals(text, "compact", text.compact, accept):
                if extra:
                    seen = seen or set()
                    seen.add((hit.rule.id, *hit.original_span(text)))
                yield hit
            for kind, view in extra:
                for hit in self.scan_literals(text, kind, view, accept):
                    key = (hit.rule.id, *hit.original_span(text))
                    if seen is None or key not in seen:
                        seen = seen or set()
                        seen.add(key)
                        yield hit
        if self._regexes:
            for kind, view in text.light_views():
                for hit in self.scan_regexes(view, accept, budget=budget):
                    yield hit if kind == "light" else Hit(hit.rule, hit.start, hit.end, kind)

    def scan_literals(
        self,
        text: TextView,
        kind: ViewKind,
        view: str,
        accept: Callable[[Rule], bool] | None = None,
        undecided: list[int] | None = None,
    ) -> Iterator[Hit]:
        """Literal hits in one compact view of `text`. A hit must not span a sentence break its pattern
        does not have; a whole-word rule's hit must stand as a word. With `undecided` (a stream whose text
        goes on), a whole-word hit that ends at the end of the view is not judged: its start is appended."""
        if self._index is None or not view:
            return
        detail: CompactDetail | None = None
        for end_index, (length, members, any_bounded, gaps) in self._index.find(view):
            end = end_index + 1
            start = end - length
            detail = detail or text.detail(kind)
            crossed = self._breaks(text, detail, start, end) if length > 1 and kind != "tags" else ()
            whole_word = True
            if any_bounded:
                if undecided is not None and end == len(view) and not detail.ends_with_separator():
                    whole_word = False
                    undecided.append(start)
                else:
                    whole_word = detail.is_word(start, end)
            anchored: bool | None = None
            for rule, allowed in zip(members, gaps, strict=True):
                if (whole_word or not rule.word_boundary) and (accept is None or accept(rule)):
                    if crossed and not allowed.issuperset(crossed):
                        continue
                    if rule.id in self._phrases:  # a phrase must stand almost on word boundaries
                        if anchored is None:
                            anchored = self._anchored(detail, start, end, len(view), undecided)
                        if not anchored:
                            continue
                    yield Hit(rule, start, end, kind)

    @staticmethod
    def _anchored(detail: CompactDetail, start: int, end: int, length: int, undecided: list[int] | None) -> bool:
        # A few letters glued to its ends (`zsynthesize nerve agentz`, `resynthesize ... agents`, `pipe
        # bombing`) still make the phrase; more (`Jordan modernized` for `DAN mode`, `pipe bombarded`) do not.
        before = _slack(detail, start, -1)
        after = _slack(detail, end, 1)
        if before > 2 or before + after > 3:
            return False
        if end + after == length and undecided is not None and not detail.ends_with_separator():
            undecided.append(start)  # the glued letters reach the end: more of the word may follow
            return False
        return True

    @staticmethod
    def _breaks(text: TextView, detail: CompactDetail, start: int, end: int) -> tuple[int, ...]:
        """The offsets (from `start`) of the view characters inside the span that follow a sentence break."""
        first, last = detail.original_span(start, end)
        found = breaks(text.text, first, last)
        return tuple(detail.index_of(position) - start for position in found)

    def partial_starts(self, view: str, since: int, accept: Callable[[Rule], bool] | None = None) -> list[int]:
        """Where a block regex's match could be under way at the end of the light view `view` (a partial
        match starting at `since` or later): a stream holds that text back. Only while there are at most
        PARTIAL_LIMIT block regexes: each costs a search per streamed piece."""
        starts: list[int] = []
        if len(self._block_regexes) > PARTIAL_LIMIT:
            return starts
        for rule, pattern in self._block_regexes:
            if accept is not None and not accept(rule):
                continue
            try:
                found = pattern.search(view, since, partial=True, timeout=self._budget)
            except TimeoutError:
                raise RegexTimeout(rule.id) from None
            while found is not None and not found.partial:
                position = max(found.end(), found.start() + 1)
                found = (
                    pattern.search(view, position, partial=True, timeout=self._budget)
                    if position <= len(view)
                    else None
                )
            if found is not None:
                starts.append(found.start())
        return starts

    def is_prefix(self, view: str) -> bool:
        """Whether `view` is the start of some literal key (or a whole one)."""
        return self._index is not None and self._index.is_prefix(view)

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
        self,
        view: str,
        accept: Callable[[Rule], bool] | None = None,
        candidates: Sequence[int] | None = None,
        budget: RegexBudget | None = None,
    ) -> Iterator[Hit]:
        """Regex hits in a light view: of the regexes `candidates` names, or else of those the prefilter
        finds candidates in `view`. Each search runs under the per-search budget, or what is left of
        `budget` if that is less, and its time is charged to `budget`; over either, RegexTimeout."""
        for index in self._candidates(view) if candidates is None else candidates:
            rule, pattern = self._regexes[index]
            if accept is not None and not accept(rule):
                continue
            if budget is None:
                spans = _search(pattern, view, self._budget, rule)
            else:
                limit = min(self._budget, budget.remaining)
                if limit <= 0:
                    raise RegexTimeout(rule.id)
                started = time.perf_counter()
                try:
                    spans = _search(pattern, view, limit, rule)
                finally:
                    budget.charge(time.perf_counter() - started)
            for start, end in spans:
                yield Hit(rule, start, end, "light")


def _search(pattern: regex.Pattern[str], view: str, timeout: float, rule: Rule) -> list[tuple[int, int]]:
    """The non-empty matches of one regex, all found before any is reported (the module's timeout runs
    from the start of the iteration, so a caller's work between hits must not count). `concurrent=True`:
    the search releases the GIL, so a scan in a worker thread leaves the event loop free."""
    try:
        return [
            found.span()
            for found in pattern.finditer(view, timeout=timeout, concurrent=True)
            if found.end() > found.start()
        ]
    except TimeoutError:
        raise RegexTimeout(rule.id) from None
