"""The filter contract: a long-lived object, built once from config, never mutated after `__init__`."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from gateway.context import RequestContext
from gateway.verdict import Verdict


class RequestFilter(Protocol):
    name: str

    def on_request(self, ctx: RequestContext) -> Verdict | Awaitable[Verdict]:
        """Decide about a request before it goes upstream: `CONTINUE`, a `Refusal` or a `Reply`. Filters
        decide synchronously; one that must wait for I/O (rarely) returns an awaitable instead."""
