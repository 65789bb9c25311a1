"""Tool-call arguments: JSON text whose string escapes (`\\u0073`, `\\"`) could hide a phrase from a scan.

`EscapeDecoder` turns JSON text into the same text with its string escapes decoded, fragment by fragment:
an escape cut at the end of a fragment waits for the next one. It is lenient (an escape JSON does not
know is kept as written; a lone surrogate becomes U+FFFD), since its output is only ever scanned.

`ArgumentScanner` scans streamed arguments twice, as the model writes them and decoded, with one stream
scanner each, and releases raw text only once both scans have released it (the decoded text maps back
to the raw characters it came from). A redact rule cannot be applied to escaped JSON safely, so in
arguments a redact hit blocks (fails closed).
"""

from __future__ import annotations

from rules.match import Hit, Matcher
from rules.stream_scan import Emission, StreamScanner

_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX = frozenset("0123456789abcdefABCDEF")


def _hex4(text: str, start: int) -> int:
    """The code unit of the 4 hex digits at `start`, -1 when they are not hex (-2: not all there yet)."""
    digits = text[start : start + 4]
    if len(digits) < 4:
        return -1 if any(c not in _HEX for c in digits) else -2
    if any(c not in _HEX for c in digits):
        return -1
    return int(digits, 16)


class EscapeDecoder:
    def __init__(self) -> None:
        self._tail = ""  # the raw start of an escape cut at the end of the last fragment
        self._offset = 0  # absolute raw offset of `_tail`'s first character

    def feed(self, raw: str, *, final: bool = False) -> tuple[str, list[int]]:
        """The decoded text of what is complete, and per decoded character the absolute raw offset
        just past the characters it came from."""
        base = self._offset
        text = self._tail + raw if self._tail else raw
        if "\\" not in text:
            self._tail = ""
            self._offset = base + len(text)
            return text, list(range(base + 1, base + len(text) + 1))
        out: list[str] = []
        ends: list[int] = []
        i = 0
        n = len(text)
        while i < n:
            char = text[i]
            if char != "\\":
                out.append(char)
                i += 1
                ends.append(base + i)
                continue
            if i + 1 >= n:
                if not final:
                    break
                out.append(char)
                i += 1
                ends.append(base + i)
                continue
            kind = text[i + 1]
            simple = _SIMPLE.get(kind)
            if simple is not None:
                out.append(simple)
                i += 2
                ends.append(base + i)
                continue
            if kind != "u":
                out.append(char)  # not a JSON escape: kept as written
                i += 1
                ends.append(base + i)
                continue
            unit = _hex4(text, i + 2)
            if unit == -2 and not final:
                break
            if unit < 0:
                out.append(char)
                i += 1
                ends.append(base + i)
                continue
            step = 6
            if 0xD800 <= unit < 0xDC00:
                if n < i + 12 and not final and text[i + 6 : i + 8] == "\\u"[: n - i - 6]:
                    break  # the low half may follow
                low = _hex4(text, i + 8) if text[i + 6 : i + 8] == "\\u" else -1
                if 0xDC00 <= low < 0xE000:
                    unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    step = 12
                else:
                    unit = 0xFFFD
            elif 0xDC00 <= unit < 0xE000:
                unit = 0xFFFD
            out.append(chr(unit))
            i += step
            ends.append(base + i)
        self._tail = text[i:]
        self._offset = base + i
        return "".join(out), ends


def decode_escapes(text: str) -> str:
    """`text` with its JSON string escapes decoded (the whole of it at once)."""
    if "\\" not in text:
        return text
    return EscapeDecoder().feed(text, final=True)[0]


class ArgumentScanner:
    """One tool call's streamed arguments, scanned raw and decoded (see the module docstring)."""

    def __init__(self, raw: StreamScanner, decoded: StreamScanner) -> None:
        self._raw = raw
        self._decoded = decoded
        self._decoder = EscapeDecoder()
        self._pending = ""  # raw text received and not yet released
        self._sent = 0  # raw characters released
        self._raw_released = 0  # raw characters the raw scan has released
        self._decoded_released = 0  # raw characters whose decoded form the decoded scan has released
        self._ends: list[int] = []  # per decoded character fed and not yet released: its raw end
        self.blocked = False

    @property
    def holding(self) -> bool:
        return bool(self._pending)

    def rebind(self, matcher: Matcher) -> None:
        """Scan the rest of the arguments with `matcher` (a newer policy's rules), keeping the context."""
        self._raw.rebind(matcher)
        self._decoded.rebind(matcher)

    def feed(self, text: str) -> Emission:
        first = self._raw.feed(text)
        self._pending += text
        decoded, ends = self._decoder.feed(text)
        self._ends += ends
        second = self._decoded.feed(decoded) if decoded else Emission()
        return self._merge(first, second)

    def finish(self) -> Emission:
        decoded, ends = self._decoder.feed("", final=True)
        self._ends += ends
        fed = self._decoded.feed(decoded) if decoded else Emission()
        if fed.blocked is None:
            second = self._decoded.finish()
            second.text = fed.text + second.text
            second.hits = fed.hits + second.hits
        else:
            second = fed
        first = self._raw.finish()
        return self._merge(first, second)

    def _merge(self, first: Emission, second: Emission) -> Emission:
        hits: list[Hit] = list(first.hits)
        seen = {hit.rule.id for hit in hits}
        hits.extend(hit for hit in second.hits if hit.rule.id not in seen)
        blocked = first.blocked or second.blocked
        if blocked is None:
            for hit in hits:
                if hit.rule.action == "redact":
                    blocked = hit.rule  # escaped JSON cannot be redacted safely: fail closed
                    break
        if blocked is not None:
            self.blocked = True
            self._pending = ""
            return Emission(blocked=blocked, hits=hits)
        self._raw_released += len(first.text)
        released = len(second.text)
        if released:
            self._decoded_released = self._ends[released - 1]
            del self._ends[:released]
        end = min(self._raw_released, self._decoded_released)
        if end <= self._sent:
            return Emission(hits=hits)
        out = self._pending[: end - self._sent]
        self._pending = self._pending[end - self._sent :]
        self._sent = end
        return Emission(text=out, hits=hits)
