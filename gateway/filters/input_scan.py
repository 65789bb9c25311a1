"""Input scan: matches the request's texts against the snapshot's input rules before they go upstream.

Runs after kill switch, access and rate limit. A `block` hit answers 400 `content_filter` naming the
harm category (never the pattern); a `shadow` hit is counted and lets the request through. Expired rules
and rules scoped to another route or model are skipped. Fails closed (the chain runner answers 503).
"""

from __future__ import annotations

from gateway.context import RequestContext
from gateway.metrics import GatewayMetrics
from gateway.verdict import CONTINUE, Refusal, Verdict
from rules.model import Rule
from rules.normalize import normalize


def in_scope(rule: Rule, ctx: RequestContext) -> bool:
    scope = rule.scope
    if scope is None:
        return True
    if scope.routes and ctx.route.name not in scope.routes:
        return False
    return not (scope.models and ctx.model not in scope.models)


class InputScanFilter:
    name = "input_scan"

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def on_request(self, ctx: RequestContext) -> Verdict:
        matcher = ctx.snapshot.input_literals
        if matcher.size == 0 or not ctx.texts:
            return CONTINUE
        with self._metrics.scan_seconds.labels("input").time():
            for text in ctx.texts:
                for hit in matcher.scan(normalize(text)):
                    rule = hit.rule
                    if rule.expired(ctx.now) or not in_scope(rule, ctx):
                        continue
                    self._metrics.count_match(rule, "input")
                    if rule.action == "block":
                        return Refusal(
                            status=400,
                            code="content_filter",
                            message="The request was refused by the content policy.",
                            action="block",
                            extra={"category": rule.category},
                        )
                    ctx.shadow_hits.append(rule.id)
        return CONTINUE
