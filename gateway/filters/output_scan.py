"""Output scan: matches the model's answer against the snapshot's output rules before it reaches the client.

Runs on the upstream's response. Non-streaming JSON/text answers are read whole: a `block` hit empties
the matching choice and sets `finish_reason: "content_filter"` (per shape, see gateway.output_formats);
`redact` replaces the span. Event streams are inspected event by event: no event that completes a
blocked match is sent; the stream ends with a content-filter event and `[DONE]`, and the upstream is
closed. Redaction in streams holds back only as much text as the longest redact pattern needs. Fails
closed: an internal error cuts the stream (or answers 503 for a buffered answer).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.context import RequestContext
from gateway.filters.scope import applies
from gateway.metrics import GatewayMetrics
from gateway.output_formats import (
    StreamPiece,
    block_section,
    classify,
    cut_events,
    encode_event,
    sections,
    strings_of,
    strip_text,
    text_event,
)
from gateway.sse import Event, SSEParser
from rules.match import Hit, Matcher
from rules.model import Rule
from rules.normalize import TextView
from rules.redact import REDACTION, redact
from rules.stream_scan import StreamScanner


class OutputScanFilter:
    name = "output_scan"

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def open(self, ctx: RequestContext) -> OutputInspector | None:
        """A per-response inspector, or None when no output rule is in force."""
        matcher = ctx.snapshot.output
        if matcher.size == 0:
            return None
        return OutputInspector(ctx, matcher, self._metrics)


class OutputInspector:
    def __init__(self, ctx: RequestContext, matcher: Matcher, metrics: GatewayMetrics) -> None:
        self._ctx = ctx
        self._matcher = matcher
        self._metrics = metrics
        self.action: str | None = None  # "block" or "redact" once the answer was changed

    def accept(self, rule: Rule) -> bool:
        return applies(rule, self._ctx)

    def _count(self, hits: list[Hit]) -> None:
        for hit in hits:
            self._metrics.count_match(hit.rule, "output")
            self._ctx.matched_rules.append(hit.rule.id)

    def saw(self, text: str) -> None:
        """Keep the answer's text as the model wrote it, for sampling."""
        self._ctx.output_parts.append(text)

    def _scan(self, text: str, *, collect: bool = True) -> tuple[bool, str | None]:
        """(blocked, redacted text or None when unchanged)."""
        if collect:
            self.saw(text)
        view = TextView(text)
        hits = list(self._matcher.scan(view, self.accept))
        self._count(hits)
        if any(hit.rule.action == "block" for hit in hits):
            return True, None
        redactions = [hit for hit in hits if hit.rule.action == "redact"]
        return False, redact(view, redactions, REDACTION) if redactions else None

    def inspect_body(self, content_type: str, body: bytes) -> bytes:
        """The answer to send for a whole (non-streaming) response body."""
        with self._metrics.child(self._metrics.scan_seconds, "output").time():
            if "json" in content_type:
                try:
                    document = orjson.loads(body)
                except orjson.JSONDecodeError:
                    document = None
                else:
                    return self._inspect_document(document, body)
            blocked, redacted = self._scan(body.decode("utf-8", "replace"))
            if blocked:
                self.action = "block"
                return b""
            if redacted is not None:
                self.action = "redact"
                return redacted.encode()
            return body

    def _inspect_document(self, document: Any, body: bytes) -> bytes:
        return body if self.inspect_document(document) is None else orjson.dumps(document)

    def inspect_document(self, document: Any, *, collect: bool = True) -> Any:
        """Scan a parsed document in place; returns it when it was changed, else None."""
        changed = False
        for section in sections(document):
            updates: list[tuple[Any, Any, str]] = []
            for container, key in section.slots:
                blocked, redacted = self._scan(container[key], collect=collect)
                if blocked:
                    block_section(section)
                    self.action = "block"
                    changed = True
                    updates = []
                    break
                if redacted is not None:
                    updates.append((container, key, redacted))
            for container, key, redacted in updates:
                container[key] = redacted
                self.action = self.action or "redact"
                changed = True
        return document if changed else None

    def stream(self) -> StreamInspector:
        return StreamInspector(self)

    def scanner(self) -> StreamScanner:
        return StreamScanner(self._matcher, self.accept, REDACTION)

    def count(self, hits: list[Hit]) -> None:
        self._count(hits)


