"""The matching views of a text, with offset maps back to the original.

A text is matched through several *views*, each built one character at a time so that a match can be
mapped back, masked or redacted.

**compact** (literal rules). Each character is folded on its own:
1. NFKD compatibility decomposition (full-width, math alphanumerics, ligatures, superscripts → plain);
2. combining marks and invisible characters are removed (accents, zalgo, U+0345, zero-width and other
   format characters, Hangul fillers and every other Default_Ignorable_Code_Point, Unicode tag
   characters) — *before* case folding, so no mark can turn into a letter;
3. confusable homoglyphs fold to their ASCII look-alike, looked up as written (so a capital's look-alike
   never overrides the lower-case letter's: Greek `ν` is `v`, `Ν` is `n`), from the Unicode confusables
   table shipped by `confusable-homoglyphs`, plus the letter-likes it leaves out (small capitals,
   regional indicators, negative squared/circled letters) and the stroke/bar/hook letters NFKD does not
   decompose (`ø ł đ ħ ŧ ƀ ɨ`, dotless `ı`, ...);
4. case folding (`str.casefold`), then the confusables table once more for what case folding produced;
5. `l→i` (so `l`, `I`, `1`, `|` and `!` are one letter).

Then, per *token* (a run of characters between separators; invisible characters do not split one):
- leet digits `0→o 1→i 2→z 3→e 4→a 5→s 6→g 7→t 8→b 9→g` and leet symbols `@→a $→s !→i |→i +→t €→e`
  fold only inside a token that also holds a letter (`b0mb`, `@nthrax`); in a token without one they
  stay digits (`chapter 5`, `2024`) and the symbols become separators (`$100`, `a | b`). Text spaced
  out letter by letter (`s 4 r 1 n`) counts as one token;
- everything that is not a letter or a digit is dropped.

Two more compact views are matched when they can differ: **symbols**, where leet symbols are always
separators (`s+m+o+k+e`, `s|a|r|i|n`, `s!y!n` read `smoke`, `sarin`, `syn`), and **tags**, the text hidden
in Unicode tag characters (U+E0020–E007E, "ASCII smuggling"), decoded. In the other views tag
characters are invisible, so tags sprinkled between visible letters hide nothing and add nothing.

Word boundaries and sentence breaks survive as side information, answered from the original text: a
compact character knows whether a separator stood before it, and whether it came from a leet *symbol*
(which also counts as a word boundary: `bomb!`); `breaks` finds sentence and list punctuation between
two words of at least two letters each, which a multi-word phrase must not span.

**light** (regex rules): steps 1–4 only, with tags removed; case is folded, but digits, punctuation and
whitespace stay as written, so regexes keep their usual meaning. Look-alikes of a capital `I` read `i`,
and parenthesized letters (`⒤`) lose their parentheses.
"""

from __future__ import annotations

import bisect
import functools
import json
import unicodedata
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import regex

