"""The admin application: JSON errors, bearer-token roles, and the routes of each API area."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from admin import (
    controls_api,
    incidents_api,
    insight_api,
    killswitch_api,
    openapi,
    policy_api,
    rules_api,
    variants_api,
)
from admin.auth import AUTHENTICATOR, Authenticator
from admin.context import CATEGORIES, ENFORCEMENT, INSIGHT, KNOWN, STAGE1_TTL, STORE, Enforcement, Insight, Known
from admin.errors import json_errors
from rules.roles import AdminToken
from rules.store import PolicyStore

MAX_ADMIN_BODY = 256 * 1024 * 1024  # a 100k-rule push is ~20 MB; leave room


def _no_enforcement() -> Enforcement | None:
    return None


def build_admin_app(
    *,
    store: PolicyStore,
    tokens: Sequence[AdminToken],
    registry: CollectorRegistry,
    categories: frozenset[str],
    enforcement: Callable[[], Enforcement | None] = _no_enforcement,
    stage1_default_ttl: int = 0,
    insight: Insight,
    known: Known | None = None,
) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_ADMIN_BODY)
    app[STORE] = store
    app[AUTHENTICATOR] = Authenticator(tokens)
    app[CATEGORIES] = categories
    app[ENFORCEMENT] = enforcement
    app[STAGE1_TTL] = stage1_default_ttl
    app[INSIGHT] = insight
    app[KNOWN] = known  # the config's routes and tenants, which scopes may name (admin/scopes.py)
    app[policy_api.REGISTRY] = registry
    variants_api.add_routes(app)  # before rules_api: /v1/rules/simulate is not a rule id
    policy_api.add_routes(app)
    rules_api.add_routes(app)
    killswitch_api.add_routes(app)
    controls_api.add_routes(app)
    incidents_api.add_routes(app)
    insight_api.add_routes(app)
    openapi.add_routes(app)
    return app
