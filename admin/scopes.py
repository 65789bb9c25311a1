"""What a kill switch or a rule's scope may name: the routes and tenants of this gateway's config.

A switch or a rule on a route or tenant the config does not name would never match anything, so a
responder would believe traffic contained that is not: it is refused (422, naming the known ones).
Models cannot be known in advance (a route passes any model on): a model the config does not list is
accepted, and the answer carries a `warnings` entry saying so.
"""

from __future__ import annotations

from collections.abc import Iterable

from admin.context import Known
from admin.errors import ApiError
from gateway.settings import Settings
from rules.model import Scope

NAMES_LISTED = 20  # known names quoted in a 422; the rest are counted
WARNINGS_LISTED = 20


def known_from(settings: Settings) -> Known:
    """The names a scope may refer to, from the settings the data plane runs with."""
    routes = settings.effective_routes()
    return Known(
        routes=frozenset(route.name for route in routes),
        tenants=frozenset(settings.tenants.values()),
        models=frozenset(model for route in routes for model in route.models or ()),
    )


def _names(kind: str, names: frozenset[str]) -> str:
    if not names:
        return f"no {kind}s are configured" + (" (the `tenants` map is empty)" if kind == "tenant" else "")
    listed = sorted(names)[:NAMES_LISTED]
    more = f" and {len(names) - NAMES_LISTED} more" if len(names) > NAMES_LISTED else ""
    return f"known {kind}s: {', '.join(listed)}{more}"


def _unknown(kind: str, name: str, known: Known) -> str | None:
    """Why `kind` `name` cannot be scoped to, or None when the config names it."""
    names = known.routes if kind == "route" else known.tenants
    if name in names:
        return None
    return f"no {kind} {name!r} in this gateway's config; {_names(kind, names)}"


def _model_warning(name: str, where: str) -> str:
    return (
        f"{where}: model {name!r} is not listed by any route of this gateway's config; it was accepted "
        "(models cannot be known in advance): make sure it is exactly the `model` callers send"
    )


def killswitch_warnings(known: Known | None, scope: str, engaged: bool) -> list[str]:
    """Check the scope of a kill switch about to be engaged: `route:N` or `tenant:N` that the config
    does not name → 422 `invalid_scope` (field `scope`) naming the known ones; `model:N` that no route
    lists → accepted, with a warning for the answer. Releasing is never refused: the config may have
    changed since the switch was engaged. `known` None (no config at hand): nothing is checked."""
    if known is None or not engaged:
        return []
    kind, _, name = scope.partition(":")
    if kind in ("route", "tenant"):
        problem = _unknown(kind, name, known)
        if problem is not None:
            raise ApiError(422, "invalid_scope", f"scope: {problem}", field="scope", reason=problem)
    if kind == "model" and name not in known.models:
        return [_model_warning(name, "scope")]
    return []


def rule_scope_warnings(known: Known | None, scopes: Iterable[tuple[int | None, Scope | None]]) -> list[str]:
    """Check rule scopes, given with their index in the push (None for a PATCH): the first route or
    tenant the config does not name → 422 `invalid_rule` (`index`, field `scope.routes` or
    `scope.tenants`) naming the known ones; models no route lists → warnings (one per model name)."""
    if known is None:
        return []
    models: dict[str, list[int | None]] = {}
    for index, scope in scopes:
        if scope is None:
            continue
        for field, kind, names in (("routes", "route", scope.routes), ("tenants", "tenant", scope.tenants)):
            for name in names or ():
                problem = _unknown(kind, name, known)
                if problem is not None:
                    where = f"rules[{index}].scope.{field}" if index is not None else f"scope.{field}"
                    raise ApiError(
                        422,
                        "invalid_rule",
                        f"{where}: {problem}",
                        index=index,
                        field=f"scope.{field}",
                        reason=problem,
                    )
        for name in scope.models or ():
            if name not in known.models:
                models.setdefault(name, []).append(index)
    warnings = []
    for name, indexes in list(models.items())[:WARNINGS_LISTED]:
        where = "scope.models" if indexes[0] is None else f"rules[{indexes[0]}].scope.models"
        if len(indexes) > 1:
            where += f" (and {len(indexes) - 1} more rules)"
        warnings.append(_model_warning(name, where))
    if len(models) > WARNINGS_LISTED:
        warnings.append(f"and {len(models) - WARNINGS_LISTED} more model names that no route lists")
    return warnings
