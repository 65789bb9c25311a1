"""The push-time safety net: a rule that would block ordinary traffic is refused before it is enforced.

Three checks, each overridable by the push (`"force": true`, docs/api.md):

- **too short**: a literal whose compact view (rules/normalize.py) is under MIN_FOLDED characters, or a
  regex that can match fewer than MIN_FOLDED characters (`.`, `\\w`, `[\\s\\S]`, `a|bc`): it matches
  inside ordinary words;
- **too broad**: a rule that hits more than MAX_XSTEST_HITS of the XSTest safe prompts, or more than
  MAX_ORDINARY_SHARE of the ordinary documents, of the benign corpus the project ships
  (rules/data/benign/, made by bench/benign_corpus.py): `the`, `and`, `how to`, `kill`, `\\w{3}`.

The corpus is scanned once per push with one Matcher over the pushed rules, each hit attributed to its
rule; the corpus's views are built once per process. Building that Matcher is most of the cost (0.7 s
for 100k literals), so literal rules are first pre-filtered: a literal's compact key can only occur in
the corpus when its first, middle and last GRAM characters occur there (a set of every 3- to
GRAM-character substring of the corpus's compact views, built once per process), which leaves a few
percent of a large push (6 % of bench/push.py's 100k).
"""

from __future__ import annotations

import csv
import functools
import io
import re
import re._parser as sre_parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

from rules.match import Matcher, RegexTimeout
from rules.model import Rule
from rules.normalize import TextView, compact

GRAM = 4
MIN_FOLDED = 3  # characters a literal's compact view, or a regex's shortest match, must have
MAX_XSTEST_HITS = 0  # of the 250 XSTest safe prompts: blocking any one of them is over-blocking
MAX_ORDINARY_SHARE = 0.001  # of the 2,500 ordinary documents: more than 0.1 % (3 or more) refuses it
EXAMPLES = 2
EXAMPLE_CONTEXT = 40  # characters shown either side of a benign hit

Source = Literal["xstest", "ordinary"]
Check = Literal["too_short", "too_broad"]


@dataclass(frozen=True, slots=True)
class Document:
    source: Source
    text: str


@functools.cache
def corpus() -> tuple[Document, ...]:
    """The benign corpus as shipped: XSTest's safe prompts, then the ordinary documents."""
    data = resources.files("rules").joinpath("data", "benign")
    reader = csv.DictReader(io.StringIO(data.joinpath("xstest_safe.csv").read_text("utf-8")))
    xstest = [Document("xstest", row["prompt"]) for row in reader if row["label"] == "safe"]
    lines = data.joinpath("ordinary.txt").read_text("utf-8").splitlines()
    return (*xstest, *(Document("ordinary", line) for line in lines if line.strip()))


@functools.cache
def _views() -> tuple[TextView, ...]:
    """The corpus's matching views, built once per process (a push then only runs the automaton)."""
    views = tuple(TextView(document.text) for document in corpus())
    for view in views:
        _ = view.compact, view.light, view.compact_detail
    return views


def _texts(view: TextView) -> list[str]:
    """Every compact view of a text that literal rules are matched against."""
    return [view.compact, *(text for _, text in view.extra_views())]


@functools.cache
def _grams() -> frozenset[str]:
    """Every substring of MIN_FOLDED to GRAM characters of the corpus's compact views."""
    grams: set[str] = set()
    for view in _views():
        for text in _texts(view):
            for size in range(MIN_FOLDED, GRAM + 1):
                grams.update(text[i : i + size] for i in range(len(text) - size + 1))
    return frozenset(grams)


