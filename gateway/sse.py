"""An incremental server-sent-events parser.

Bytes go in as they arrive; complete events come out. Framing happens on bytes (line terminators are
ASCII, so they never split a multi-byte UTF-8 character), and an event's fields are decoded only once
the event is complete, so a character split across network chunks is never mangled. Each event keeps
its raw bytes so that an event the gateway does not change is forwarded byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_EVENT_BYTES = 4 * 1024 * 1024
_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r|\r\n\n|\n\r\n")
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


class SSEParser:
    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        start = 0
        while True:
            found = _BOUNDARY.search(self._buffer, start)
            if found is None:
                break
            events.append(parse_event(self._buffer[start : found.end()]))
            start = found.end()
        self._buffer = self._buffer[start:]
        if len(self._buffer) > self._max:
            raise SSEError(f"an event exceeded {self._max} bytes")
        return events

    def close(self) -> Event | None:
        """The stream ended: whatever is left is a final, unterminated event (or nothing)."""
        rest, self._buffer = self._buffer, b""
        return parse_event(rest) if rest.strip() else None
