"""Scanning text that arrives in pieces (a streamed model answer) before any piece is passed on.

The scanner keeps just enough already-sent context (the longest literal's compact length, and a
window of original text for regexes) to catch a match that spans pieces. `feed` answers what may be
sent now: nothing once a `block` rule has matched; otherwise the received text, minus a held-back
tail when `redact` rules need to see more before a span can be replaced, and minus everything while a
word-boundary (or regex) match at the very end cannot yet be decided.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from rules.match import Hit, Matcher
from rules.model import Rule
from rules.normalize import Detail, compact_maps, light, light_detail
from rules.redact import merge

REDACTION = "[REDACTED]"
REGEX_WINDOW = 256  # original characters of sent text kept for regexes that span pieces
REGEX_REDACT_HOLD = 128  # original characters held back while regex redact rules are in force


@dataclass(slots=True)
class Emission:
    text: str = ""
    blocked: Rule | None = None
    hits: list[Hit] = field(default_factory=list)


class StreamScanner:
    def __init__(
        self, matcher: Matcher, accept: Callable[[Rule], bool] | None = None, redaction: str = REDACTION
    ) -> None:
        self._matcher = matcher
        self._accept = accept
        self._redaction = redaction
        self._keep = max(matcher.longest_literal, 1)
        self._literal_hold = max(matcher.longest_literal - 1, 0) if matcher.has_redact else 0
        self._regex_hold = REGEX_REDACT_HOLD if matcher.has_regex_redact else 0
        # compact view of (kept context + pending), with absolute original offsets
        self._norm = ""
        self._origin: list[int] = []
        self._boundary: list[bool] = []
        self._soft: list[bool] = []
        self._trimmed = False
        self._trailing_boundary = True
        self._sent_tail = ""  # the last REGEX_WINDOW original characters already sent
        self._pending = ""  # received, not yet sent
        self._sent = 0  # absolute original index up to which text has been sent
        self._received = 0
        self._redactions: list[tuple[int, int]] = []
        self._seen: set[tuple[str, int, int]] = set()
        # Regexes whose required factor was seen, with the input position it was seen by: only they (and
        # factor-less regexes) can match in the window, so a piece without factors costs no regex search.
        self._armed: dict[int, int] = {}
        self._overlap = max(matcher.longest_factor - 1, 0)
        self._factor_context = ""  # the last `_overlap` characters fed: a factor may span two pieces
        self._always = frozenset(matcher.always)
        self.blocked: Rule | None = None

    @property
    def holding(self) -> bool:
        """Whether received text is waiting to be decided or released."""
        return bool(self._pending)

    def feed(self, text: str) -> Emission:
        if self.blocked is not None:
            return Emission(blocked=self.blocked)
        view, origin, boundary, soft, self._trailing_boundary = compact_maps(
            text, self._received, self._trailing_boundary
        )
        self._norm += view
        self._origin += origin
        self._boundary += boundary
        self._soft += soft
        self._pending += text
        self._received += len(text)
        if self._matcher.has_regex:
            self._arm(text)
        return self._step(finished=False)

    def _arm(self, text: str) -> None:
        piece = self._factor_context + text
        for index in self._matcher.factor_hits(light(piece)):
            self._armed[index] = self._received
        if self._overlap:
            self._factor_context = piece[-self._overlap :]

    def finish(self) -> Emission:
        """The stream ended: decide what was held and send the rest."""
        if self.blocked is not None:
            return Emission(blocked=self.blocked)
        return self._step(finished=True)

    def _step(self, *, finished: bool) -> Emission:
        emission = Emission()
        undecided = self._scan_literals(emission, finished)
        if self._matcher.has_regex and emission.blocked is None:
            undecided |= self._scan_regexes(emission, finished)
        if emission.blocked is not None:
            self.blocked = emission.blocked
            self._pending = ""
            return emission
        if undecided:
            return emission
        emission.text = self._release(self._safe_end(finished))
        self._trim()
        return emission

    def _consider(self, hit: Hit, start: int, end: int, emission: Emission) -> None:
        key = (hit.rule.id, start, end)
        if key in self._seen:
            return
        self._seen.add(key)
        emission.hits.append(hit)
        if hit.rule.action == "block" and emission.blocked is None:
            emission.blocked = hit.rule
        elif hit.rule.action == "redact":
            self._redactions.append((max(start, self._sent), end))

    def _scan_literals(self, emission: Emission, finished: bool) -> bool:
        undecided = False
        n = len(self._norm)
        for hit in self._matcher.scan_literals(self._norm, None, self._accept):
            last = self._origin[hit.end - 1]
            if last < self._sent:
                continue  # decided when it was sent
            if hit.rule.word_boundary:
                begins = (
                    self._boundary[hit.start]
                    or (hit.start > 0 and self._soft[hit.start - 1])
                    or (hit.start == 0 and not self._trimmed)
                )
                if hit.end < n:
                    ends = self._boundary[hit.end] or self._soft[hit.end]
                elif finished or self._trailing_boundary:
                    ends = True
                else:
                    undecided |= begins  # the next piece decides
                    continue
                if not (begins and ends):
                    continue
            self._consider(hit, self._origin[hit.start], last + 1, emission)
        return undecided

    def _scan_regexes(self, emission: Emission, finished: bool) -> bool:
        base = self._sent - len(self._sent_tail)
        armed = self._armed
        for index in [index for index, seen in armed.items() if seen <= base]:
            del armed[index]  # its factor has left the window
        if not armed and not self._always:
            return False
        candidates = sorted(self._always.union(armed))
        window = self._sent_tail + self._pending
        view = light(window)  # one C-level pass; the per-character map only when a regex matches
        detail: Detail | None = None
        undecided = False
        for hit in self._matcher.scan_regexes(view, self._accept, candidates):
            detail = detail or light_detail(window)
            start, end = detail.original_span(hit.start, hit.end)
            if base + end <= self._sent:
                continue
            if hit.end == len(view) and not finished:
                undecided = True  # a longer match, or none, may follow
                continue
            self._consider(hit, base + start, base + end, emission)
        return undecided

    def _safe_end(self, finished: bool) -> int:
        if finished:
            return self._received
        end = self._received
        if self._literal_hold:
            index = len(self._norm) - self._literal_hold
            end = min(end, self._origin[index]) if 0 <= index < len(self._origin) else self._sent
        if self._regex_hold:
            end = min(end, self._received - self._regex_hold)
        end = max(end, self._sent)
        for start, stop in merge(self._redactions) if self._redactions else ():
            if start < end < stop:
                end = stop  # a complete span: send it, replaced, in one go
        return end

    def _release(self, end: int) -> str:
        if end <= self._sent:
            return ""
        chunk = self._pending[: end - self._sent]
        if not self._redactions:
            self._pending = self._pending[end - self._sent :]
            self._sent_tail = (self._sent_tail + chunk)[-REGEX_WINDOW:]
            self._sent = end
            return chunk
        out: list[str] = []
        cursor = self._sent
        for start, stop in merge(self._redactions):
            if stop <= cursor or start >= end:
                continue
            out.append(chunk[cursor - self._sent : max(start, cursor) - self._sent])
            out.append(self._redaction)
            cursor = min(stop, end)
        out.append(chunk[cursor - self._sent :])
        self._redactions = [(s, e) for s, e in self._redactions if e > end]
        self._pending = self._pending[end - self._sent :]
        self._sent_tail = (self._sent_tail + chunk)[-REGEX_WINDOW:]
        self._sent = end
        return "".join(out)

    def _trim(self) -> None:
        first_unsent = bisect.bisect_left(self._origin, self._sent)
        cut = max(0, first_unsent - self._keep)
        if cut:
            self._norm = self._norm[cut:]
            del self._origin[:cut], self._boundary[:cut], self._soft[:cut]
            self._trimmed = True
        if self._seen:
            self._seen = {key for key in self._seen if key[2] > self._sent}