class StreamInspector:
    """Per-stream state: the SSE parser, one scanner per choice or content block, held raw events."""

    def __init__(self, owner: OutputInspector) -> None:
        self._owner = owner
        self._parser = SSEParser()
        self._scanners: dict[str, StreamScanner] = {}
        self._templates: dict[str, tuple[dict[str, Any], str]] = {}
        self._held_raw: list[bytes] = []  # events of unknown shape, waiting for their text to be decided
        self._last_shape = "raw"
        self._last_document: dict[str, Any] | None = None
        self.cut = False

    def _scanner(self, key: str) -> StreamScanner:
        scanner = self._scanners.get(key)
        if scanner is None:
            scanner = self._scanners[key] = self._owner.scanner()
        return scanner

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send for this upstream chunk; after a cut, the closing events (then nothing)."""
        if self.cut:
            return b""
        out: list[bytes] = []
        for event in self._parser.feed(chunk):
            out.append(self._event(classify(event), event))
            if self.cut:
                break
        return b"".join(out)

    def close(self) -> bytes:
        """The upstream ended: decide what is still held and send it."""
        if self.cut:
            return b""
        out: list[bytes] = []
        last = self._parser.close()
        if last is not None:
            out.append(self._event(classify(last), last))
        if not self.cut:
            out.append(self._finish(list(self._scanners)))
        if not self.cut:
            out.extend(self._held_raw)
            self._held_raw = []
        return b"".join(out)

    def fail(self) -> bytes:
        """An internal error: end the stream as if blocked (fail closed)."""
        self.cut = True
        return cut_events(self._last_document, self._last_shape, "choice:0")

    def _event(self, piece: StreamPiece, event: Event) -> bytes:
        if piece.document is not None:
            self._last_document, self._last_shape = piece.document, piece.shape
        if piece.shape in ("raw", "other"):
            return self._opaque(piece, event)
        if piece.shape == "responses" and not piece.texts:
            return self._finish_then(piece, self._whole_event(piece, event))
        out: list[bytes] = []
        changed = len(piece.texts) > 1
        for key, text in piece.texts:
            self._owner.saw(text)
            emission = self._scanner(key).feed(text)
            self._owner.count(emission.hits)
            if emission.blocked is not None:
                return self._cut(piece, key)
            assert piece.document is not None
            self._templates[key] = (piece.document, piece.shape)
            if emission.text != text:
                changed = True
                self._owner.action = self._owner.action or "redact"
            if emission.text and (changed or len(piece.texts) > 1):
                out.append(text_event(piece.document, piece.shape, key, emission.text))
        if not changed:
            return self._finish_then(piece, event.raw)
        tail = strip_text(piece.document, piece.shape) if piece.ends or piece.ends_all else b""
        return b"".join(out) + self._finish_then(piece, tail)

    def _finish_then(self, piece: StreamPiece, raw: bytes) -> bytes:
        if not piece.ends and not piece.ends_all:
            return raw  # nothing ends here (most events)
        closing = self._finish(list(self._scanners) if piece.ends_all else piece.ends)
        return closing if self.cut else closing + raw

    def _whole_event(self, piece: StreamPiece, event: Event) -> bytes:
        """A non-delta event that repeats the full text (`response.output_text.done`, `.completed`):
        scanned as a document, so that a redaction applied to the deltas is applied here too."""
        if piece.document is None:
            return event.raw
        before = self._owner.action
        rewritten = self._owner.inspect_document(piece.document, collect=False)  # its text came as deltas
        if rewritten is None:
            return event.raw
        if self._owner.action == "block" and before != "block":
            return self._cut(piece, "choice:0")
        return encode_event(piece.document, event.event)

    def _opaque(self, piece: StreamPiece, event: Event) -> bytes:
        """Shapes that cannot be rewritten: their text is scanned across events for blocks, and the
        raw events are held while that scan is undecided (redaction cannot be applied to them)."""
        scanner = self._scanner("raw")
        text = event.data if piece.document is None else "\n".join(strings_of(piece.document))
        if text:
            self._owner.saw(text)
        emission = scanner.feed(text + "\n") if text else None
        if emission is not None:
            self._owner.count(emission.hits)
            if emission.blocked is not None:
                return self._cut(piece, "raw")
        self._held_raw.append(event.raw)
        if scanner.holding:
            return b""
        released, self._held_raw = self._held_raw, []
        return b"".join(released)

    def _finish(self, keys: list[str]) -> bytes:
        out: list[bytes] = []
        for key in keys:
            scanner = self._scanners.get(key)
            if scanner is None or key == "raw":
                continue
            emission = scanner.finish()
            self._owner.count(emission.hits)
            if emission.blocked is not None:
                return self._cut(None, key)
            if emission.text and key in self._templates:
                document, shape = self._templates[key]
                out.append(text_event(document, shape, key, emission.text))
        return b"".join(out)

    def _cut(self, piece: StreamPiece | None, key: str) -> bytes:
        self.cut = True
        self._owner.action = "block"
        shape = piece.shape if piece is not None else self._last_shape
        document = piece.document if piece is not None and piece.document is not None else self._last_document
        return cut_events(document, shape, key)
