"""The evasion self-test a push answers with: which re-renderings of a rule's own pattern the engine
catches, so that a responder sees a rule's coverage before trusting it.

Each rendering is the pattern (a regex: an example string derived from it) written another way — upper
and mixed case, full-width forms, Cyrillic and Greek look-alikes, invisible characters between its
letters, leetspeak, separators between its letters, and streamed in chunks of 1 to 3 characters — put in
a sentence, and checked the way traffic is: through a one-rule Matcher (input) and a StreamScanner fed
in STREAM_CHUNK-character pieces (output). A rendering is caught when every variant of it is caught on
both; it is "not applicable" when it does not change the text (no letters to re-case, no leetable letter).
Nothing here knows what the engine folds: the answer is what the engine did.
"""

from __future__ import annotations

import re
import re._constants as sre_constants
import re._parser as sre_parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rules.match import Matcher, RegexTimeout
from rules.model import Rule
from rules.normalize import TextView
from rules.stream_scan import StreamScanner

RENDERINGS = ("case", "fullwidth", "homoglyphs", "invisibles", "leet", "separators", "split")
STREAM_CHUNK = 4  # characters per streamed piece (the mock upstream's default)
SPLIT_CHUNKS = (1, 2, 3)
CONTEXT = ("say ", " now.")

_CYRILLIC = str.maketrans("aceopxyisjhABCEHKMOPTX", "асеорхуіѕјһАВСЕНКМОРТХ")
_GREEK = str.maketrans("aoviukptxnABEHIKMNOPTXYZ", "αονιυκρτχηΑΒΕΗΙΚΜΝΟΡΤΧΥΖ")
_LEET_DIGITS = str.maketrans("aeiostbgAEIOSTBG", "4310578943105789")
_LEET_SYMBOLS = str.maketrans("asitAISTe", "@$!+@$!+€")
_INVISIBLES = {"zero-width space": "\u200b", "soft hyphen": "\u00ad", "word joiner": "\u2060"}
_SEPARATORS = {"dots": ".", "spaces": " ", "hyphens": "-"}
_SPLITS = {f"chunks of {size}": size for size in SPLIT_CHUNKS}  # streamed only


def _mixed(text: str) -> str:
    out, upper = [], True
    for char in text:
        if char.isalpha():
            out.append(char.upper() if upper else char.lower())
            upper = not upper
        else:
            out.append(char)
    return "".join(out)


def _fullwidth(text: str) -> str:
    return "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _between_letters(text: str, glue: str) -> str:
    """`glue` between each two adjacent letters or digits of every word."""
    return re.sub(r"(?<=[^\W_])(?=[^\W_])", lambda _: glue, text)


def _spaced_words(text: str, glue: str) -> str:
    """`glue` between the letters of each word; words spaced out letter by letter stay apart by three."""
    return ("   " if glue == " " else " ").join(_between_letters(word, glue) for word in text.split(" "))


def variants(name: str, text: str) -> dict[str, str]:
    """The variants (label → text) that rendering `name` of `text` stands for; empty when it would not
    change the text (not applicable). `split` is the text itself: the chunking is done when streaming."""
    candidates: dict[str, str]
    if name == "case":
        candidates = {"upper": text.upper(), "mixed": _mixed(text.lower())}
    elif name == "fullwidth":
        candidates = {"fullwidth": _fullwidth(text)}
    elif name == "homoglyphs":
        candidates = {"cyrillic": text.translate(_CYRILLIC), "greek": text.translate(_GREEK)}
    elif name == "invisibles":
        candidates = {label: _between_letters(text, glue) for label, glue in _INVISIBLES.items()}
    elif name == "leet":
        candidates = {"digits": text.translate(_LEET_DIGITS), "symbols": text.translate(_LEET_SYMBOLS)}
    elif name == "separators":
        candidates = {label: _spaced_words(text, glue) for label, glue in _SEPARATORS.items()}
    elif name == "split":
        return {label: text for label in _SPLITS} if len(text) > 1 else {}
    else:
        raise ValueError(f"unknown rendering {name!r}")
    return {label: variant for label, variant in candidates.items() if variant != text}


@dataclass(slots=True)
class SelfTest:
    caught: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)
    missed_on: dict[str, list[str]] = field(default_factory=dict)  # rendering → ["greek on input", ...]
    example: str | None = None  # the string rendered, for a regex
    note: str | None = None

    @property
    def score(self) -> str:
        return f"{len(self.caught)}/{len(self.caught) + len(self.missed)}"

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "caught": self.caught,
            "missed": self.missed,
            "not_applicable": self.not_applicable,
            "score": self.score,
        }
        if self.missed_on:
            out["missed_on"] = self.missed_on
        if self.example is not None:
            out["example"] = self.example
        if self.note is not None:
            out["note"] = self.note
        return out


