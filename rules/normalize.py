"""The matching views of a text, with offset maps back to the original.

Two views, each built one character at a time so that a match can be mapped back, masked or redacted:

**compact** (literal rules), in this order:
1. NFKD compatibility decomposition (full-width, math alphanumerics, ligatures, superscripts → plain);
2. case folding (`str.casefold`);
3. Unicode tag characters (U+E0020–E007E, "ASCII smuggling") are decoded to the ASCII they encode;
4. confusable homoglyphs (Cyrillic `а`, Greek `ο`, ...) fold to their ASCII look-alike, from the Unicode
   confusables table shipped by the `confusable-homoglyphs` package (non-ASCII sources to single ASCII
   letters or digits only), plus the letter-likes that table leaves out, found by Unicode name: small
   capitals (`ɴ`), regional indicators (`🇧`) and negative squared/circled letters (`🅱`);
5. leetspeak: `0→o 1→i 3→e 4→a 5→s 7→t 8→b 9→g @→a $→s !→i |→i +→t €→e`, and `l→i`
   (so `l`, `I`, `1`, `|` and `!` are one letter);
6. everything that is not a letter or a digit is dropped: combining marks (accents, zalgo), format
   characters (zero-width space/joiners, soft hyphen, BOM, word joiner) and separators (spaces,
   newlines, punctuation, symbols). `b.o.m.b`, `b o m b` and `b\\no\\nm\\nb` all read `bomb`.

Word boundaries survive as side information: a compact character knows whether a separator stood
before it, and whether it came from a leet *symbol* (`!`, `@`, ...), which also counts as a boundary
(so `bomb!` still ends a word).

**light** (regex rules): steps 1-4 and the removal of combining marks and format characters only; case
is folded, but digits, punctuation and whitespace stay as written, so regexes keep their usual meaning.
"""

from __future__ import annotations

import bisect
import functools
import json
import unicodedata
from dataclasses import dataclass
from importlib import resources

import regex

LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "l": "i"}
LEET_SYMBOLS = {"@": "a", "$": "s", "!": "i", "|": "i", "+": "t", "€": "e"}
_NOT_WORD = regex.compile(r"[^\p{L}\p{N}]+")
_INVISIBLE = regex.compile(r"[\p{M}\p{Cf}]+")
_TAG_FIRST, _TAG_LAST = 0xE0020, 0xE007E


def _load_confusables() -> dict[str, str]:
    """Non-ASCII homoglyph → the ASCII letter or digit it imitates (lower case)."""
    data = json.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8"))
    table: dict[str, str] = {}
    # Lower-case letters first, so that a glyph listed under several look-alikes takes the letter.
    targets = sorted((c for c in data if len(c) == 1 and c.isascii() and c.isalnum()), key=lambda c: (c.isupper(), c))
    for target in targets:
        for entry in data[target]:
            glyph = entry["c"]
            if len(glyph) == 1 and not glyph.isascii():
                table.setdefault(glyph, target.lower())
    return table


# Letter-likes the confusables table leaves out (it judges glyphs at text size) but that evasion text
# generators use: small capitals, regional indicators, negative squared/circled letters.
_LETTER_LIKE = regex.compile(
    r"^(?:LATIN LETTER SMALL CAPITAL|REGIONAL INDICATOR SYMBOL LETTER|"
    r"NEGATIVE (?:SQUARED|CIRCLED) LATIN CAPITAL LETTER) ([A-Z])$"
)


def _letter_likes() -> dict[str, str]:
    table: dict[str, str] = {}
    for code in range(0x80, 0x20000):
        found = _LETTER_LIKE.match(unicodedata.name(chr(code), ""))
        if found:
            table[chr(code)] = found.group(1).lower()
    return table


