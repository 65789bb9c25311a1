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

from collections.abc import Callable
from dataclasses import dataclass, field

from rules.match import Hit, Matcher
from rules.model import Rule
from rules.normalize import LEET_SYMBOLS, CompactDetail, TextView, ViewKind, has_tags, light, tag_text
from rules.redact import merge

REDACTION = "[REDACTED]"
REGEX_WINDOW = 256  # folded characters of sent text kept for regexes that span pieces
REGEX_REDACT_HOLD = 128  # original characters held back while regex redact rules are in force
REGEX_PARTIAL = 96  # folded characters back from the end where a held partial regex match may start
_TOKEN_SEARCH = 64  # original characters a trim point may move back to start at a token


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
        self._sent = 0  # absolute index up to which text has been sent
        self._received = 0
        self._redactions: list[tuple[int, int]] = []
        self._seen: set[tuple[str, int, int]] = set()
        self._resume: dict[str, int] = {}  # per view: where the search for a held-back prefix resumes
        self.blocked: Rule | None = None

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
        view = TextView(self._window)
        hold = self._received
        if self._literals:
            hold = min(hold, self._scan_literals(view, emission, finished))
        if self._matcher.has_regex and emission.blocked is None:
            hold = min(hold, self._scan_regexes(view, emission, finished))
        if emission.blocked is not None:
            self.blocked = emission.blocked
            self._window = ""
            return emission
        if not finished:
            hold = min(hold, self._trailing_token())
            if self._regex_hold:
                hold = min(hold, self._received - self._regex_hold)
        emission.text = self._release(self._safe_end(max(hold, self._sent)))
        self._trim(view)
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
        """Judge the literal hits of every compact view; the absolute index from which to hold."""
        hold = self._received
        views: list[tuple[ViewKind, str]] = [("compact", view.compact), *view.extra_views()]
        for kind, text in views:
            undecided: list[int] | None = None if finished else []
            detail: CompactDetail | None = None
            for hit in self._matcher.scan_literals(view, kind, text, self._accept, undecided):
                detail = detail or view.detail(kind)
                start, end = detail.original_span(hit.start, hit.end)
                self._consider(hit, self._base + start, self._base + end, emission)
                if emission.blocked is not None:
                    return hold
            if finished or not text:
                continue
            detail = detail or view.detail(kind)
            for start in undecided or ():
                hold = min(hold, self._base + detail.original_span(start, start + 1)[0])
            hold = min(hold, self._prefix(kind, text, detail))
        return hold

    def _prefix(self, kind: str, text: str, detail: CompactDetail) -> int:
        """Where the longest end of the folded text that could begin a literal starts (absolute), or the
        end of what was received. Searched from where the last search stopped: a start that cannot begin
        a literal in text whose folding is settled cannot once more text follows it."""
        n = len(text)
        settled = detail.index_of(self._stable_point() - self._base)
        first = max(n - self._keep + 1, 0, detail.index_of(max(self._resume.get(kind, 0) - self._base, 0)))
        resume = -1
        for start in range(first, n):
            if start < settled and not self._matcher.is_prefix(text[start:settled]):
                continue  # refused on settled text: for good
            if resume < 0:
                resume = start
            if self._matcher.is_prefix(text[start:]):
                self._resume[kind] = self._base + detail.original_span(resume, resume + 1)[0]
                return self._base + detail.original_span(start, start + 1)[0]
        self._resume[kind] = self._received if resume < 0 else self._base + detail.original_span(resume, resume + 1)[0]
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
        light = view.light
        candidates = sorted(self._matcher.factor_hits(light).union(self._matcher.always))
        hold = self._received
        for hit in self._matcher.scan_regexes(light, self._accept, candidates):
            start, end = view.light_detail.original_span(hit.start, hit.end)
            if self._base + end <= self._sent:
                continue
            if hit.end == len(light) and not finished:
                hold = min(hold, self._base + start)  # a longer match, or none, may follow
                continue
            self._consider(hit, self._base + start, self._base + end, emission)
            if emission.blocked is not None:
                break
        if emission.blocked is None and not self._window.isascii() and has_tags(self._window):
            hold = min(hold, self._scan_hidden(emission, finished))
        if not finished and emission.blocked is None:
            for start in self._matcher.partial_starts(light, max(len(light) - REGEX_PARTIAL, 0), self._accept):
                hold = min(hold, self._base + view.light_detail.original_span(start, start + 1)[0])
        return hold

    def _scan_hidden(self, emission: Emission, finished: bool) -> int:
        """Regexes over the text hidden in tag characters (decoded tags are ASCII: one light character each)."""
        hidden, origin = tag_text(self._window)
        view = light(hidden)
        hold = self._received
        for hit in self._matcher.scan_regexes(view, self._accept):
            start, end = self._base + origin[hit.start], self._base + origin[hit.end - 1] + 1
            if hit.end == len(view) and not finished:
                hold = min(hold, start)
                continue
            self._consider(hit, start, end, emission)
            if emission.blocked is not None:
                break
        return hold

    def _trailing_token(self) -> int:
        """The start of a trailing run of digits and symbols with no letter before it in its token: whether
        it reads as letters depends on what follows (`5` then `arin`)."""
        index = len(self._window)
        while index > 0 and (self._window[index - 1].isdigit() or self._window[index - 1] in LEET_SYMBOLS):
            index -= 1
        if index == len(self._window) or (index > 0 and self._window[index - 1].isalpha()):
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

    def _trim(self, view: TextView) -> None:
        """Drop sent text no later match can need: keep `_keep` folded characters of it in every compact
        view (and REGEX_WINDOW in the light view), starting at a token's start."""
        sent = self._sent - self._base
        if sent <= self._keep:
            return
        cut = sent
        if self._literals:
            kinds: list[ViewKind] = ["compact", *(kind for kind, _ in view.extra_views())]
            for kind in kinds:
                detail = view.detail(kind)
                index = detail.index_of(sent) - self._keep
                cut = min(cut, detail.original_span(index, index + 1)[0] if index > 0 else 0)
        if self._matcher.has_regex:
            if self._window.isascii():  # the light view is the text, lower-cased
                cut = min(cut, max(sent - REGEX_WINDOW, 0))
            else:
                index = view.light_detail.index_of(sent) - REGEX_WINDOW
                cut = min(cut, view.light_detail.original_span(index, index + 1)[0] if index > 0 else 0)
        floor = max(cut - _TOKEN_SEARCH, 0)
        while cut > floor and not self._window[cut - 1].isspace():
            cut -= 1
        if cut <= 0:
            return
        self._window = self._window[cut:]
        self._base += cut
        if self._seen:
            self._seen = {key for key in self._seen if key[2] > self._sent}
