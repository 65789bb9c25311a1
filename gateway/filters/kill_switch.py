"""Kill switch: refuses every request under an engaged switch before anything else runs.

Checks the most specific scope first (`key:`, `tenant:`, `model:`, `route:`, then `global`); the first
engaged, unexpired switch answers: mode `reject` with 503 `service_suspended` and `Retry-After`, mode
`canned` with an OpenAI-shaped completion carrying the switch's message (streamed if the request
streams). Runs first. Fails closed: an error here refuses the request (the chain runner answers 503).

A switch engaged while answers are already streaming cuts those in its scope too (`running_streams`
"cut", the default; "finish" lets them end): the proxy calls `cutting_switch` whenever a running
stream sees a new policy snapshot (gateway/proxy.py).
"""

from __future__ import annotations

import math

from gateway.canned import canned_reply
from gateway.context import RequestContext
from gateway.verdict import CONTINUE, Refusal, Reply, Verdict
from rules.compile import CompiledPolicy
from rules.model import KillSwitch, utcnow

DEFAULT_RETRY_AFTER = 300


class KillSwitchFilter:
    name = "kill_switch"

    def on_request(self, ctx: RequestContext) -> Verdict:
        switches = ctx.snapshot.killswitches
        if not switches:
            return CONTINUE
        for scope in self._scopes(ctx):
            switch = switches.get(scope)
            if switch is not None and switch.active(ctx.now):
                return self.refuse(switch, ctx)
        return CONTINUE

    @staticmethod
    def cutting_switch(ctx: RequestContext, snapshot: CompiledPolicy) -> KillSwitch | None:
        """The engaged switch in `snapshot` that must cut the request's running answer, if any: in
        the request's scope, unexpired, and not letting running streams finish."""
        switches = snapshot.killswitches
        if not switches:
            return None
        now = utcnow()
        for scope in KillSwitchFilter._scopes(ctx):
            switch = switches.get(scope)
            if switch is not None and switch.running_streams == "cut" and switch.active(now):
                return switch
        return None

    @staticmethod
    def _scopes(ctx: RequestContext) -> list[str]:
        scopes = []
        if ctx.identity.key_id is not None:
            scopes.append(f"key:{ctx.identity.key_id}")
        if ctx.identity.tenant is not None:
            scopes.append(f"tenant:{ctx.identity.tenant}")
        if ctx.model is not None:
            scopes.append(f"model:{ctx.model}")
        scopes.append(f"route:{ctx.route.name}")
        scopes.append("global")
        return scopes

    @staticmethod
    def refuse(switch: KillSwitch, ctx: RequestContext) -> Refusal | Reply:
        if switch.mode == "canned":
            return canned_reply(ctx, switch.message)
        retry_after = DEFAULT_RETRY_AFTER
        if switch.expires_at is not None:
            retry_after = max(1, math.ceil((switch.expires_at - ctx.now).total_seconds()))
        return Refusal(
            status=503,
            code="service_suspended",
            type="service_unavailable",
            message=switch.message or "This service is temporarily suspended.",
            action="kill_switch",
            extra={"scope": switch.scope},
            headers={"Retry-After": str(retry_after)},
        )