class _Probe:
    """One rule's matcher, asked whether a text is caught on input and when streamed."""

    def __init__(self, rule: Rule) -> None:
        self._matcher = Matcher([rule])

    def on_input(self, text: str) -> bool:
        try:
            return next(iter(self._matcher.scan(TextView(text))), None) is not None
        except RegexTimeout:
            return True  # the gateway fails closed: the text would be refused

    def streamed(self, pieces: list[str]) -> bool:
        scanner = StreamScanner(self._matcher)
        try:
            for piece in pieces:
                emission = scanner.feed(piece)
                if emission.blocked is not None or emission.hits:
                    return True
            emission = scanner.finish()
        except RegexTimeout:
            return True
        return emission.blocked is not None or bool(emission.hits)


def chunks(text: str, size: int) -> list[str]:
    return [text[begin : begin + size] for begin in range(0, len(text), size)]


def pieces(name: str, label: str, text: str, around: tuple[str, str]) -> list[str]:
    """How a rendering is streamed: the sentence in STREAM_CHUNK-character pieces, or for `split` the
    pattern in pieces of its size between the sentence's two halves."""
    before, after = around
    if name == "split":
        return [part for part in (before, *chunks(text, _SPLITS[label]), after) if part]
    return chunks(before + text + after, STREAM_CHUNK)


def self_test(rule: Rule) -> SelfTest:
    """Which renderings of the rule's own pattern the engine catches, on input and streamed."""
    result = SelfTest()
    plain = rule.pattern if rule.kind == "literal" else regex_example(rule.pattern)
    if rule.kind == "regex":
        result.example = plain
    probe = _Probe(rule)
    around = _context(probe, plain)
    if plain is None or around is None:
        result.not_applicable = list(RENDERINGS)
        result.note = (
            "no example string could be derived from the regex"
            if plain is None
            else "the pattern itself is not caught, so its renderings were not tried"
        )
        return result
    before, after = around
    if not probe.streamed(chunks(before + plain + after, STREAM_CHUNK)):
        result.note = "the pattern itself is not caught when streamed"
    for name in RENDERINGS:
        rendered = variants(name, plain)
        if not rendered:
            result.not_applicable.append(name)
            continue
        missed: list[str] = []
        for label, text in rendered.items():
            if name != "split" and not probe.on_input(before + text + after):
                missed.append(f"{label} on input")
            if not probe.streamed(pieces(name, label, text, around)):
                missed.append(f"{label} on stream")
        if missed:
            result.missed.append(name)
            result.missed_on[name] = missed
        else:
            result.caught.append(name)
    return result


def _context(probe: _Probe, plain: str | None) -> tuple[str, str] | None:
    """What renderings are put between: a sentence, or nothing when the rule (anchored, say) only
    matches the plain pattern alone; None when it matches neither."""
    if plain is None:
        return None
    for around in (CONTEXT, ("", "")):
        if probe.on_input(around[0] + plain + around[1]):
            return around
    return None


_CATEGORY_EXAMPLE = {
    sre_constants.CATEGORY_DIGIT: "0",
    sre_constants.CATEGORY_WORD: "a",
    sre_constants.CATEGORY_SPACE: " ",
    sre_constants.CATEGORY_NOT_DIGIT: "a",
    sre_constants.CATEGORY_NOT_WORD: " ",
    sre_constants.CATEGORY_NOT_SPACE: "a",
}


def regex_example(pattern: str) -> str | None:
    """A short string the regex matches, or None when this simple walk cannot derive one (back
    references, negated classes, syntax only the `regex` module knows)."""
    try:
        parsed = sre_parse.parse(pattern, re.IGNORECASE)
        example = "".join(_walk(list(parsed)))
    except (re.error, RecursionError, OverflowError, _NoExample):
        return None
    return example if example.strip() else None


class _NoExample(Exception):
    pass


def _walk(items: list[tuple[Any, Any]]) -> Iterator[str]:
    for op, av in items:
        if op == sre_constants.LITERAL:
            yield chr(av)
        elif op == sre_constants.NOT_LITERAL:
            yield "a" if chr(av).lower() != "a" else "b"
        elif op == sre_constants.ANY:
            yield "a"
        elif op == sre_constants.IN:
            yield _member(av)
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            low, _, body = av
            yield "".join(_walk(list(body))) * low
        elif op == sre_constants.SUBPATTERN:
            yield from _walk(list(av[3]))
        elif op == sre_constants.BRANCH:
            yield from _walk(list(av[1][0]))
        elif op in (sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            continue  # zero-width: the example is checked against the regex afterwards anyway
        else:
            raise _NoExample(str(op))


def _member(items: list[tuple[Any, Any]]) -> str:
    for op, av in items:
        if op == sre_constants.NEGATE:
            raise _NoExample("negated class")
        if op == sre_constants.LITERAL:
            return chr(av)
        if op == sre_constants.RANGE:
            return chr(av[0])
        if op == sre_constants.CATEGORY and av in _CATEGORY_EXAMPLE:
            return _CATEGORY_EXAMPLE[av]
    raise _NoExample("class")
