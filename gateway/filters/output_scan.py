"""Output scan: matches the model's answer against the snapshot's output rules before it reaches the client.

Runs on the upstream's response. Non-streaming JSON/text answers are read whole: a `block` hit empties
the matching choice (its tool calls and reasoning too) and sets `finish_reason: "content_filter"` (per
shape, see gateway.output_formats); `redact` replaces the span. Tool arguments are also checked with
their JSON string escapes decoded (a hit there that cannot be written back blocks). Event streams and
NDJSON streams are inspected event by event, one scanner per choice and text field, tool call (raw and
decoded, see gateway.json_escapes), content block or output part: no event that completes a blocked
match is sent; the stream ends with its shape's content-filter event, and the upstream is closed.
Redaction in streams holds back only as much text as the longest redact pattern needs. Fails closed:
an internal error cuts the stream (or answers 503 for a buffered answer).

A running stream follows the policy: when a new snapshot brings other output rules, the proxy calls
`StreamInspector.adopt`, and the rest of the answer is scanned with them (each scanner keeps the context
it holds, so a match spanning the change is caught); a newly engaged kill switch ends it with `stop`.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.context import RequestContext
from gateway.filters.scope import applies
from gateway.json_escapes import ArgumentScanner, decode_escapes
from gateway.metrics import GatewayMetrics
from gateway.output_formats import (
    JsonPath,
    Section,
    StreamPiece,
    block_section,
    classify,
    classify_line,
    cut_events,
    encode,
    encode_event,
    remainder,
    rewrite,
    sections,
    strings_of,
    strip_text,
    text_event,
)
from gateway.sse import Event, NDJSONParser, SSEParser
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
        found = sections(document)
        for section in found:
            updates: list[tuple[Any, Any, str]] = []
            blocked = False
            for container, key in section.slots:
                blocked, redacted = self._scan(container[key], collect=collect)
                if blocked:
                    break
                if redacted is not None:
                    updates.append((container, key, redacted))
            if not blocked:
                for container, key, redacted in updates:
                    container[key] = redacted
                    self.action = self.action or "redact"
                    changed = True
                blocked = self._hidden(section)
            if blocked:
                block_section(section)
                self.action = "block"
                changed = True
        if self.action != "block" and found and found[0].shape != "generic" and self._remainder_blocks(document, found):
            for section in found:
                block_section(section)
            self.action = "block"
            changed = True
        return document if changed else None

    def _remainder_blocks(self, document: Any, found: list[Section]) -> bool:
        """Whether the strings outside the known text slots (logprobs, annotations, tool names, code,
        citations) hold a block or redact match: they cannot be rewritten, so either blocks."""
        text = remainder(document, found)
        return bool(text) and self._unwritable_hit(text)

    def _unwritable_hit(self, text: str) -> bool:
        """Whether text that cannot be rewritten holds a block or redact match (counted): either blocks."""
        hits = list(self._matcher.scan(TextView(text), self.accept))
        self._count(hits)
        return any(hit.rule.action != "shadow" for hit in hits)

    def _hidden(self, section: Section) -> bool:
        """Whether tool arguments, decoded, or tool input keys hold a match: these cannot be rewritten,
        so a redact hit blocks too (after the raw arguments' own redaction was applied)."""
        texts = [decode_escapes(container[key]) for container, key in section.arguments]
        texts = [
            text for text, (container, key) in zip(texts, section.arguments, strict=True) if text != container[key]
        ]
        if section.keys:
            texts.append("\n".join(section.keys))
        return any(self._unwritable_hit(text) for text in texts)

    def rebind(self, matcher: Matcher) -> None:
        """Scan the rest of this answer with `matcher` (a newer policy's output rules)."""
        self._matcher = matcher

    def stream(self, *, ndjson: bool = False) -> StreamInspector:
        return StreamInspector(self, ndjson=ndjson)

    def scanner(self) -> StreamScanner:
        return StreamScanner(self._matcher, self.accept, REDACTION)

    def count(self, hits: list[Hit]) -> None:
        self._count(hits)


class StreamInspector:
    """Per-stream state: the SSE (or NDJSON) parser, one scanner per choice and text field, tool call,
    content block or output part, and held raw events."""

    def __init__(self, owner: OutputInspector, *, ndjson: bool = False) -> None:
        self._owner = owner
        self._ndjson = ndjson
        self._parser: SSEParser | NDJSONParser = NDJSONParser() if ndjson else SSEParser()
        self._scanners: dict[str, StreamScanner | ArgumentScanner] = {}
        self._templates: dict[str, tuple[dict[str, Any], str, JsonPath]] = {}
        self._held_raw: list[bytes] = []  # events of unknown shape, waiting for their text to be decided
        self._last_shape = "ollama" if ndjson else "raw"
        self._last_document: dict[str, Any] | None = None
        self.cut = False

    def _scanner(self, key: str) -> StreamScanner | ArgumentScanner:
        scanner = self._scanners.get(key)
        if scanner is None:
            if key.endswith("/args"):
                scanner = ArgumentScanner(self._owner.scanner(), self._owner.scanner())
            else:
                scanner = self._owner.scanner()
            self._scanners[key] = scanner
        return scanner

    def _classify(self, event: Event) -> StreamPiece:
        return classify_line(event) if self._ndjson else classify(event)

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send for this upstream chunk; after a cut, the closing events (then nothing)."""
        if self.cut:
            return b""
        out: list[bytes] = []
        for event in self._parser.feed(chunk):
            out.append(self._event(self._classify(event), event))
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
            out.append(self._event(self._classify(last), last))
        if not self.cut:
            out.append(self._finish(list(self._scanners)))
        if not self.cut:
            if self._decide_raw():
                out.extend(self._held_raw)
                self._held_raw = []
            else:
                out.append(self._cut(None, "raw"))
        return b"".join(out)

    def _decide_raw(self) -> bool:
        """Decide the text of held opaque events before they are sent (at the end, or before a known
        event): False when it completes a blocked match."""
        scanner = self._scanners.get("raw")
        if scanner is None or not scanner.holding:
            return True
        emission = scanner.finish()
        self._owner.count(emission.hits)
        return emission.blocked is None

    def fail(self) -> bytes:
        """An internal error: end the stream as if blocked (fail closed)."""
        self.cut = True
        return self._cut_events(self._last_document, self._last_shape, "choice:0")

    def stop(self, action: str) -> bytes:
        """End the stream now, between events (a kill switch engaged under it): its closing events. Text
        still held back is dropped."""
        self.cut = True
        self._owner.action = action
        self._held_raw = []
        return self._cut_events(self._last_document, self._last_shape, "choice:0")

    def follow(self, document: dict[str, Any] | None, shape: str) -> None:
        """The stream is inspected from its middle on: its last event so far, a template for a cut."""
        if document is not None:
            self._last_document, self._last_shape = document, shape

    def adopt(self, matcher: Matcher) -> None:
        """Scan the rest of the answer with `matcher`: every scanner keeps its context (sent text a match
        may span, text held back), so a match that began before the change is still caught."""
        self._owner.rebind(matcher)
        for scanner in self._scanners.values():
            scanner.rebind(matcher)

    def _event(self, piece: StreamPiece, event: Event) -> bytes:
        if piece.document is not None:
            self._last_document, self._last_shape = piece.document, piece.shape
        if piece.shape in ("raw", "other"):
            return self._opaque(piece, event)
        # Opaque events held so far go first, so that events keep their order, once their text is decided.
        if self._held_raw and not self._decide_raw():
            return self._cut(piece, "raw")
        held = b"".join(self._held_raw) if self._held_raw else b""
        self._held_raw = []
        for key, text in piece.checks or ():
            if self._check(key, text):
                return held + self._cut(piece, key)
        if piece.shape == "responses" and not piece.texts:
            return held + self._finish_then(piece, self._whole_event(piece, event))
        emitted: list[tuple[JsonPath, str]] = []
        changed = False
        for key, text, path in piece.texts:
            self._owner.saw(text)
            emission = self._scanner(key).feed(text)
            self._owner.count(emission.hits)
            if emission.blocked is not None:
                return held + self._cut(piece, key)
            assert piece.document is not None
            self._templates[key] = (piece.document, piece.shape, path)
            if emission.text != text:
                changed = True
                if any(hit.rule.action == "redact" for hit in emission.hits):
                    self._owner.action = self._owner.action or "redact"
            emitted.append((path, emission.text))
        if not changed:
            return held + self._finish_then(piece, event.raw)
        assert piece.document is not None
        ending = bool(piece.ends or piece.ends_all)
        body = self._rewritten(piece.document, piece.shape, emitted, ending)
        tail = strip_text(piece.document, piece.shape) if ending else b""
        return held + body + self._finish_then(piece, tail)

    def _rewritten(
        self, document: dict[str, Any], shape: str, emitted: list[tuple[JsonPath, str]], ending: bool
    ) -> bytes:
        """The event with each text replaced by what may be sent of it. An event that ends its part
        loses its ending here: the ending follows the text its scanners still release."""
        if shape not in ("chat", "completion") and not any(text for _, text in emitted):
            return b""  # a delta event whose text is all held: nothing to send yet
        if shape == "ollama" and ending and not any(text for _, text in emitted):
            return b""
        copy = rewrite(document, emitted)
        for choice in copy.get("choices") or []:
            if isinstance(choice, dict) and choice.get("logprobs") is not None:
                choice["logprobs"] = None  # its tokens spell the text as the model wrote it, held or not
        copy.pop("logprobs", None)  # Ollama's
        if ending and shape in ("chat", "completion"):
            copy.pop("usage", None)
            for choice in copy.get("choices") or []:
                if isinstance(choice, dict):
                    choice["finish_reason"] = None
        elif ending and shape == "ollama":
            copy = {k: v for k, v in copy.items() if k in ("model", "created_at", "message", "response", "thinking")}
            copy["done"] = False
        return encode(copy, shape)

    def _check(self, key: str, text: str) -> bool:
        """Scan text that cannot be rewritten: whether it must cut the stream (a block, or a redaction
        that could not be applied)."""
        self._owner.saw(text)
        emission = self._scanner(key).feed(text)
        self._owner.count(emission.hits)
        return emission.blocked is not None or any(hit.rule.action == "redact" for hit in emission.hits)

    def _finish_then(self, piece: StreamPiece, raw: bytes) -> bytes:
        if not piece.ends and not piece.ends_all:
            return raw  # nothing ends here (most events)
        if piece.ends_all:
            keys = list(self._scanners)
        else:
            keys = [k for k in self._scanners if any(k == end or k.startswith(end + "/") for end in piece.ends)]
        closing = self._finish(keys)
        return closing if self.cut else closing + raw

    def _whole_event(self, piece: StreamPiece, event: Event) -> bytes:
        """A non-delta event that repeats text (`response.output_text.done`, `.output_item.done`,
        `.completed`): scanned as a document, so that a redaction applied to the deltas is applied here too."""
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
        """Shapes that cannot be rewritten: their text (every string of a JSON event) is scanned across
        events for blocks, and the raw events are held while that scan is undecided (redaction cannot
        be applied to them)."""
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
                document, shape, path = self._templates[key]
                out.append(text_event(document, shape, key, emission.text, path))
        return b"".join(out)

    def _cut(self, piece: StreamPiece | None, key: str) -> bytes:
        self.cut = True
        self._owner.action = "block"
        shape = piece.shape if piece is not None else self._last_shape
        document = piece.document if piece is not None and piece.document is not None else self._last_document
        return self._cut_events(document, shape, key)

    def _cut_events(self, document: dict[str, Any] | None, shape: str, key: str) -> bytes:
        return cut_events(document, "ollama" if self._ndjson else shape, key)
