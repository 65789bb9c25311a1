"""Input scan: matches the request's texts against the snapshot's input rules before they go upstream.

Runs after kill switch, access and rate limit. Scans every text `gateway/formats.py` extracted, then the
derived texts (the conversation joined, decoded JSON-in-strings and form fields); a hit in a derived text
that the texts themselves already showed is not counted twice. A `block` hit answers 400
`content_filter` naming the harm category (never the pattern); a `redact` hit replaces the matched span
with `[REDACTED]` in the body sent upstream — a span across joined texts is redacted in each text it
covers. A redaction that cannot be written back (a hit only in decoded arguments or form fields, or one
that the rewritten body still shows) refuses the request as a block would. A `shadow` hit is only
counted. Expired rules and rules scoped elsewhere are skipped. Fails closed: an error here refuses with
503, and so does a regex over its time budget: each search has its own (`regex_budget_ms`) and all the
searches of one request share a total (`regex_budget`, summed over every text and view), so a request of
many texts cannot multiply it. A request whose texts exceed OFFLOAD_CHARS is scanned in a worker thread
(the regex module releases the GIL while it searches), so a slow scan never holds the event loop: other
requests and the admin API keep answering meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import orjson

from gateway.context import RequestContext
from gateway.filters.scope import applies
from gateway.formats import Derived, ExtractedBody, extract, rewrite
from gateway.metrics import GatewayMetrics
from gateway.verdict import CONTINUE, Refusal, Verdict
from rules.match import DEFAULT_REQUEST_REGEX_BUDGET, Matcher, RegexBudget
from rules.model import Rule
from rules.normalize import TextView
from rules.redact import REDACTION, redact_spans

OFFLOAD_CHARS = 16_384  # texts (summed) longer than this are scanned in a worker thread
SCAN_THREADS = 1  # large requests are scanned one at a time: one thread competes with the loop for the GIL


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


def _still_matches(
    extracted: ExtractedBody, matcher: Matcher, accept: Callable[[Rule], bool], budget: RegexBudget
) -> Rule | None:
    """A block or redact rule the rewritten body still shows, if any."""
    for text in extracted.texts + tuple(derived.text for derived in extracted.derived):
        for hit in matcher.scan(TextView(text), accept, budget):
            if hit.rule.action in ("block", "redact"):
                return hit.rule
    return None


def _size(ctx: RequestContext) -> int:
    return sum(len(text) for text in ctx.texts) + sum(len(derived.text) for derived in ctx.derived)


class InputScanFilter:
    name = "input_scan"

    def __init__(self, metrics: GatewayMetrics, *, regex_budget: float = DEFAULT_REQUEST_REGEX_BUDGET) -> None:
        self._metrics = metrics
        self._regex_budget = regex_budget
        self._pool = ThreadPoolExecutor(max_workers=SCAN_THREADS, thread_name_prefix="input-scan")

    def on_request(self, ctx: RequestContext) -> Verdict | Awaitable[Verdict]:
        matcher = ctx.snapshot.input
        if matcher.size == 0 or not (ctx.texts or ctx.derived):
            return CONTINUE
        if _size(ctx) > OFFLOAD_CHARS:
            return self._off_loop(ctx, matcher)
        matched: list[Rule] = []
        started = time.perf_counter()
        try:
            return _decide(ctx, matcher, RegexBudget(self._regex_budget), matched)
        finally:
            self._account(matched, time.perf_counter() - started)

    async def _off_loop(self, ctx: RequestContext, matcher: Matcher) -> Verdict:
        """The same decision in a worker thread; metrics are counted back on the loop (they are not
        thread-safe)."""
        matched: list[Rule] = []
        started = time.perf_counter()
        budget = RegexBudget(self._regex_budget)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, _decide, ctx, matcher, budget, matched)
        finally:
            self._account(matched, time.perf_counter() - started)

    def _account(self, matched: list[Rule], seconds: float) -> None:
        for rule in matched:
            self._metrics.count_match(rule, "input")
        self._metrics.child(self._metrics.scan_seconds, "input").observe(seconds)


def _decide(ctx: RequestContext, matcher: Matcher, budget: RegexBudget, matched: list[Rule]) -> Verdict:
    """The verdict on the request's texts; every rule that matched is appended to `matched` (for the
    metrics) and its id to `ctx.matched_rules`. Raises RegexTimeout past the budget."""

    def accept(rule: Rule) -> bool:
        return applies(rule, ctx)

    spans: dict[int, list[tuple[int, int]]] = {}
    seen: set[tuple[int, str]] = set()  # (text index, rule id) of the hits in the texts themselves
    unwritable: Rule | None = None
    for index, text in enumerate(ctx.texts):
        view = TextView(text)
        for hit in matcher.scan(view, accept, budget):
            matched.append(hit.rule)
            ctx.matched_rules.append(hit.rule.id)
            if hit.rule.action == "block":
                return _refusal(hit.rule)
            seen.add((index, hit.rule.id))
            if hit.rule.action == "redact":
                spans.setdefault(index, []).append(hit.original_span(view))
    for derived in ctx.derived:
        view = TextView(derived.text)
        for hit in matcher.scan(view, accept, budget):
            start, end = hit.original_span(view)
            pieces = _pieces(derived, start, end)
            if len(pieces) == 1 and (pieces[0][0], hit.rule.id) in seen:
                continue  # inside one text: already seen there
            if not derived.segments and (derived.source, hit.rule.id) in seen:
                continue  # decoded from a text that showed the same rule
            matched.append(hit.rule)
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
    leftover = _still_matches(extract(ctx.content_type, body), matcher, accept, budget)
    if leftover is not None:  # decoded or joined text the rewrite could not reach: refuse, never leak
        return _refusal(leftover)
    ctx.body_override = body
    return CONTINUE
