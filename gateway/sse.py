"""An incremental server-sent-events parser (and a newline-delimited JSON one).

Bytes go in as they arrive; complete events come out. Framing happens on bytes (line terminators are
ASCII, so they never split a multi-byte UTF-8 character), and an event's fields are decoded only once
the event is complete, so a character split across network chunks is never mangled. Each event keeps
its raw bytes so that an event the gateway does not change is forwarded byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_EVENT_BYTES = 4 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
# A blank line: two line terminators (CRLF, LF or CR) in a row, in every combination (the upstream
# chooses; a missed combination would merge two events into one, hiding the second from its scanner).
_BOUNDARY = re.compile(rb"\r\n\r\n|\r\n\n|\r\n\r|\n\r\n|\n\n|\n\r|\r\r\n|\r\r")
_LINE = re.compile(r"\r\n|\n|\r")


class SSEError(Exception):
    """The upstream sent something that cannot be an event stream (for example an endless event)."""


@dataclass(frozen=True, slots=True)
class Event:
    raw: bytes  # including its terminating blank line
    event: str  # the `event:` field, "" when absent
    data: str  # the `data:` lines joined with "\n"

    @property
    def is_done(self) -> bool:
        return self.data.strip() == "[DONE]"


def parse_event(raw: bytes) -> Event:
    name = ""
    data: list[str] = []
    for line in _LINE.split(raw.decode("utf-8", "replace")):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    return Event(raw, name, "\n".join(data))


class _Framer:
    """What both parsers share: the bytes held until their event is complete, the limit on them, and
    the BOM that may stand before the first event."""

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._max = max_event_bytes
        self._started = False

    def _take(self, chunk: bytes) -> bytes | None:
        """The held bytes followed by `chunk`; None while what came so far may still be a BOM."""
        if not self._started:  # a BOM before the first event is not part of it (the spec strips it)
            head = self._buffer + chunk
            if len(head) < 3 and _BOM.startswith(head):
                self._buffer = head
                return None
            self._started = True
            self._buffer = b""
            chunk = head[3:] if head.startswith(_BOM) else head
        return self._buffer + chunk if self._buffer else chunk

    def _hold(self, rest: bytes, unit: str) -> None:
        """Keep `rest` (an unfinished event, named `unit` in the error) for the next chunk."""
        self._buffer = rest
        if len(rest) > self._max:
            raise SSEError(f"{unit} exceeded {self._max} bytes")

    def _rest(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest


class SSEParser(_Framer):
    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._take(chunk)
        if buffer is None:
            return []
        if b"\r" in buffer:
            return self._feed_any(buffer)
        # No CR anywhere (the common case): events end at a blank line, "\n\n", and a plain split finds them.
        parts = buffer.split(b"\n\n")
        self._hold(parts.pop(), "an event")
        events: list[Event] = []
        for part in parts:
            if part.startswith(b"data: ") and b"\n" not in part:  # one single-line data field
                events.append(Event(part + b"\n\n", "", part[6:].decode("utf-8", "replace")))
            else:
                events.append(parse_event(part + b"\n\n"))
        return events

    def _feed_any(self, buffer: bytes) -> list[Event]:
        events: list[Event] = []
        start = 0
        while True:
            found = _BOUNDARY.search(buffer, start)
            if found is None or (found.end() == len(buffer) and buffer.endswith(b"\r")):
                break  # none yet, or a CR that a LF in the next chunk may join: decided then
            events.append(parse_event(buffer[start : found.end()]))
            start = found.end()
        self._hold(buffer[start:], "an event")
        return events

    def close(self) -> Event | None:
        """The stream ended: whatever is left is a final, unterminated event (or nothing)."""
        rest = self._rest()
        return parse_event(rest) if rest.strip() else None


class NDJSONParser(_Framer):
    """Newline-delimited JSON (Ollama's streams): each complete line is one event, its `data` the line."""

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._take(chunk)
        if buffer is None:
            return []
        lines = buffer.split(b"\n")
        self._hold(lines.pop(), "a line")
        return [_line(line + b"\n") for line in lines]

    def close(self) -> Event | None:
        rest = self._rest()
        return _line(rest) if rest.strip() else None


def _line(raw: bytes) -> Event:
    return Event(raw, "", raw.decode("utf-8", "replace").strip())
