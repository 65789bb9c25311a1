"""Access restriction: deny-listed callers are refused; in `restricted` mode only allow-listed ones pass.

Runs after the kill switch, before rate limiting. Callers are matched by key id, tenant (mapped from
the key id by config) and client IP (the socket peer, or X-Forwarded-For through trusted proxies).
Answers 403 `access_restricted`. Fails closed (the chain runner answers 503).
"""

from __future__ import annotations

from gateway.context import RequestContext
from gateway.verdict import CONTINUE, Refusal, Verdict
from rules.compile import CompiledAccess

REFUSED = Refusal(
    status=403,
    code="access_restricted",
    type="permission_error",
    message="Access to this service is restricted.",
    action="access_restricted",
)


class AccessFilter:
    name = "access"

    def on_request(self, ctx: RequestContext) -> Verdict:
        access: CompiledAccess = ctx.snapshot.access
        if not access.active:
            return CONTINUE
        identity = ctx.identity
        if (
            (identity.key_id is not None and identity.key_id in access.deny_keys)
            or (identity.tenant is not None and identity.tenant in access.deny_tenants)
            or identity.ip in access.deny_networks
        ):
            return REFUSED
        if access.restricted and not (
            (identity.key_id is not None and identity.key_id in access.allow_keys)
            or (identity.tenant is not None and identity.tenant in access.allow_tenants)
            or identity.ip in access.allow_networks
        ):
            return REFUSED
        return CONTINUE