LEET = {"0": "o", "1": "i", "2": "z", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g"}
LEET_SYMBOLS = {"@": "a", "$": "s", "!": "i", "|": "i", "+": "t", "€": "e"}
_TAG_FIRST, _TAG_LAST = 0xE0020, 0xE007E
_TAGS = regex.compile(r"[\U000E0000-\U000E007F]")
_INVISIBLE = regex.compile(r"[\p{M}\p{Cf}\p{Default_Ignorable_Code_Point}\U000E0000-\U000E007F]")
_NOT_WORD = regex.compile(r"[^\p{L}\p{N}]+")
_PARENTHESIZED = regex.compile(r"^\((\w{1,2})\)$")

ViewKind = Literal["compact", "symbols", "tags", "tags_inline", "light", "light_tags", "light_spaced"]


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
    # Glyphs the table lists only as look-alikes of a decorated letter (`η` of `n̩`): the bare letter.
    for glyph, entries in data.items():
        if len(glyph) != 1 or glyph.isascii() or glyph in table:
            continue
        for entry in entries:
            bare = _INVISIBLE.sub("", unicodedata.normalize("NFKD", entry["c"]))
            if len(bare) == 1 and bare.isascii() and bare.isalnum():
                table[glyph] = bare.lower()
                break
    return table | {glyph: target for glyph, target in _GREEK.items() if glyph not in table}


# Greek lower-case letters that evasion generators use for Latin ones and the table does not pair.
_GREEK = {"κ": "k", "τ": "t", "χ": "x", "ω": "w", "μ": "u", "ε": "e", "γ": "y", "ϲ": "c", "ς": "c"}


# Letter-likes the confusables table leaves out (it judges glyphs at text size) but that evasion text
# generators use: small capitals, regional indicators, negative squared/circled letters; and the Latin
# letters with a stroke, bar, hook or tail that NFKD leaves whole.
_LETTER_LIKE = regex.compile(
    r"^(?:LATIN LETTER SMALL CAPITAL|REGIONAL INDICATOR SYMBOL LETTER|"
    r"NEGATIVE (?:SQUARED|CIRCLED) LATIN CAPITAL LETTER|LATIN (?:SMALL|CAPITAL) LETTER DOTLESS|"
    r"LATIN SMALL LETTER SCRIPT) ([A-Z])$"
    # any decorated Latin letter NFKD leaves whole: stroke, bar, oblique stroke, hook, fishhook, tail, ...
    r"|^LATIN (?:SMALL|CAPITAL) LETTER ([A-Z]) WITH .*$"
)

# "Fancy text" alphabets that text generators offer and the confusables table does not pair: Canadian
# syllabics, CJK and Bopomofo look-alikes, and Cyrillic letters used for the Latin letter they resemble.
_FANCY = dict(
    zip(
        "ᗩᗷᑕᗪᖴᕼᒍᒪᗰᑎᑭᑫᖇᔕᑌᐯᗯ᙭ᘔ卂乃匚乇千Ꮆ卄丨ﾌҜㄥ爪几ㄖ卩Ɋ尺丂ㄒㄩ山乂ㄚ乙явнпкшŋ",
        "abcdfhjlmnpqrsuvwxzabcefghijklmnopqrstuwxyzrbhnkwn",
        strict=True,
    )
)


def _letter_likes() -> dict[str, str]:
    table: dict[str, str] = {}
    for code in range(0x80, 0x20000):
        found = _LETTER_LIKE.match(unicodedata.name(chr(code), ""))
        if found:
            table[chr(code)] = (found.group(1) or found.group(2)).lower()
    return table


_CAPITAL_I = regex.compile(r"CAPITAL LETTER (?:I|IOTA|BYELORUSSIAN-UKRAINIAN I)$|LETTER PALOCHKA$|ROMAN NUMERAL ONE$")


def _build_table() -> tuple[dict[str, str], dict[str, str]]:
    """(compact, light) glyph → ASCII tables, looked up on NFKD characters before and after casefold.
    The compact table folds `l` to `i`; the light table keeps `l` but reads capital-I look-alikes as `i`."""
    table: dict[str, str] = {}
    for glyph, target in (_load_confusables() | _letter_likes() | _FANCY).items():
        key = unicodedata.normalize("NFKD", glyph)
        key = _INVISIBLE.sub("", key)
        if len(key) == 1 and not key.isascii() and not _INVISIBLE.match(key):
            table.setdefault(key, target)  # the glyph's own entry first: never the capital's casefold
    for key, target in list(table.items()):
        lower = key.casefold()
        if len(lower) == 1 and not lower.isascii():
            table.setdefault(lower, target)  # a lower case with no entry of its own: its capital's (`м`, `ь`)
    light = dict(table)
    for glyph, target in table.items():
        if target == "l" and unicodedata.category(glyph) == "Lu" and _CAPITAL_I.search(unicodedata.name(glyph, "")):
            light[glyph] = "i"  # a capital I's look-alike reads as the `i` that `I` lower-cases to
    light["\u2800"] = ""  # the Braille blank: dropped, like the invisibles it stands in for
    light["\u04cf"] = "l"  # the small palochka stands in for `l` (`аӏӏ`); its capital for `I`
    compact = {glyph: "i" if target == "l" else target for glyph, target in table.items()}
    return compact, light


_COMPACT_TABLE, _LIGHT_TABLE = _build_table()


def _fold_word(char: str, table: dict[str, str]) -> str:
    """One character, folded: NFKD, without marks and invisibles, look-alikes, case folded."""
    out: list[str] = []
    for part in unicodedata.normalize("NFKD", char):
        if _INVISIBLE.match(part):
            continue
        mapped = table.get(part)
        if mapped is not None:
            out.append(mapped)
            continue
        for folded in part.casefold():
            out.append(table.get(folded, folded))
    return "".join(out)


# Character classes of the compact views.
LETTER, DIGIT, SYMBOL, INVISIBLE, SEPARATOR = 0, 1, 2, 3, 4


@functools.lru_cache(maxsize=1 << 16)
def classify(char: str) -> tuple[int, str]:
    """(class, folded text). DIGIT's text is the ASCII digits; SYMBOL's is its leet letter."""
    if _INVISIBLE.match(char):
        return INVISIBLE, ""
    symbol = LEET_SYMBOLS.get(char)
    if symbol is None and not char.isascii():
        symbol = LEET_SYMBOLS.get(unicodedata.normalize("NFKD", char))
    if symbol is not None:
        return SYMBOL, symbol
    folded = _NOT_WORD.sub("", _fold_word(char, _COMPACT_TABLE))
    if not folded:
        return SEPARATOR, ""
    if folded.isascii() and folded.isdigit():
        return DIGIT, folded
    return LETTER, folded.replace("l", "i")


# ----- building a compact view -----


def _tokens(classes: list[int], symbols_are_letters: bool) -> tuple[list[int], list[bool]]:
    """Each character's token (-1 for separators and invisibles) and, per token, whether its leet digits
    and symbols fold: it holds a letter, or it is one of a run of one-character tokens (text spaced out
    letter by letter) one of which is a letter."""
    token_of = [-1] * len(classes)
    letters: list[bool] = []
    sizes: list[int] = []
    current = -1
    for index, kind in enumerate(classes):
        if kind == SEPARATOR or (kind == SYMBOL and not symbols_are_letters):
            current = -1
        elif kind != INVISIBLE:
            if current < 0:
                current = len(sizes)
                letters.append(False)
                sizes.append(0)
            token_of[index] = current
            sizes[current] += 1
            if kind == LETTER:
                letters[current] = True
    folds = list(letters)
    first = 0
    while first < len(sizes):
        last = first
        if sizes[first] == 1:
            while last + 1 < len(sizes) and sizes[last + 1] == 1:
                last += 1
            if last > first and any(letters[first : last + 1]):
                for token in range(first, last + 1):
                    folds[token] = True
        first = last + 1
    return token_of, folds


def compact_maps(
    text: str, offset: int = 0, boundary_at_start: bool = True, symbols_are_letters: bool = True
) -> tuple[str, list[int], list[bool], list[bool], bool]:
    """The compact view of `text` with its per-character maps (see Detail) and whether the text ends at a
    word boundary."""
    pairs = [classify(char) for char in text]
    classes = [kind for kind, _ in pairs]
    token_of, folds = _tokens(classes, symbols_are_letters)
    out: list[str] = []
    origin: list[int] = []
    boundary: list[bool] = []
    soft: list[bool] = []
    pending = boundary_at_start
    for index, (kind, folded) in enumerate(pairs):
        if kind == LETTER:
            pieces, is_soft = folded, False
        elif kind == DIGIT:
            pieces, is_soft = ("".join(LEET[d] for d in folded) if folds[token_of[index]] else folded), False
        elif kind == SYMBOL and symbols_are_letters and folds[token_of[index]]:
            pieces, is_soft = folded, True
        else:
            if kind != INVISIBLE:
                pending = True
            continue
        for piece in pieces:
            out.append(piece)
            origin.append(index + offset)
            boundary.append(pending)
            soft.append(is_soft)
            pending = False
    return "".join(out), origin, boundary, soft, pending


# ASCII fast path: a str.translate table, applied piecewise around the letterless tokens whose digits
# and symbols must not fold (found by one regex search; most texts have none, or a few numbers).
_ASCII_SYMBOLS = "".join(c for c in LEET_SYMBOLS if c.isascii())


def _ascii_word(char: str, symbols_are_letters: bool) -> bool:
    return char.isalnum() or (symbols_are_letters and char in _ASCII_SYMBOLS)


def _spaced_letter(text: str, index: int, symbols_are_letters: bool) -> bool:
    """Whether the one-character token at `index` is one of a run of one-character tokens (text spaced out
    letter by letter) that holds a letter."""
    for step in (-1, 1):
        position = index
        while True:
            position += step
            while 0 <= position < len(text) and not _ascii_word(text[position], symbols_are_letters):
                position += step
            if not 0 <= position < len(text):
                break
            neighbour = position + step
            if 0 <= neighbour < len(text) and _ascii_word(text[neighbour], symbols_are_letters):
                break  # a longer token ends the run
            if text[position].isalpha():
                return True
    return False


_DIGITS = "0123456789"


_CHAR_SETS: dict[str, frozenset[str]] = {}


def _has_any(text: str, chars: str) -> bool:
    """Whether `text` holds one of `chars`: for a short text one C pass over it, for a long one a C
    substring search per character (both several times faster than a regex class)."""
    if len(text) < 256:
        found = _CHAR_SETS.get(chars)
        if found is None:
            found = _CHAR_SETS[chars] = frozenset(chars)
        return not found.isdisjoint(text)
    return any(char in text for char in chars)


def _ascii_unfolded(text: str, symbols_are_letters: bool) -> list[tuple[int, int]]:
    """Spans of the letterless tokens of an ASCII text whose digits stay digits (and symbols drop)."""
    spans: list[tuple[int, int]] = []
    if not _has_any(text, _DIGITS) and not (symbols_are_letters and _has_any(text, _ASCII_SYMBOLS)):
        return spans
    mask = text.translate(_RUN_MASKS[symbols_are_letters])  # "d" digit (or symbol), "w" letter, " " other
    length = len(text)
    start = mask.find("d")
    while start >= 0:
        end = start + 1
        while end < length and mask[end] == "d":
            end += 1
        letterless = (start == 0 or mask[start - 1] != "w") and (end == length or mask[end] != "w")
        if letterless and not (end - start == 1 and _spaced_letter(text, start, symbols_are_letters)):
            spans.append((start, end))
        start = mask.find("d", end)
    return spans


def _run_mask(symbols_are_letters: bool) -> dict[int, str]:
    mask: dict[int, str] = {}
    for code in range(128):
        char = chr(code)
        if char.isdigit() or (symbols_are_letters and char in _ASCII_SYMBOLS):
            mask[code] = "d"
        else:
            mask[code] = "w" if char.isalpha() else " "
    return mask


_RUN_MASKS = {True: _run_mask(True), False: _run_mask(False)}


def _ascii_table(symbols_are_letters: bool, fold_digits: bool = True) -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for code in range(128):
        kind, folded = classify(chr(code))
        if kind == DIGIT:
            value = LEET[folded] if fold_digits else folded
        elif kind == SYMBOL:
            value = folded if symbols_are_letters and fold_digits else ""
        else:
            value = folded
        if value != chr(code):
            table[code] = value or None
    return table


_ASCII_TABLES = {True: _ascii_table(True), False: _ascii_table(False)}
_ASCII_DIGITS = _ascii_table(False, fold_digits=False)  # inside an unfolded token


def _piecewise(
    text: str, spans: list[tuple[int, int]], table: dict[int, str | None], inside: dict[int, str | None]
) -> str:
    out: list[str] = []
    cursor = 0
    for start, end in spans:
        out.append(text[cursor:start].translate(table))
        out.append(text[start:end].translate(inside))
        cursor = end
    out.append(text[cursor:].translate(table))
    return "".join(out)


def compact(text: str, symbols_are_letters: bool = True) -> str:
    """The compact view of `text` (what literal rules match against)."""
    if text.isascii():
        table = _ASCII_TABLES[symbols_are_letters]
        spans = _ascii_unfolded(text, symbols_are_letters)
        return _piecewise(text, spans, table, _ASCII_DIGITS) if spans else text.translate(table)
    return compact_maps(text, symbols_are_letters=symbols_are_letters)[0]


def light(text: str) -> str:
    """The light view of `text` (what regex rules match against)."""
    if text.isascii():
        return text.lower()
    return "".join(_light_char(char) for char in text)


# Invisible or blank characters an adversary may put between words instead of a space: removed in the
# light view (they also stand between letters), read as a space in a second one (`light_spaced`).
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u200b\u00ad\u2060\u180e\ufeff")


def has_blanks(text: str) -> bool:
    return not _BLANKS.isdisjoint(text)


def light_spaced(text: str) -> str:
    return "".join(" " if char in _BLANKS else _light_char(char) for char in text)


@functools.lru_cache(maxsize=1 << 16)
def _light_char(char: str) -> str:
    if unicodedata.category(char) == "Zs":
        return " "  # every space separator is a space (U+1680, U+3000, ...)
    if _INVISIBLE.match(char):
        return ""
    decomposed = unicodedata.normalize("NFKD", char)
    inner = _PARENTHESIZED.match(decomposed)
    if inner:
        decomposed = inner.group(1)
    return "".join(_fold_word(part, _LIGHT_TABLE) if not part.isascii() else part.lower() for part in decomposed)


def has_tags(text: str) -> bool:
    return _TAGS.search(text) is not None


def tags_in_place(text: str) -> str:
    """The text with each tag character replaced by the ASCII character it encodes (same length)."""
    return text.translate(_TAG_DECODE)


_TAG_DECODE = {code: chr(code - 0xE0000) for code in range(0xE0020, 0xE007F)}


def tag_text(text: str) -> tuple[str, list[int]]:
    """The text hidden in Unicode tag characters, decoded, with each character's original index."""
    out: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        code = ord(char)
        if _TAG_FIRST <= code <= _TAG_LAST:
            out.append(chr(code - 0xE0000))
            origin.append(index)
    return "".join(out), origin


# ----- sentence breaks -----

_RUN = regex.compile(r"[^\p{L}\p{N}]+")
_BREAK_PUNCTUATION = frozenset(".,;:?!…。，；：！？")
_BULLETS = frozenset("-*•·◦▪–—")


def _is_break(run: str) -> bool:
    """Whether a run of non-word characters between two words ends a sentence or a list item."""
    if not any(char.isspace() for char in run):
        return False  # `nerve.agent`, `s.a.r.i.n`: no sentence ends without a space
    last_space = max(index for index, char in enumerate(run) if char.isspace())
    if any(char in _BREAK_PUNCTUATION for char in run[:last_space]):
        return True  # punctuation that ends a word and is followed by a space (`build. A`), not `!n$+ruc+!on$`
    lines = run.split("\n")
    return len(lines) > 2 or (len(lines) == 2 and lines[1].strip()[:1] in _BULLETS and lines[1].strip() != "")


def _word_length(text: str, index: int, step: int) -> int:
    """Letters and digits of the word next to a run (invisible characters skipped), counted up to 2."""
    count = 0
    while 0 <= index < len(text) and count < 2:
        char = text[index]
        if char.isalnum():
            count += 1
        elif not _INVISIBLE.match(char):
            break
        index += step
    return count


def breaks(text: str, start: int, end: int) -> list[int]:
    """Original indexes in (start, end) where a word begins after a sentence or list break: a run of
    punctuation with a space between two words (`photosynthesize. Nerve`, `build. A pipe`), not between
    two single letters of text spaced out letter by letter (`n. e. r. v. e`)."""
    found: list[int] = []
    segment = text[start:end]
    if not any(char in _BREAK_PUNCTUATION or char == "\n" for char in segment):
        return found
    for run in _RUN.finditer(text, start, end):
        first, last = run.span()
        if first == start or last >= end or not _is_break(run.group()):
            continue
        if _word_length(text, first - 1, -1) >= 2 or _word_length(text, last, 1) >= 2:
            found.append(last)  # not both single letters: not text spaced out letter by letter
    return found


def pattern_gaps(pattern: str) -> frozenset[int]:
    """Compact offsets in a literal pattern where the pattern itself has punctuation between words
    (`semtex + detonator`): there a sentence break in the text does not stop the match."""
    view, origin, _, _, _ = compact_maps(pattern)
    gaps: set[int] = set()
    for run in _RUN.finditer(pattern):
        if any(not (char.isspace() or char in "-_'’") for char in run.group()):
            index = bisect.bisect_left(origin, run.end())
            if 0 < index < len(view):
                gaps.add(index)
    return frozenset(gaps)


# ----- details: a view with its maps -----


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
    original: str = ""  # the text the origins index (for case and letter/digit shifts)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Map a half-open view span to the original text."""
        if start >= len(self.origin):
            return self.original_length, self.original_length
        first = self.origin[start]
        last = self.origin[end - 1] + 1 if end > start else first
        return first, last

    def index_of(self, original: int) -> int:
        """The first view index whose character comes from `original` or later."""
        return bisect.bisect_left(self.origin, original)

    def begins(self, start: int) -> bool:
        """Whether a word begins at view character `start` in the original."""
        return (
            start == 0
            or self.boundary_before[start]
            or self.soft[start - 1]
            or shift(self.original, self.origin[start - 1], self.origin[start])
        )

    def ends(self, end: int) -> bool:
        """Whether a word ends just before view character `end` in the original."""
        return (
            end >= len(self.text)
            or self.boundary_before[end]
            or self.soft[end]
            or shift(self.original, self.origin[end - 1], self.origin[end])
        )

    def is_word(self, start: int, end: int) -> bool:
        """Whether the view span [start, end) stands as a whole word in the original."""
        return self.begins(start) and self.ends(end)

    def ends_with_separator(self) -> bool:
        """Whether a separator follows the last view character (so a word there has ended)."""
        return self.trailing_boundary and bool(self.text)


def shift(original: str, before: int, at: int) -> bool:
    """A word boundary inside a token that the text shows by case or kind between two adjacent
    characters: `makeSarin`, `sarinGas`, `sarin2` (a whole-word rule still sees `sarin` there)."""
    if not original or at != before + 1 or at >= len(original):
        return False
    left, right = original[before], original[at]
    if left.islower() and right.isupper():
        return True
    return (left.isalpha() and right.isdigit()) or (left.isdigit() and right.isalpha())


def compact_detail(text: str, *, offset: int = 0, boundary_at_start: bool = True, symbols: bool = True) -> Detail:
    out, origin, boundary, soft, trailing = compact_maps(text, offset, boundary_at_start, symbols)
    original = text if offset == 0 else ""
    return Detail(out, tuple(origin), tuple(boundary), tuple(soft), len(text) + offset, trailing, original)


def tags_detail(text: str) -> Detail:
    hidden, hidden_origin = tag_text(text)
    out, origin, boundary, soft, trailing = compact_maps(hidden)
    mapped = tuple(hidden_origin[index] for index in origin)
    return Detail(out, mapped, tuple(boundary), tuple(soft), len(text), trailing)


def light_detail(text: str, spaced: bool = False) -> Detail:
    out: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = " " if spaced and char in _BLANKS else light(char)
        out.append(folded)
        origin.extend([index] * len(folded))
    view = "".join(out)
    flags = tuple(False for _ in view)
    return Detail(view, tuple(origin), flags, flags, len(text))


class AsciiDetail:
    """The compact view's maps for ASCII text whose tokens all fold, answered on demand from a mask of
    kept characters (a C-speed translate, then counting), instead of building `compact_detail`'s
    per-character maps; same answers."""

    __slots__ = ("text", "_original", "_mask", "_blocks", "_symbols", "_positions")
    BLOCK = 256
    SHORT = 512  # texts up to this long (a stream's window) list their kept positions once instead

    def __init__(self, original: str, symbols: bool = True) -> None:
        self._original = original
        self._symbols = symbols
        table = _ASCII_TABLES[symbols]
        spans = _ascii_unfolded(original, symbols)
        if spans:
            self.text = _piecewise(original, spans, table, _ASCII_DIGITS)
            self._mask = _piecewise(original, spans, _ASCII_MASKS[symbols], _ASCII_DIGIT_MASK)
        else:
            self.text = original.translate(table)
            self._mask = original.translate(_ASCII_MASKS[symbols])  # "k" kept, "s" separator
        self._blocks: list[int] | None = None  # kept characters before each BLOCK-sized block
        self._positions: list[int] | None = None  # short texts: the original index of each view character

    def _short(self) -> list[int] | None:
        if self._positions is None and len(self._mask) <= self.SHORT:
            mask = self._mask
            self._positions = [index for index in range(len(mask)) if mask[index] == "k"]
        return self._positions

    def _block_counts(self) -> list[int]:
        if self._blocks is None:
            blocks, total = [], 0
            for begin in range(0, len(self._mask), self.BLOCK):
                blocks.append(total)
                total += self._mask.count("k", begin, begin + self.BLOCK)
            self._blocks = blocks
        return self._blocks

    def _origin(self, index: int) -> int:
        """Original index of view character `index`: the (index+1)-th kept character."""
        positions = self._short()
        if positions is not None:
            return positions[index]
        blocks = self._block_counts()
        block = bisect.bisect_right(blocks, index) - 1
        before = blocks[block]
        low = block * self.BLOCK
        high = min(low + self.BLOCK, len(self._mask)) - 1
        while low < high:
            middle = (low + high) // 2
            if before + self._mask.count("k", block * self.BLOCK, middle + 1) > index:
                high = middle
            else:
                low = middle + 1
        return low

    def index_of(self, original: int) -> int:
        positions = self._short()
        if positions is not None:
            return bisect.bisect_left(positions, original)
        blocks = self._block_counts()
        block = min(original // self.BLOCK, len(blocks) - 1) if blocks else 0
        if not blocks:
            return 0
        return blocks[block] + self._mask.count("k", block * self.BLOCK, original)

    def _begins_run(self, index: int) -> bool:
        origin = self._origin(index)
        return origin == 0 or self._mask[origin - 1] == "s" or shift(self._original, origin - 1, origin)

    def _soft(self, index: int) -> bool:
        return self._symbols and self._original[self._origin(index)] in LEET_SYMBOLS

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        if start >= len(self.text):
            return len(self._original), len(self._original)
        first = self._origin(start)
        return first, (self._origin(end - 1) + 1 if end > start else first)

    def begins(self, start: int) -> bool:
        return start == 0 or self._begins_run(start) or self._soft(start - 1)

    def ends(self, end: int) -> bool:
        return end >= len(self.text) or self._begins_run(end) or self._soft(end)

    def is_word(self, start: int, end: int) -> bool:
        return self.begins(start) and self.ends(end)

    def ends_with_separator(self) -> bool:
        return self._mask.endswith("s") and bool(self.text)


def _ascii_mask(symbols_are_letters: bool) -> dict[int, str | None]:
    mask: dict[int, str | None] = {}
    for code in range(128):
        kind, _ = classify(chr(code))
        kept = kind in (LETTER, DIGIT) or (kind == SYMBOL and symbols_are_letters)
        mask[code] = "k" if kept else "s"
    return mask


_ASCII_MASKS = {True: _ascii_mask(True), False: _ascii_mask(False)}
_ASCII_DIGIT_MASK = _ascii_mask(False)  # inside an unfolded token: digits kept, symbols separate
_ALL_SYMBOLS = "".join(LEET_SYMBOLS)

CompactDetail = Detail | AsciiDetail


class TextView:
    """One text and its views, each computed once, on demand."""

    __slots__ = ("text", "_compact", "_compact_detail", "_extra", "_extra_details", "_light", "_light_detail")

    def __init__(self, text: str) -> None:
        self.text = text
        self._compact: str | None = None
        self._compact_detail: CompactDetail | None = None
        self._extra: list[tuple[ViewKind, str]] | None = None
        self._extra_details: dict[str, CompactDetail] = {}
        self._light: str | None = None
        self._light_detail: Detail | None = None

    @property
    def compact(self) -> str:
        if self._compact is None:
            self._compact = compact(self.text)
        return self._compact

    @property
    def compact_detail(self) -> CompactDetail:
        if self._compact_detail is None:
            if self.text.isascii():
                self._compact_detail = AsciiDetail(self.text)
            else:
                self._compact_detail = compact_detail(self.text)
        return self._compact_detail

    def extra_views(self) -> list[tuple[ViewKind, str]]:
        """The other compact views worth matching: `symbols` when the text has leet symbols (and the
        view differs), `tags` when it hides text in tag characters."""
        if self._extra is None:
            extra: list[tuple[ViewKind, str]] = []
            if _has_any(self.text, _ALL_SYMBOLS):
                view = compact(self.text, symbols_are_letters=False)
                if view != self.compact:
                    extra.append(("symbols", view))
            if not self.text.isascii() and _TAGS.search(self.text):
                extra.append(("tags", compact(tag_text(self.text)[0])))  # the hidden text alone
                extra.append(("tags_inline", compact(tags_in_place(self.text))))  # `sa` + tags(`rin`)
            self._extra = extra
        return self._extra

    def detail(self, kind: ViewKind) -> CompactDetail:
        if kind == "compact":
            return self.compact_detail
        if kind == "light":
            return self.light_detail
        found = self._extra_details.get(kind)
        if found is None:
            if kind == "symbols":
                if self.text.isascii():
                    found = AsciiDetail(self.text, symbols=False)
                else:
                    found = compact_detail(self.text, symbols=False)
            elif kind == "tags":
                found = tags_detail(self.text)
            elif kind == "tags_inline":
                found = compact_detail(tags_in_place(self.text))
            elif kind == "light_spaced":
                found = light_detail(self.text, spaced=True)
            else:  # light_tags: the hidden text's light view, mapped back to the tag characters
                hidden, positions = tag_text(self.text)
                inner = light_detail(hidden)
                found = Detail(
                    inner.text,
                    tuple(positions[index] for index in inner.origin),
                    inner.boundary_before,
                    inner.soft,
                    len(self.text),
                )
            self._extra_details[kind] = found
        return found

    def light_views(self) -> list[tuple[ViewKind, str]]:
        """The views regexes are matched in: `light`, plus `light_tags` (the text hidden in tag
        characters) and `light_spaced` (blank invisibles read as spaces) when the text has any."""
        views: list[tuple[ViewKind, str]] = [("light", self.light)]
        if not self.text.isascii():
            if has_tags(self.text):
                views.append(("light_tags", self.detail("light_tags").text))
            if has_blanks(self.text):
                views.append(("light_spaced", self.detail("light_spaced").text))
        return views

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
