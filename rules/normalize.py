"""The matching view of a text, with an offset map back to the original.

Today: Unicode compatibility folding (NFKC) and case folding, one character at a time so that every
normalized character knows which original character it came from. Rules are normalized the same way,
so `BOMB`, `bomb` and full-width `ｂｏｍｂ` are one pattern.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """`text` is what the matchers see; `origin[i]` is the index in the original of `text[i]`
    (None when the two are index-for-index the same)."""

    text: str
    origin: tuple[int, ...] | None
    original_length: int

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Map a normalized half-open span [start, end) to the original text."""
        if self.origin is None:
            return start, end
        if start >= len(self.origin):
            return self.original_length, self.original_length
        first = self.origin[start]
        last = self.origin[end - 1] + 1 if end > start else first
        return first, last


def normalize(text: str) -> NormalizedText:
    if text.isascii():
        return NormalizedText(text.lower(), None, len(text))
    out: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = unicodedata.normalize("NFKC", char).casefold()
        out.append(folded)
        origin.extend([index] * len(folded))
    return NormalizedText("".join(out), tuple(origin), len(text))


def normalize_pattern(pattern: str) -> str:
    """The normalized form of a literal pattern, as the automaton stores it."""
    return normalize(pattern).text