def _build_tables() -> tuple[dict[int, str], dict[int, str]]:
    """(light, compact) str.translate tables, applied after NFKD and casefold."""
    light: dict[int, str] = {}
    for glyph, target in (_letter_likes() | _load_confusables()).items():
        for key in {glyph, unicodedata.normalize("NFKD", glyph).casefold()}:
            if len(key) == 1 and not key.isascii():
                light[ord(key)] = target
    for code in range(_TAG_FIRST, _TAG_LAST + 1):
        light[code] = chr(code - 0xE0000).casefold()
    compact = dict(light)
    for source, target in {**LEET, **LEET_SYMBOLS}.items():
        compact[ord(source)] = target
    for code, value in list(compact.items()):
        compact[code] = "".join(LEET.get(c, LEET_SYMBOLS.get(c, c)) for c in value)
    return light, compact


_LIGHT_TABLE, _COMPACT_TABLE = _build_tables()
_ASCII_COMPACT = {code: _NOT_WORD.sub("", chr(code).lower().translate(_COMPACT_TABLE)) for code in range(128)}
_ASCII_TABLE = {code: value or None for code, value in _ASCII_COMPACT.items() if value != chr(code)}
# In ASCII text every kept character becomes exactly one compact character.
_ASCII_MASK = {code: "k" if value else "s" for code, value in _ASCII_COMPACT.items()}


def compact(text: str) -> str:
    """The compact view of `text` (what literal rules match against)."""
    if text.isascii():
        return text.translate(_ASCII_TABLE)
    folded = unicodedata.normalize("NFKD", text).casefold().translate(_COMPACT_TABLE)
    result: str = _NOT_WORD.sub("", folded)
    return result


def light(text: str) -> str:
    """The light view of `text` (what regex rules match against)."""
    if text.isascii():
        return text.lower()
    folded = unicodedata.normalize("NFKD", text).casefold().translate(_LIGHT_TABLE)
    result: str = _INVISIBLE.sub("", folded)
    return result


_fold_char = functools.lru_cache(maxsize=1 << 16)(compact)


@functools.lru_cache(maxsize=1 << 16)
def _char_class(char: str) -> int:
    """0: a word character; 1: a separator; 2: invisible (format character or combining mark)."""
    if unicodedata.category(char) in ("Cf", "Mn", "Me", "Mc"):
        return 2
    return 0 if _fold_char(char) else 1


