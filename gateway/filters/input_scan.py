"""Input scan: matches the request's texts against the snapshot's input rules before they go upstream.

Runs after kill switch, access and rate limit. A `block` hit answers 400 `content_filter` naming the
harm category (never the pattern); a `redact` hit replaces the matched span with `[REDACTED]` in the
body sent upstream; a `shadow` hit is only counted. Expired rules and rules scoped elsewhere are
skipped. Fails closed: an error here (including a regex over its time budget) refuses with 503.
"""

from __future__ import annotations

import orjson

from gateway.context import RequestContext
from gateway.filters.scope import applies
from gateway.formats import rewrite_strings
from gateway.metrics import GatewayMetrics
from gateway.verdict import CONTINUE, Refusal, Verdict
from rules.match import Hit
from rules.model import Rule
from rules.normalize import TextView
from rules.redact import REDACTION, redact


class InputScanFilter:
    name = "input_scan"

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def on_request(self, ctx: RequestContext) -> Verdict:
        matcher = ctx.snapshot.input
        if matcher.size == 0 or not ctx.texts:
            return CONTINUE

        def accept(rule: Rule) -> bool:
            return applies(rule, ctx)

        rewritten: dict[int, str] = {}
        with self._metrics.child(self._metrics.scan_seconds, "input").time():
            for index, text in enumerate(ctx.texts):
                view = TextView(text)
                redactions: list[Hit] = []
                for hit in matcher.scan(view, accept):
                    self._metrics.count_match(hit.rule, "input")
                    ctx.matched_rules.append(hit.rule.id)
                    if hit.rule.action == "block":
                        return Refusal(
                            status=400,
                            code="content_filter",
                            message="The request was refused by the content policy.",
                            action="block",
                            extra={"category": hit.rule.category},
                        )
                    if hit.rule.action == "redact":
                        redactions.append(hit)
                if redactions:
                    rewritten[index] = redact(view, redactions, REDACTION)
        if rewritten:
            if ctx.raw_text:
                ctx.body_override = rewritten[0].encode()
            else:
                ctx.body_override = orjson.dumps(rewrite_strings(ctx.document, rewritten))
        return CONTINUE
