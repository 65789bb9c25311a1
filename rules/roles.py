"""Who may change policy: the three admin roles, ordered, and the token that names a person and a role."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Role(enum.IntEnum):
    viewer = 1
    responder = 2
    commander = 3


@dataclass(frozen=True, slots=True)
class AdminToken:
    name: str
    role: Role
    token: str
    expires_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    @classmethod
    def parse(cls, item: str) -> AdminToken:
        """`name:role:token`, optionally `;expires=2026-12-31T00:00:00Z`; the token may contain colons."""
        item, _, expiry = item.strip().partition(";expires=")
        expires_at = None
        if expiry:
            try:
                expires_at = datetime.fromisoformat(expiry.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"expires={expiry!r} is not an ISO 8601 time") from None
            if expires_at.tzinfo is None:
                raise ValueError("expires= needs a timezone (e.g. 2026-12-31T00:00:00Z)")
        parts = item.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError("admin token must be name:role:token")
        name, role, token = parts
        if role not in Role.__members__:
            raise ValueError(f"unknown role {role!r} (viewer, responder, commander)")
        if len(token) < 12:
            raise ValueError(f"token for {name!r} is shorter than 12 characters")
        return cls(name=name, role=Role[role], token=token, expires_at=expires_at)