@dataclass(frozen=True, slots=True)
class Detail:
    """A view with its maps: `origin[i]` is the original index of view character i; in the compact view
    `boundary_before[i]` says a word boundary lies just before character i."""

    text: str
    origin: tuple[int, ...]
    boundary_before: tuple[bool, ...]
    soft: tuple[bool, ...]
    original_length: int
    trailing_boundary: bool = True

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Map a half-open view span to the original text."""
        if start >= len(self.origin):
            return self.original_length, self.original_length
        first = self.origin[start]
        last = self.origin[end - 1] + 1 if end > start else first
        return first, last

    def is_word(self, start: int, end: int) -> bool:
        """Whether the view span [start, end) stands as a whole word in the original."""
        begins = start == 0 or self.boundary_before[start] or self.soft[start - 1]
        ends = end >= len(self.text) or self.boundary_before[end] or self.soft[end]
        return begins and ends


def compact_detail(text: str, *, offset: int = 0, boundary_at_start: bool = True) -> Detail:
    out, origin, boundary, soft, trailing = compact_maps(text, offset, boundary_at_start)
    return Detail(out, tuple(origin), tuple(boundary), tuple(soft), len(text) + offset, trailing)


# For each ASCII code: (its compact character or "", from a leet symbol, a separator).
_ASCII_FOLD = [(_ASCII_COMPACT[code], chr(code) in LEET_SYMBOLS, not _ASCII_COMPACT[code]) for code in range(128)]


def compact_maps(
    text: str, offset: int = 0, boundary_at_start: bool = True
) -> tuple[str, list[int], list[bool], list[bool], bool]:
    """The compact view of `text` with its per-character maps (see Detail) and whether the text ends
    at a word boundary."""
    out: list[str] = []
    origin: list[int] = []
    boundary: list[bool] = []
    soft: list[bool] = []
    pending = boundary_at_start
    if text.isascii():  # every character folds to at most one, by table
        fold = _ASCII_FOLD
        for index, code in enumerate(text.encode()):
            folded, is_soft, separator = fold[code]
            if folded:
                out.append(folded)
                origin.append(index + offset)
                boundary.append(pending)
                soft.append(is_soft)
                pending = False
            elif separator:
                pending = True
        return "".join(out), origin, boundary, soft, pending
    for index, char in enumerate(text):
        folded = _fold_char(char)
        if folded:
            is_soft = char in LEET_SYMBOLS
            for piece in folded:
                out.append(piece)
                origin.append(index + offset)
                boundary.append(pending)
                soft.append(is_soft)
                pending = False
        elif _char_class(char) == 1:
            pending = True
    return "".join(out), origin, boundary, soft, pending


def light_detail(text: str) -> Detail:
    out: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = light(char)
        out.append(folded)
        origin.extend([index] * len(folded))
    view = "".join(out)
    flags = tuple(False for _ in view)
    return Detail(view, tuple(origin), flags, flags, len(text))


class AsciiDetail:
    """The compact view's maps for ASCII text, answered on demand from a mask of kept characters
    (a C-speed translate, then counting), instead of building `compact_detail`'s per-character maps;
    same answers."""

    __slots__ = ("text", "_original", "_mask", "_blocks")
    BLOCK = 256

    def __init__(self, original: str, view: str) -> None:
        self.text = view
        self._original = original
        self._mask = original.translate(_ASCII_MASK)  # "k" kept, "s" separator
        self._blocks: list[int] | None = None  # kept characters before each BLOCK-sized block

    def _origin(self, index: int) -> int:
        """Original index of view character `index`: the (index+1)-th kept character."""
        if self._blocks is None:
            blocks, total = [], 0
            for begin in range(0, len(self._mask), self.BLOCK):
                blocks.append(total)
                total += self._mask.count("k", begin, begin + self.BLOCK)
            self._blocks = blocks
        block = bisect.bisect_right(self._blocks, index) - 1
        before = self._blocks[block]
        low = block * self.BLOCK
        high = min(low + self.BLOCK, len(self._mask)) - 1
        while low < high:
            middle = (low + high) // 2
            if before + self._mask.count("k", block * self.BLOCK, middle + 1) > index:
                high = middle
            else:
                low = middle + 1
        return low

    def _begins_run(self, index: int) -> bool:
        origin = self._origin(index)
        return origin == 0 or self._mask[origin - 1] == "s"

    def _soft(self, index: int) -> bool:
        return self._original[self._origin(index)] in LEET_SYMBOLS

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        if start >= len(self.text):
            return len(self._original), len(self._original)
        first = self._origin(start)
        return first, (self._origin(end - 1) + 1 if end > start else first)

    def is_word(self, start: int, end: int) -> bool:
        begins = start == 0 or self._begins_run(start) or self._soft(start - 1)
        ends = end >= len(self.text) or self._begins_run(end) or self._soft(end)
        return begins and ends


class TextView:
    """One text and its views, each computed once, on demand."""

    __slots__ = ("text", "_compact", "_compact_detail", "_light", "_light_detail")

    def __init__(self, text: str) -> None:
        self.text = text
        self._compact: str | None = None
        self._compact_detail: Detail | AsciiDetail | None = None
        self._light: str | None = None
        self._light_detail: Detail | None = None

    @property
    def compact(self) -> str:
        if self._compact is None:
            self._compact = compact(self.text)
        return self._compact

    @property
    def compact_detail(self) -> Detail | AsciiDetail:
        if self._compact_detail is None:
            if self.text.isascii():
                self._compact_detail = AsciiDetail(self.text, self.compact)
            else:
                self._compact_detail = compact_detail(self.text)
        return self._compact_detail

    @property
    def light(self) -> str:
        if self._light is None:
            self._light = light(self.text)
        return self._light

    @property
    def light_detail(self) -> Detail:
        if self._light_detail is None:
            self._light_detail = light_detail(self.text)
        return self._light_detail
