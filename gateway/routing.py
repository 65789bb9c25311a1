"""Routes: which upstream serves a request, by the longest matching path prefix (and model, if listed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from yarl import URL

from gateway.settings import RouteConfig


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path_prefix: str
    upstream: URL
    models: frozenset[str] | None

    @property
    def base_url(self) -> str:
        """The upstream URL without a trailing slash; the request's raw path and query are appended."""
        return str(self.upstream).rstrip("/")

    def matches(self, path: str, model: str | None) -> bool:
        if not path.startswith(self.path_prefix):
            return False
        return self.models is None or model in self.models


class Router:
    def __init__(self, configs: Sequence[RouteConfig]) -> None:
        routes = [
            Route(c.name, c.path_prefix, URL(c.upstream), frozenset(c.models) if c.models else None) for c in configs
        ]
        # Longest prefix first; among equal prefixes, model-specific routes before catch-alls.
        self.routes = tuple(sorted(routes, key=lambda r: (-len(r.path_prefix), r.models is None)))
        self.needs_model = any(r.models for r in routes)
        self.names = tuple(r.name for r in routes)

    def select(self, path: str, model: str | None) -> Route | None:
        for route in self.routes:
            if route.matches(path, model):
                return route
        return None
