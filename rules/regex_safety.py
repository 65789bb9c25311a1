"""Refuse, at push time, regexes that cannot compile, match the empty string, or may backtrack
catastrophically: nested variable quantifiers (`(a+)+`, `(\\w+\\s?)*`) are refused by their shape, and
every pattern is run against probe strings under a time budget: runs of its own characters and of a
member of each character class it uses, and adversarial texts built from its literal factors — the
factors repeated, alternating, without the last (or any one) of them, so that a match is attempted from
every position and never completes (`ignore.*previous.*instructions` against "ignore previous " × N
backtracks in O(N³))."""

from __future__ import annotations

import re
import re._constants as sre_constants
import re._parser as sre_parse
from typing import Any

import regex

from rules.match import compile_regex

PROBE_BUDGET = 0.05  # seconds per probe search
PROBE_LENGTHS = (32, 4096)
ADVERSARIAL_LENGTH = 4096  # a superlinear regex (cubic and worse) exceeds PROBE_BUDGET on this many chars
MAX_FACTORS = 6
# A member of each class a pattern may use, so that a run of it is probed.
_CLASS_MEMBERS = {
    sre_constants.CATEGORY_DIGIT: "7",
    sre_constants.CATEGORY_NOT_DIGIT: "a",
    sre_constants.CATEGORY_SPACE: " ",
    sre_constants.CATEGORY_NOT_SPACE: "a",
    sre_constants.CATEGORY_WORD: "a",
    sre_constants.CATEGORY_NOT_WORD: "-",
}
_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT}


def regex_problem(pattern: str) -> str | None:
    """Why `pattern` may not be pushed, or None when it is safe to enforce."""
    try:
        compiled = compile_regex(pattern)
    except regex.error as exc:
        return f"does not compile: {exc}"
    if compiled.search("") is not None:
        return "matches the empty string, so it would match every text"
    if _nested_quantifier(pattern):
        return "nested quantifiers can backtrack catastrophically; rewrite without a repeat inside a repeat"
    for probe in _probes(pattern):
        try:
            compiled.search(probe, timeout=PROBE_BUDGET)
        except TimeoutError:
            return f"exceeded its {int(PROBE_BUDGET * 1000)} ms time budget on a probe string"
    for probe in _adversarial(pattern):
        try:
            compiled.search(probe, timeout=PROBE_BUDGET)
        except TimeoutError:
            return (
                f"exceeded its {int(PROBE_BUDGET * 1000)} ms time budget on a probe string that repeats its"
                " literal parts without completing a match; bound the gaps between them (`.{0,80}`, not `.*`)"
            )
    return None


def _nested_quantifier(pattern: str) -> bool:
    try:
        parsed = sre_parse.parse(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError):
        return False  # syntax only the `regex` module knows: the probes still run
    return _walk(parsed, inside_repeat=False)


def _is_variable_repeat(op: Any, av: Any) -> bool:
    return op in _REPEATS and av[0] != av[1]


def _walk(items: Any, *, inside_repeat: bool) -> bool:
    for op, av in items:
        if op in _REPEATS:
            low, high, body = av
            if inside_repeat and low != high:
                return True
            repeats_more_than_once = high == sre_constants.MAXREPEAT or high > 1
            if repeats_more_than_once and _body_is_loose(body) and _walk(body, inside_repeat=True):
                return True
            if _walk(body, inside_repeat=False):
                return True
        elif op == sre_constants.SUBPATTERN:
            if _walk(av[3], inside_repeat=inside_repeat):
                return True
        elif op == sre_constants.BRANCH:
            if any(_walk(branch, inside_repeat=inside_repeat) for branch in av[1]):
                return True
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            if _walk(av[1], inside_repeat=False):
                return True
    return False


def _body_is_loose(body: Any) -> bool:
    """A repeated body is dangerous when a variable repeat inside it is all it needs to match:
    every other element may match nothing (`(a+b?)+`), unlike `(ab+)+` where `a` anchors each turn."""
    items = list(body)
    while len(items) == 1 and items[0][0] == sre_constants.SUBPATTERN:
        items = list(items[0][1][3])
    required = 0
    for op, av in items:
        if _is_variable_repeat(op, av):
            continue
        part = av[3] if op == sre_constants.SUBPATTERN else sre_parse.SubPattern(body.state, [(op, av)])
        if part.getwidth()[0] > 0:
            required += 1
    return required == 0


def _probes(pattern: str) -> list[str]:
    chars = sorted({c for c in pattern.lower() if c.isalnum() or c in " -_.,:;/@\n\t"} | {"a", "0", " "})[:24]
    probes = []
    for length in PROBE_LENGTHS:
        for char in chars:
            probes.append(char * length + "!\x00")
        cycle = "".join(chars)
        probes.append((cycle * (length // max(len(cycle), 1) + 1))[:length] + "!\x00")
    return probes


def _adversarial(pattern: str) -> list[str]:
    """Texts that make a regex try (and fail) a match at every position: its literal factors in order,
    repeated, with the last one (or one of the others) left out; each factor repeated alone; runs of a
    member of each character class it uses. Empty when the standard parser cannot read the pattern
    (the character probes still run)."""
    try:
        parsed = sre_parse.parse(pattern, re.IGNORECASE)
    except (re.error, RecursionError, OverflowError):
        return []
    factors: list[str] = []
    members: set[str] = set()
    _collect(list(parsed), factors, members, [])
    factors = [factor for factor in dict.fromkeys(factors) if factor.strip()][:MAX_FACTORS]
    units: list[str] = []
    for factor in factors:
        units += [factor + " ", factor]
    for leave_out in range(len(factors)):
        rest = factors[:leave_out] + factors[leave_out + 1 :]
        if rest:
            units += [" ".join(rest) + " ", "".join(rest)]
    units += sorted(members)
    return [_repeat(unit, ADVERSARIAL_LENGTH) + "!\x00" for unit in dict.fromkeys(units) if unit]


def _repeat(unit: str, length: int) -> str:
    return (unit * (length // len(unit) + 1))[:length]


def _collect(items: list[Any], factors: list[str], members: set[str], run: list[str]) -> None:
    """Runs of literal characters (in pattern order) into `factors`; class members into `members`."""

    def close() -> None:
        if run:
            factors.append("".join(run))
            run.clear()

    for op, av in items:
        if op == sre_constants.LITERAL:
            run.append(chr(av))
            continue
        close()
        if op == sre_constants.SUBPATTERN:
            _collect(list(av[3]), factors, members, [])
        elif op == sre_constants.BRANCH:
            for branch in av[1]:
                _collect(list(branch), factors, members, [])
        elif op in _REPEATS:
            _collect(list(av[2]), factors, members, [])
        elif op == sre_constants.IN:
            for kind, value in av:
                if kind == sre_constants.CATEGORY and value in _CLASS_MEMBERS:
                    members.add(_CLASS_MEMBERS[value])
                elif kind == sre_constants.LITERAL:
                    members.add(chr(value))
                elif kind == sre_constants.RANGE:
                    members.add(chr(value[0]))
        elif op == sre_constants.ANY:
            members.add("a")
    close()
