"""Event boundaries and closing events for an *uninspected* event stream that a new policy reaches.

An SSE or NDJSON answer relayed without inspection (no output rules were in force when it began) is
passed on chunk by chunk, without parsing. When a newer policy snapshot concerns it — a kill switch that
cuts running streams, or output rules to apply to the rest of it — the proxy first finishes the event in
progress (so that the client only ever sees whole events), then either ends the stream with the closing
events of its own shape or hands the rest to an output inspector. This runs only then (rarely), so it is
not on the compiled hot path.
"""

from __future__ import annotations

from typing import Any

from gateway.output_formats import classify, classify_line, cut_events
from gateway.sse import NDJSONParser, SSEParser

MAX_EVENT_TAIL = 64 * 1024  # bytes relayed, at most, to finish the event in progress before a cut
_SSE_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")


def ends_at_boundary(sent: bytes, *, ndjson: bool) -> bool:
    """Whether what was sent last ends an event (nothing sent yet counts as a boundary)."""
    if not sent:
        return True
    return sent.endswith(b"\n") if ndjson else sent.endswith(_SSE_ENDS)


def boundary_end(data: bytes, *, ndjson: bool) -> int:
    """The index just after the first event boundary in `data`, or -1 when there is none."""
    if ndjson:
        found = data.find(b"\n")
        return -1 if found < 0 else found + 1
    best = -1
    for end in _SSE_ENDS:
        found = data.find(end)
        if found >= 0 and (best < 0 or found + len(end) < best):
            best = found + len(end)
    return best


def last_event(sent: bytes, *, ndjson: bool) -> tuple[dict[str, Any] | None, str]:
    """The document and shape of the last complete event in `sent` (the tail of what was relayed)."""
    events = NDJSONParser().feed(sent) if ndjson else SSEParser().feed(sent)
    for event in reversed(events):
        piece = classify_line(event) if ndjson else classify(event)
        if piece.document is not None:
            return piece.document, piece.shape
    return None, "ollama" if ndjson else "raw"


def closing_events(sent: bytes, *, ndjson: bool) -> bytes:
    """The end of a stream cut by a kill switch, in the shape of its last event."""
    document, shape = last_event(sent, ndjson=ndjson)
    if shape in ("raw", "other") and not ndjson:
        return KILLED
    return cut_events(document, "ollama" if ndjson else shape, "choice:0")


KILLED = (
    b'data: {"error": {"type": "service_unavailable", "code": "service_suspended", '
    b'"message": "This service was suspended while the answer was streaming."}}\n\ndata: [DONE]\n\n'
)
