"""Input scan: matches the request's texts against the snapshot's input rules before they go upstream.

Runs after kill switch, access and rate limit. Scans every text `gateway/formats.py` extracted, then the
derived texts (the conversation joined, decoded JSON-in-strings and form fields); a hit in a derived text
that the texts themselves already showed is not counted twice. A `block` hit answers 400
`content_filter` naming the harm category (never the pattern); a `redact` hit replaces the matched span
with `[REDACTED]` in the body sent upstream — a span across joined texts is redacted in each text it
covers. A redaction that cannot be written back (a hit only in decoded arguments or form fields, or one
that the rewritten body still shows) refuses the request as a block would. A `shadow` hit is only
counted. Expired rules and rules scoped elsewhere are skipped. Fails closed: an error here (including a
regex over its time budget) refuses with 503.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from gateway.context import RequestContext
from gateway.filters.scope import applies
from gateway.formats import Derived, ExtractedBody, extract, redact_spans, rewrite
from gateway.metrics import GatewayMetrics
from gateway.verdict import CONTINUE, Refusal, Verdict
from rules.match import Matcher
from rules.model import Rule
from rules.normalize import TextView
from rules.redact import REDACTION


def _refusal(rule: Rule) -> Refusal:
    return Refusal(
        status=400,
        code="content_filter",
        message="The request was refused by the content policy.",
        action="block",
        extra={"category": rule.category},
    )


def _pieces(derived: Derived, start: int, end: int) -> list[tuple[int, int, int]]:
    """(text index, start, end) of each joined text a span of `derived` covers."""
    return [
        (index, max(start, first) - first, min(end, last) - first)
        for first, last, index in derived.segments
        if start < last and end > first
    ]


def _still_matches(extracted: ExtractedBody, matcher: Matcher, accept: Callable[[Rule], bool]) -> Rule | None:
    """A block or redact rule the rewritten body still shows, if any."""
    for text in extracted.texts + tuple(derived.text for derived in extracted.derived):
        for hit in matcher.scan(TextView(text), accept):
            if hit.rule.action in ("block", "redact"):
                return hit.rule
    return None


class InputScanFilter:
    name = "input_scan"

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def on_request(self, ctx: RequestContext) -> Verdict:
        matcher = ctx.snapshot.input
        if matcher.size == 0 or not (ctx.texts or ctx.derived):
            return CONTINUE

        def accept(rule: Rule) -> bool:
            return applies(rule, ctx)

        spans: dict[int, list[tuple[int, int]]] = {}
        seen: set[tuple[int, str]] = set()  # (text index, rule id) of the hits in the texts themselves
        unwritable: Rule | None = None
        with self._metrics.child(self._metrics.scan_seconds, "input").time():
            for index, text in enumerate(ctx.texts):
                view = TextView(text)
                for hit in matcher.scan(view, accept):
                    self._metrics.count_match(hit.rule, "input")
                    ctx.matched_rules.append(hit.rule.id)
                    if hit.rule.action == "block":
                        return _refusal(hit.rule)
                    seen.add((index, hit.rule.id))
                    if hit.rule.action == "redact":
                        spans.setdefault(index, []).append(hit.original_span(view))
            for derived in ctx.derived:
                view = TextView(derived.text)
                for hit in matcher.scan(view, accept):
                    start, end = hit.original_span(view)
                    pieces = _pieces(derived, start, end)
                    if len(pieces) == 1 and (pieces[0][0], hit.rule.id) in seen:
                        continue  # inside one text: already seen there
                    if not derived.segments and (derived.source, hit.rule.id) in seen:
                        continue  # decoded from a text that showed the same rule
                    self._metrics.count_match(hit.rule, "input")
                    ctx.matched_rules.append(hit.rule.id)
                    if hit.rule.action == "block":
                        return _refusal(hit.rule)
                    if hit.rule.action != "redact":
                        continue
                    if not pieces:
                        unwritable = hit.rule
                    for index, piece_start, piece_end in pieces:
                        spans.setdefault(index, []).append((piece_start, piece_end))
        if unwritable is not None and not spans:
            return _refusal(unwritable)
        if not spans:
            return CONTINUE
        if ctx.raw_text:
            body = redact_spans(ctx.texts[0], spans[0], REDACTION).encode()
        else:
            body = orjson.dumps(rewrite(ctx.document, ctx.locations, spans, REDACTION))
        leftover = _still_matches(extract(ctx.content_type, body), matcher, accept)
        if leftover is not None:  # decoded or joined text the rewrite could not reach: refuse, never leak
            return _refusal(leftover)
        ctx.body_override = body
        return CONTINUE
