"""Whether a rule applies to a request: its scope (routes, models, tenants) and its expiry."""

from __future__ import annotations

from gateway.context import RequestContext
from rules.model import Rule


def applies(rule: Rule, ctx: RequestContext) -> bool:
    if rule.expired(ctx.now):
        return False
    scope = rule.scope
    if scope is None:
        return True
    if scope.routes and ctx.route.name not in scope.routes:
        return False
    if scope.models and ctx.model not in scope.models:
        return False
    return not (scope.tenants and ctx.identity.tenant not in scope.tenants)
