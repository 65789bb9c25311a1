"""What a filter returns: go on, or refuse with the contract's JSON error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True, slots=True)
class Continue:
    """Nothing to do here; the next filter runs."""


CONTINUE: Final = Continue()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Stop the request and answer it from the gateway. `action` goes to `X-Containment-Action`."""

    status: int
    code: str
    message: str
    action: str
    type: str = "invalid_request_error"
    extra: Mapping[str, object] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer in the model's place (a canned kill-switch reply): a complete response body."""

    status: int
    body: bytes
    content_type: str
    action: str


Verdict = Continue | Refusal | Reply
