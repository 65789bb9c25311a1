"""Literal factors a regex cannot match without, so that a scan runs only the regexes that could match.

For each regex we look for strings of which at least one must appear in any text it matches (a run
of literal characters in the top-level sequence, or one factor per alternative of a group). Running a
regex only when one of its factors occurs in the (case-folded) text keeps the cost of 100 regexes close
to the cost of one Aho-Corasick pass. A regex with no usable factor (or syntax the standard parser does
not know) is always run, so the prefilter can skip work but never a match.
"""

from __future__ import annotations

import re
import re._constants as sre_constants
import re._parser as sre_parse
from typing import Any

MIN_FACTOR = 3
_ZERO_WIDTH = {sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT}


def required_factors(pattern: str) -> frozenset[str] | None:
    """A set of lower-case ASCII strings one of which every match contains, or None when unknown."""
    try:
        parsed = sre_parse.parse(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError):
        return None
    return _sequence(list(parsed))


def _sequence(items: list[tuple[Any, Any]]) -> frozenset[str] | None:
    best: frozenset[str] | None = None
    run: list[str] = []

    def consider(candidate: frozenset[str] | None) -> None:
        nonlocal best
        if candidate is not None and (best is None or _score(candidate) > _score(best)):
            best = candidate

    for op, av in items:
        if op == sre_constants.LITERAL and av < 128 and chr(av).isalnum():
            run.append(chr(av).lower())
            continue
        if run:
            consider(_run(run))
            run = []
        if op in _ZERO_WIDTH:
            continue
        if op == sre_constants.SUBPATTERN:
            consider(_sequence(list(av[3])))
        elif op == sre_constants.BRANCH:
            consider(_branches(av[1]))
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) and av[0] >= 1:
            consider(_sequence(list(av[2])))
    if run:
        consider(_run(run))
    return best


def _run(chars: list[str]) -> frozenset[str] | None:
    return frozenset({"".join(chars)}) if len(chars) >= MIN_FACTOR else None


def _branches(branches: list[Any]) -> frozenset[str] | None:
    found: set[str] = set()
    for branch in branches:
        factors = _sequence(list(branch))
        if factors is None:
            return None  # one alternative could match without any factor
        found |= factors
    return frozenset(found)


def _score(factors: frozenset[str]) -> tuple[int, int]:
    """Prefer the set whose weakest factor is longest, then the smaller set."""
    return min(len(f) for f in factors), -len(factors)