def _may_occur(key: str, grams: frozenset[str]) -> bool:
    """False when the compact key cannot occur in the corpus (it has a substring the corpus lacks)."""
    if len(key) < MIN_FOLDED:
        return True  # refused as too short anyway; the scan still counts its hits for the answer
    middle = max(0, len(key) // 2 - GRAM // 2)
    return key[:GRAM] in grams and key[-GRAM:] in grams and key[middle : middle + GRAM] in grams


def literal_keys(rules: Sequence[Rule]) -> list[str]:
    """Each rule's compact key (what a literal matches as), "" for a regex: computed once per push."""
    return [compact(rule.pattern) if rule.kind == "literal" else "" for rule in rules]


def counts() -> dict[Source, int]:
    documents = corpus()
    return {source: sum(d.source == source for d in documents) for source in ("xstest", "ordinary")}


@dataclass(slots=True)
class BenignHits:
    """Which benign documents one rule hits: how many of each source, and a few examples."""

    xstest: int = 0
    ordinary: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def documents(self) -> int:
        return self.xstest + self.ordinary

    def too_broad(self) -> bool:
        return self.xstest > MAX_XSTEST_HITS or self.ordinary > MAX_ORDINARY_SHARE * counts()["ordinary"]

    def as_json(self) -> dict[str, object]:
        return {
            "documents": self.documents,
            "xstest": self.xstest,
            "ordinary": self.ordinary,
            "examples": list(self.examples),
        }


def _example(text: str, start: int, end: int) -> str:
    """The benign text around a hit, truncated, the matched span in [[...]]."""
    left = max(0, start - EXAMPLE_CONTEXT)
    right = min(len(text), end + EXAMPLE_CONTEXT)
    before = ("…" if left else "") + text[left:start]
    after = text[end:right] + ("…" if right < len(text) else "")
    return f"{before}[[{text[start:end]}]]{after}"


def benign_hits(rules: Sequence[Rule], keys: Sequence[str] | None = None) -> dict[int, BenignHits]:
    """For each rule (by its position in `rules`) that hits the benign corpus: what it hits. One Matcher
    over all of them, one pass over the corpus. A regex that runs over its time budget on benign text
    counts as hitting that document (it would fail closed, refusing it, on real traffic). `keys`:
    `literal_keys(rules)`, when the caller has them."""
    grams = _grams()
    keys = literal_keys(rules) if keys is None else keys
    position = {
        id(rule): index
        for index, (rule, key) in enumerate(zip(rules, keys, strict=True))
        if rule.kind == "regex" or _may_occur(key, grams)
    }
    # Aho-Corasick: many times quicker to build than Hyperscan, and the corpus is small.
    matcher = Matcher([rules[index] for index in position.values()], backend="ahocorasick")
    found: dict[int, BenignHits] = {}
    for document, view in zip(corpus(), _views(), strict=True):
        seen: set[int] = set()

        def fresh(rule: Rule) -> bool:
            return id(rule) not in seen  # noqa: B023 (read while this document is scanned)

        hits = matcher.scan(view, fresh)
        while True:
            try:
                hit = next(hits)
            except StopIteration:
                break
            except RegexTimeout as timeout:
                rule_index = next(i for i, r in enumerate(rules) if r.id == str(timeout))
                _count(found.setdefault(rule_index, BenignHits()), document, "(time budget exceeded)")
                seen.add(id(rules[rule_index]))
                hits = matcher.scan(view, fresh)  # the other rules still get their scan
                continue
            if id(hit.rule) in seen:
                continue  # a regex's further matches in this document
            seen.add(id(hit.rule))
            start, end = hit.original_span(view)
            _count(found.setdefault(position[id(hit.rule)], BenignHits()), document, _example(view.text, start, end))
    return found


def _count(hits: BenignHits, document: Document, example: str) -> None:
    if document.source == "xstest":
        hits.xstest += 1
    else:
        hits.ordinary += 1
    if len(hits.examples) < EXAMPLES:
        hits.examples.append(example)


def min_width(pattern: str) -> int | None:
    """The fewest characters a regex can match, or None when the standard parser does not know its syntax
    (then the benign corpus alone judges it)."""
    try:
        low: int = sre_parse.parse(pattern, re.IGNORECASE).getwidth()[0]
    except (re.error, RecursionError, OverflowError):
        return None
    return low


def too_short(rule: Rule, key: str | None = None) -> str | None:
    """Why the rule is too short to be safe, or None (`key`: its compact key, when known)."""
    if rule.kind == "regex":
        low = min_width(rule.pattern)
        if low is not None and low < MIN_FOLDED:
            return (
                f"the regex can match {low} character{'s' if low != 1 else ''}; "
                f"at least {MIN_FOLDED} are needed or it matches inside ordinary words"
            )
        return None
    folded = compact(rule.pattern) if key is None else key
    if len(folded) < MIN_FOLDED:
        return (
            f"the pattern folds to {folded!r} ({len(folded)} character{'s' if len(folded) != 1 else ''}); "
            f"at least {MIN_FOLDED} are needed or it matches inside ordinary words"
        )
    return None


@dataclass(frozen=True, slots=True)
class Refusal:
    index: int
    check: Check
    reason: str
    hits: BenignHits | None = None


def refusals(rules: Sequence[Rule], found: dict[int, BenignHits], keys: Sequence[str] | None = None) -> list[Refusal]:
    """Every rule the safety net refuses, in push order: too short first, else too broad per `found`."""
    out: list[Refusal] = []
    total = counts()
    keys = literal_keys(rules) if keys is None else keys
    for index, (rule, key) in enumerate(zip(rules, keys, strict=True)):
        short = too_short(rule, key)
        hits = found.get(index)
        if short is not None:
            out.append(Refusal(index, "too_short", short, hits))
        elif hits is not None and hits.too_broad():
            out.append(
                Refusal(
                    index,
                    "too_broad",
                    f"it hits {hits.documents} benign documents ({hits.xstest} of {total['xstest']} XSTest safe "
                    f"prompts, {hits.ordinary} of {total['ordinary']} ordinary documents; a rule may hit at most "
                    f"{MAX_XSTEST_HITS} XSTest prompts and {MAX_ORDINARY_SHARE:.1%} of the ordinary documents)",
                    hits,
                )
            )
    return out
