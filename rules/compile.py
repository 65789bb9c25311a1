"""Policy → compiled snapshot: the immutable object the data plane reads on every request.

Building a snapshot is pure and may take seconds for 100k rules, so callers run it off the event loop
and swap one reference when it is done; a failed build leaves the old snapshot in force.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from rules.controls import AccessPolicy, RateLimit, SamplingPolicy
from rules.match import DEFAULT_REGEX_BUDGET, Matcher
from rules.model import KillSwitch, Policy, Rule, RuleSpec, utcnow
from rules.normalize import compact
from rules.regex_safety import regex_problem


class RuleError(ValueError):
    """A rule that cannot be compiled; `index` is its position in the pushed list."""

    def __init__(self, index: int, field: str, reason: str) -> None:
        super().__init__(f"rules[{index}].{field}: {reason}")
        self.index = index
        self.field = field
        self.reason = reason


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class CompiledAccess:
    restricted: bool = False
    allow_keys: frozenset[str] = frozenset()
    allow_tenants: frozenset[str] = frozenset()
    allow_networks: tuple[Network, ...] = ()
    deny_keys: frozenset[str] = frozenset()
    deny_tenants: frozenset[str] = frozenset()
    deny_networks: tuple[Network, ...] = ()

    @property
    def active(self) -> bool:
        return self.restricted or bool(self.deny_keys or self.deny_tenants or self.deny_networks)

    @classmethod
    def build(cls, access: AccessPolicy) -> CompiledAccess:
        def networks(cidrs: list[str]) -> tuple[Network, ...]:
            return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)

        return cls(
            restricted=access.restricted,
            allow_keys=frozenset(access.allow.keys),
            allow_tenants=frozenset(access.allow.tenants),
            allow_networks=networks(access.allow.cidrs),
            deny_keys=frozenset(access.deny.keys),
            deny_tenants=frozenset(access.deny.tenants),
            deny_networks=networks(access.deny.cidrs),
        )


@dataclass(frozen=True, slots=True)
class CompiledLimit:
    """A rate limit with the throttle applied, as GCRA parameters: one request every `interval`
    seconds, `tolerance` seconds of burst. `interval` is infinite when the throttle is 0."""

    key: str  # stable across policy versions while the limit itself is unchanged
    limit: RateLimit
    requests: int  # after the throttle, for the X-RateLimit-Limit header
    interval: float
    tolerance: float

    @classmethod
    def build(cls, limit: RateLimit, throttle: float) -> CompiledLimit:
        key = hashlib.sha256(limit.model_dump_json().encode()).hexdigest()[:12]
        burst = limit.burst or limit.requests
        if throttle <= 0:
            return cls(key, limit, 0, math.inf, 0.0)
        rate = limit.requests * throttle / limit.per_seconds  # requests per second
        burst = max(1, math.floor(burst * throttle))
        interval = 1.0 / rate
        return cls(key, limit, max(1, math.floor(limit.requests * throttle)), interval, interval * (burst - 1))


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    version: int
    compiled_at: datetime
    input: Matcher
    output: Matcher
    killswitches: Mapping[str, KillSwitch] = field(default_factory=lambda: MappingProxyType({}))
    rule_count: int = 0
    access: CompiledAccess = CompiledAccess()
    limits: tuple[CompiledLimit, ...] = ()
    sampling: SamplingPolicy = SamplingPolicy()
    rules: tuple[Rule, ...] = ()  # the rules the matchers were built from (by reference: see `reuse`)


def _applies(rule: Rule, direction: str) -> bool:
    return rule.applies_to in (direction, "both")


def compile_policy(
    policy: Policy,
    *,
    regex_budget: float = DEFAULT_REGEX_BUDGET,
    backend: str = "auto",
    reuse: CompiledPolicy | None = None,
) -> CompiledPolicy:
    """The policy compiled for enforcement. When `reuse` was compiled from the very same rules (the
    stores hand over the same tuple when only kill switches, access lists, limits or sampling changed),
    its matchers are kept: a kill switch must not wait for 100k rules to be rebuilt. A kept matcher may
    hold rules that expired since it was built; the filters check expiry on every hit anyway."""
    now = utcnow()
    if reuse is not None and reuse.rules is policy.rules:
        input_matcher, output_matcher = reuse.input, reuse.output
    else:
        live = [rule for rule in policy.rules if not rule.expired(now)]
        inputs = [r for r in live if _applies(r, "input")]
        outputs = [r for r in live if _applies(r, "output")]
        input_matcher = Matcher(inputs, regex_budget=regex_budget, backend=backend)
        # Rules default to "both": then one matcher serves both directions (half the build time and memory).
        same = len(inputs) == len(outputs) and all(a is b for a, b in zip(inputs, outputs, strict=True))
        output_matcher = input_matcher if same else Matcher(outputs, regex_budget=regex_budget, backend=backend)
    return CompiledPolicy(
        version=policy.version,
        compiled_at=now,
        input=input_matcher,
        output=output_matcher,
        killswitches=MappingProxyType(dict(policy.killswitches)),
        rule_count=len(policy.rules),
        access=CompiledAccess.build(policy.access),
        limits=tuple(CompiledLimit.build(limit, policy.ratelimits.throttle) for limit in policy.ratelimits.limits),
        sampling=policy.sampling,
        rules=policy.rules,
    )


def check_specs(specs: Iterable[RuleSpec], categories: frozenset[str]) -> None:
    """Refuse what validation by type alone cannot see; raises RuleError for the first bad rule."""
    for index, spec in enumerate(specs):
        if not spec.pattern.strip():
            raise RuleError(index, "pattern", "pattern must contain non-whitespace text")
        if spec.category not in categories:
            raise RuleError(index, "category", f"unknown category {spec.category!r}")
        if spec.kind == "regex":
            problem = regex_problem(spec.pattern)
            if problem is not None:
                raise RuleError(index, "pattern", problem)
        elif not compact(spec.pattern):
            raise RuleError(index, "pattern", "pattern has no letters or digits, so it would match nothing")
