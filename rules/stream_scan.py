"""Scanning text that arrives in pieces (a streamed model answer) before any piece is passed on.

The scanner keeps a window of original text: the already-sent context a match could still span (the
longest literal's length *in folded characters*, in every compact view, and 256 folded characters for
regexes), then what was received but not sent. Each piece is matched over the whole window, with the
same views and checks as a whole text, so any chunking gives the whole text's verdict.

`feed` answers what may be sent now: nothing once a `block` rule has matched; otherwise the received
text minus what is held back:
- the text from the first position where the folded text could still be the beginning of a literal
  rule (so a stream cut by a block rule delivers none of the blocked phrase);
- a whole-word (or regex) match that ends at the very end of what arrived, which the next piece decides;
- the start of a block regex's partial match at the end (the `regex` module's `partial=True`), begun in
  the last REGEX_PARTIAL folded characters, while there are at most PARTIAL_LIMIT block regexes;
- a trailing token of digits or symbols, whose folding depends on what follows (`5` + `arin`);
- 128 characters more while regex redact rules are in force.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rules.match import Hit, Matcher
from rules.model import Rule
from rules.normalize import LEET_SYMBOLS, CompactDetail, TextView, ViewKind
from rules.redact import merge

REDACTION = "[REDACTED]"
REGEX_WINDOW = 256  # folded characters of sent text kept for regexes that span pieces
REGEX_REDACT_HOLD = 128  # original characters held back while regex redact rules are in force
REGEX_PARTIAL = 96  # folded characters back from the end where a held partial regex match may start
_TOKEN_SEARCH = 64  # original characters a trim point may move back to start at a token
# Bounds in original characters, so that no stream can make every piece cost more and more (each piece
# is matched over the whole window): sent context kept however few folded characters it holds (text
# padded with invisible characters), and text held back however long it stays undecided.
MAX_CONTEXT = 2048
MAX_HOLD = 4096


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
        self._literals = matcher.longest_literal > 0
        self._regex_hold = REGEX_REDACT_HOLD if matcher.has_regex_redact else 0
        self._window = ""  # original text from absolute index `_base`: sent context, then pending
        self._base = 0
        self._literal_start = 0  # absolute: where the (shorter) window literals are matched in starts
        self._sent = 0  # absolute index up to which text has been sent
        self._received = 0
        self._redactions: list[tuple[int, int]] = []
        self._seen: set[tuple[str, int, int]] = set()
        self._resume: dict[str, int] = {}  # per view: where the search for a held-back prefix resumes
        self.blocked: Rule | None = None

    def rebind(self, matcher: Matcher) -> None:
        """Scan the rest of the text with `matcher` (a newer policy's rules), keeping the context this
        scanner holds: the sent text a match may still span, and the text not yet decided."""
        self._matcher = matcher
        self._keep = max(matcher.longest_literal, 1)
        self._literals = matcher.longest_literal > 0
        self._regex_hold = REGEX_REDACT_HOLD if matcher.has_regex_redact else 0
        self._literal_start = self._base  # all the context kept: the new literals may be longer
        self._resume = {}

    @property
    def holding(self) -> bool:
        """Whether received text is waiting to be decided or released."""
        return self._received > self._sent

    def feed(self, text: str) -> Emission:
        if self.blocked is not None:
            return Emission(blocked=self.blocked)
        self._window += text
        self._received += len(text)
        return self._step(finished=False)

    def finish(self) -> Emission:
        """The stream ended: decide what was held and send the rest."""
        if self.blocked is not None:
            return Emission(blocked=self.blocked)
        return self._step(finished=True)

    def _step(self, *, finished: bool) -> Emission:
        emission = Emission()
        hold = self._received
        literal_view: TextView | None = None
        if self._literals:
            # Literals need only the last `_keep` folded characters of what was sent: a shorter window
            # than the regexes' (see _trim).
            offset = self._literal_start - self._base
            literal_view = TextView(self._window[offset:] if offset else self._window)
            hold = min(hold, self._scan_literals(literal_view, emission, finished))
        if self._matcher.has_regex and emission.blocked is None:
            hold = min(hold, self._scan_regexes(TextView(self._window), emission, finished))
        if emission.blocked is not None:
            self.blocked = emission.blocked
            self._window = ""
            return emission
        if not finished:
            hold = min(hold, self._trailing_token())
            if self._regex_hold:
                hold = min(hold, self._received - self._regex_hold)
            # A phrase padded with thousands of invisible characters is not held for ever (docs/matching.md).
            hold = max(hold, self._received - MAX_HOLD)
        emission.text = self._release(self._safe_end(max(hold, self._sent)))
        self._trim(literal_view)
        return emission

    def _consider(self, hit: Hit, start: int, end: int, emission: Emission) -> None:
        if end <= self._sent:
            return  # decided when it was sent
        key = (hit.rule.id, start, end)
        if key in self._seen:
            return
        self._seen.add(key)
        emission.hits.append(hit)
        if hit.rule.action == "block" and emission.blocked is None:
            emission.blocked = hit.rule
        elif hit.rule.action == "redact":
            self._redactions.append((max(start, self._sent), end))

    def _scan_literals(self, view: TextView, emission: Emission, finished: bool) -> int:
        """Judge the literal hits of every compact view of the literal window; the absolute index from
        which to hold."""
        hold = self._received
        origin = self._literal_start
        settled = self._stable_point() - origin
        views: list[tuple[ViewKind, str]] = [("compact", view.compact), *view.extra_views()]
        for kind, text in views:
            undecided: list[int] | None = None if finished else []
            detail: CompactDetail | None = None
            for hit in self._matcher.scan_literals(view, kind, text, self._accept, undecided):
                detail = detail or view.detail(kind)
                start, end = detail.original_span(hit.start, hit.end)
                self._consider(hit, origin + start, origin + end, emission)
                if emission.blocked is not None:
                    return hold
            if finished or not text:
                continue
            detail = detail or view.detail(kind)
            for start in undecided or ():
                hold = min(hold, origin + detail.original_span(start, start + 1)[0])
            hold = min(hold, self._prefix(kind, text, detail, settled))
        return hold

    def _prefix(self, kind: str, text: str, detail: CompactDetail, settled_at: int) -> int:
        """Where the longest end of the folded text that could begin a literal starts (absolute), or the
        end of what was received. Searched from where the last search stopped: a start that cannot begin
        a literal in text whose folding is settled (before `settled_at`, relative) cannot once more text
        follows it."""
        n = len(text)
        origin = self._literal_start
        settled = detail.index_of(max(settled_at, 0))
        first = max(n - self._keep + 1, 0, detail.index_of(max(self._resume.get(kind, 0) - origin, 0)))
        resume = -1
        is_prefix = self._matcher.is_prefix
        for start in range(first, n):
            if start < settled and not is_prefix(text[start:settled]):
                continue  # refused on settled text: for good
            if resume < 0:
                resume = start
            if is_prefix(text[start:]):
                self._resume[kind] = origin + detail.original_span(resume, resume + 1)[0]
                return origin + detail.original_span(start, start + 1)[0]
        self._resume[kind] = self._received if resume < 0 else origin + detail.original_span(resume, resume + 1)[0]
        return self._received

    def _stable_point(self) -> int:
        """The start of the last two words (absolute): how earlier text folds cannot change with what
        follows, but a trailing digit, symbol or spaced-out letter may fold differently once the next
        piece joins its token (`+ d` reads `td` until `е` arrives)."""
        window = self._window
        index = len(window)
        for _ in range(2):
            while index > 0 and window[index - 1].isspace():
                index -= 1
            while index > 0 and not window[index - 1].isspace():
                index -= 1
        return self._base + index

    def _scan_regexes(self, view: TextView, emission: Emission, finished: bool) -> int:
        """Judge the regex hits of every light view of the window; the absolute index from which to hold."""
        hold = self._received
        for kind, text in view.light_views():
            hits = self._matcher.scan_regexes(text, self._accept)
            hold = min(hold, self._judge(view, kind, hits, len(text), emission, finished))
            if emission.blocked is not None:
                return hold
        if not finished:
            light = view.light
            for start in self._matcher.partial_starts(light, max(len(light) - REGEX_PARTIAL, 0), self._accept):
                hold = min(hold, self._base + view.light_detail.original_span(start, start + 1)[0])
        return hold

    def _judge(
        self, view: TextView, kind: ViewKind, hits: Iterable[Hit], length: int, emission: Emission, finished: bool
    ) -> int:
        """Consider the hits of one regex view (`length` characters long); a hit that ends where the view
        ends is undecided while the stream goes on: a longer match, or none, may follow. The absolute index
        from which to hold."""
        hold = self._received
        detail: CompactDetail | None = None
        for hit in hits:
            detail = detail or view.detail(kind)
            start, end = detail.original_span(hit.start, hit.end)
            start, end = self._base + start, self._base + end
            if end <= self._sent:
                continue
            if hit.end == length and not finished:
                hold = min(hold, start)
                continue
            self._consider(hit, start, end, emission)
            if emission.blocked is not None:
                break
        return hold

    def _trailing_token(self) -> int:
        """The start of a trailing run of digits and symbols with no letter before it in its token: whether
        it reads as letters depends on what follows (`5` then `arin`)."""
        window = self._window
        index = len(window)
        floor = max(index - self._keep, 0)  # a literal can only use the run's last `_keep` characters
        while index > floor and (window[index - 1].isdigit() or window[index - 1] in LEET_SYMBOLS):
            index -= 1
        if index == len(window) or (index > 0 and window[index - 1].isalpha()):
            return self._received
        return self._base + index

    def _safe_end(self, end: int) -> int:
        for start, stop in merge(self._redactions) if self._redactions else ():
            if start < end < stop:
                end = stop  # a complete span: send it, replaced, in one go
        return end

    def _release(self, end: int) -> str:
        if end <= self._sent:
            return ""
        chunk = self._window[self._sent - self._base : end - self._base]
        if not self._redactions:
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
        self._sent = end
        return "".join(out)

    def _trim(self, literal_view: TextView | None) -> None:
        """Drop sent text no later match can need: the literal window keeps `_keep` folded characters of
        it in every compact view, the whole window REGEX_WINDOW folded characters in the light view; each
        starts at a token's start."""
        window = self._window
        if literal_view is not None:
            sent = self._sent - self._literal_start
            if sent > self._keep:
                cut = sent
                kinds: list[ViewKind] = ["compact", *(kind for kind, _ in literal_view.extra_views())]
                for kind in kinds:
                    detail = literal_view.detail(kind)
                    index = detail.index_of(sent) - self._keep
                    cut = min(cut, detail.original_span(index, index + 1)[0] if index > 0 else 0)
                self._literal_start = self._token_start(self._literal_start + cut)
        cut = self._literal_start if self._literals else self._sent
        if self._matcher.has_regex:
            sent = self._sent - self._base
            if window.isascii():  # the light view is the text, lower-cased
                regex_cut = max(sent - REGEX_WINDOW, 0)
            else:
                light = TextView(window).light_detail
                index = light.index_of(sent) - REGEX_WINDOW
                regex_cut = light.original_span(index, index + 1)[0] if index > 0 else 0
            cut = min(cut, self._token_start(self._base + regex_cut))
        cut = max(cut, self._sent - MAX_CONTEXT)
        self._literal_start = max(self._literal_start, cut)
        if cut - self._base > 0:
            self._window = window[cut - self._base :]
            self._base = cut
        if self._seen:
            self._seen = {key for key in self._seen if key[2] > self._sent}

    def _token_start(self, position: int) -> int:
        """`position` (absolute) moved back to just after a space, by at most _TOKEN_SEARCH characters."""
        index = position - self._base
        floor = max(index - _TOKEN_SEARCH, 0)
        while index > floor and not self._window[index - 1].isspace():
            index -= 1
        return self._base + index
