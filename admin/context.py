"""Typed application state shared by the admin handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from rules.alerts import AnomalyDetector
from rules.samples import SampleSink
from rules.store import PolicyStore
from rules.watch import HitCounter


@dataclass(frozen=True, slots=True)
class Enforcement:
    """What this process's data plane enforces right now (absent when the admin plane runs alone)."""

    version: int
    compiled_at: datetime


@dataclass(frozen=True, slots=True)
class Insight:
    """What the data plane records, for the admin API to show: samples, watch-period hits, alerts."""

    sink: SampleSink
    hits: HitCounter
    detector: AnomalyDetector
    forensic_max_rate: float = 1.0
    forensic_max_seconds: int = 4 * 3600
    on_reveal: Callable[[str, int], None] = lambda responder, count: None  # exposure metric


@dataclass(frozen=True, slots=True)
class Known:
    """What this gateway's config names, for kill switches and rule scopes to refer to: its routes,
    its tenants (the values of the `tenants` map) and the models its routes list. Any other model is
    accepted with a warning: models cannot be known in advance."""

    routes: frozenset[str]
    tenants: frozenset[str]
    models: frozenset[str] = frozenset()


STORE: web.AppKey[PolicyStore] = web.AppKey("store")
INSIGHT: web.AppKey[Insight] = web.AppKey("insight")
CATEGORIES: web.AppKey[frozenset[str]] = web.AppKey("categories")
ENFORCEMENT: web.AppKey[Callable[[], Enforcement | None]] = web.AppKey("enforcement")
STAGE1_TTL: web.AppKey[int] = web.AppKey("stage1_ttl")
# None: the admin plane was built without the data plane's config, so scopes are not checked against it.
KNOWN: web.AppKey[Known | None] = web.AppKey("known")
