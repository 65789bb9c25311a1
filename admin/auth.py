"""Bearer-token authentication with three ordered roles; tokens compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import wraps

from aiohttp import web

from admin.errors import ApiError
from rules.model import utcnow
from rules.roles import AdminToken, Role


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role


class Authenticator:
    def __init__(self, tokens: Sequence[AdminToken]) -> None:
        self._tokens = tuple((t.token.encode(), Principal(t.name, t.role), t) for t in tokens)

    def authenticate(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise ApiError(401, "unauthenticated", "missing bearer token")
        presented = credentials.strip().encode()
        found: tuple[Principal, AdminToken] | None = None
        for token, principal, spec in self._tokens:  # compare against every token: timing says nothing
            if hmac.compare_digest(presented, token):
                found = (principal, spec)
        if found is None:
            raise ApiError(401, "unauthenticated", "invalid bearer token")
        if found[1].expired(utcnow()):
            raise ApiError(401, "unauthenticated", "expired bearer token")
        return found[0]


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
AuthedHandler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]


def requires(role: Role) -> Callable[[AuthedHandler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Decorate a handler: 401 without a valid token, 403 when the token's role is below `role`."""

    def decorate(handler: AuthedHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            principal = request.app[AUTHENTICATOR].authenticate(request)
            if principal.role < role:
                raise ApiError(403, "forbidden", f"this action needs the {role.name} role")
            return await handler(request, principal)

        return checked

    return decorate
