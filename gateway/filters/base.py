"""The filter contract: a long-lived object, built once from config, never mutated after `__init__`."""

from __future__ import annotations

from typing import Protocol

from gateway.context import RequestContext
from gateway.verdict import Verdict


class RequestFilter(Protocol):
    name: str

    def on_request(self, ctx: RequestContext) -> Verdict:
        """Decide about a request before it goes upstream: `CONTINUE` or a `Refusal`."""
