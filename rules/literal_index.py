"""Literal index backends: every key of a snapshot's literal rules, found in one pass over a text.

`AhoCorasickIndex` (pyahocorasick) is the portable default. `HyperscanIndex` (Intel Hyperscan, the
`hyperscan` package: x86-64 wheels, `pip install 'containment-gateway[hyperscan]'`) scans large rule
sets many times faster and is chosen automatically when it can be imported (`matcher_backend: auto`).
Both report exactly the same hits — every (end index, value) of every key occurrence — which one shared
test suite checks; normalization stays ours (keys and texts are compact views).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, Protocol

import ahocorasick


class LiteralIndex(Protocol):
    name: str

    def find(self, view: str) -> list[tuple[int, Any]]:
        """(index of the last character, value) for every occurrence of every key in `view`."""

    def is_prefix(self, view: str) -> bool:
        """Whether `view` is the beginning of some key (or a whole key): what a stream must hold back."""


class AhoCorasickIndex:
    name = "ahocorasick"

    def __init__(self, keys: Sequence[str], values: Sequence[Any]) -> None:
        automaton = ahocorasick.Automaton()
        for key, value in zip(keys, values, strict=True):
            automaton.add_word(key, value)
        automaton.make_automaton()
        self._automaton = automaton

    def find(self, view: str) -> list[tuple[int, Any]]:
        return list(self._automaton.iter(view))

    def is_prefix(self, view: str) -> bool:
        return bool(self._automaton.match(view))


class HyperscanIndex:
    """Keys are matched as UTF-8 bytes (a valid UTF-8 key only ever matches at character boundaries);
    byte offsets are mapped back to character offsets for non-ASCII texts."""

    name = "hyperscan"

    def __init__(self, keys: Sequence[str], values: Sequence[Any]) -> None:
        import hyperscan

        self._values = list(values)
        self._sorted = sorted(keys)  # prefix look-ups (bisect) for what a stream holds back
        self._database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        encoded = [key.encode() for key in keys]
        self._database.compile(
            expressions=encoded, ids=list(range(len(encoded))), elements=len(encoded), flags=0, literal=True
        )
        self._scratch = hyperscan.Scratch(self._database)

    def find(self, view: str) -> list[tuple[int, Any]]:
        data = view.encode()
        found: list[tuple[int, int]] = []

        def on_match(key: int, start: int, end: int, flags: int, context: object) -> None:
            found.append((end, key))

        self._database.scan(data, match_event_handler=on_match, scratch=self._scratch)
        if not found:
            return []
        if len(data) == len(view):  # ASCII: byte offsets are character offsets
            hits = [(end - 1, self._values[key]) for end, key in found]
        else:
            char_end = _char_ends(data)
            hits = [(char_end[end] - 1, self._values[key]) for end, key in found]
        hits.sort(key=lambda hit: hit[0])
        return hits

    def is_prefix(self, view: str) -> bool:
        index = bisect.bisect_left(self._sorted, view)
        return index < len(self._sorted) and self._sorted[index].startswith(view)


def _char_ends(data: bytes) -> list[int]:
    """For each byte offset, the number of characters that end at or before it."""
    ends = [0] * (len(data) + 1)
    count = 0
    for offset, byte in enumerate(data):
        if byte & 0xC0 != 0x80:  # the first byte of a character
            count += 1
        ends[offset + 1] = count
    return ends


def hyperscan_available() -> bool:
    try:
        import hyperscan  # noqa: F401
    except ImportError:
        return False
    return True


def build_index(keys: Sequence[str], values: Sequence[Any], backend: str = "auto") -> LiteralIndex:
    if backend == "hyperscan" or (backend == "auto" and hyperscan_available()):
        return HyperscanIndex(keys, values)
    return AhoCorasickIndex(keys, values)
