"""Who may change policy: the three admin roles, ordered, and the token that names a person and a role."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.IntEnum):
    viewer = 1
    responder = 2
    commander = 3


@dataclass(frozen=True, slots=True)
class AdminToken:
    name: str
    role: Role
    token: str

    @classmethod
    def parse(cls, item: str) -> AdminToken:
        """`name:role:token`; the token may itself contain colons."""
        parts = item.strip().split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError("admin token must be name:role:token")
        name, role, token = parts
        if role not in Role.__members__:
            raise ValueError(f"unknown role {role!r} (viewer, responder, commander)")
        if len(token) < 12:
            raise ValueError(f"token for {name!r} is shorter than 12 characters")
        return cls(name=name, role=Role[role], token=token)
