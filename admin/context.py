"""Typed application state shared by the admin handlers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from rules.store import PolicyStore


@dataclass(frozen=True, slots=True)
class Enforcement:
    """What this process's data plane enforces right now (absent when the admin plane runs alone)."""

    version: int
    compiled_at: datetime


STORE: web.AppKey[PolicyStore] = web.AppKey("store")
CATEGORIES: web.AppKey[frozenset[str]] = web.AppKey("categories")
ENFORCEMENT: web.AppKey[Callable[[], Enforcement | None]] = web.AppKey("enforcement")
STAGE1_TTL: web.AppKey[int] = web.AppKey("stage1_ttl")
