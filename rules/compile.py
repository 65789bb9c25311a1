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
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class NetworkSet:
    """CIDRs, looked up by prefix: one set lookup per distinct prefix length among them (at most 33 for
    IPv4, 129 for IPv6) however many networks there are — a responder may deny-list thousands, and a
    linear scan would cost every request ~0.3 µs per network."""

    __slots__ = ("networks", "_v4", "_v6")

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)
        tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for network in self.networks:
            shift = network.max_prefixlen - network.prefixlen
            tables[network.version].setdefault(shift, set()).add(int(network.network_address) >> shift)
        self._v4 = tuple((shift, frozenset(prefixes)) for shift, prefixes in sorted(tables[4].items()))
        self._v6 = tuple((shift, frozenset(prefixes)) for shift, prefixes in sorted(tables[6].items()))

    def __contains__(self, address: IPAddress | None) -> bool:
        if address is None:
            return False
        value = int(address)
        table = self._v4 if address.version == 4 else self._v6
        return any((value >> shift) in prefixes for shift, prefixes in table)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NetworkSet) and self.networks == other.networks

    def __hash__(self) -> int:
        return hash(self.networks)

    def __repr__(self) -> str:
        return f"NetworkSet({[str(network) for network in self.networks]})"


@dataclass(frozen=True, slots=True)
class CompiledAccess:
    restricted: bool = False
    allow_keys: frozenset[str] = frozenset()
    allow_tenants: frozenset[str] = frozenset()
    allow_networks: NetworkSet = NetworkSet()
    deny_keys: frozenset[str] = frozenset()
    deny_tenants: frozenset[str] = frozenset()
    deny_networks: NetworkSet = NetworkSet()

    @property
    def active(self) -> bool:
        return self.restricted or bool(self.deny_keys or self.deny_tenants or self.deny_networks)

    @classmethod
    def build(cls, access: AccessPolicy) -> CompiledAccess:
        def networks(cidrs: list[str]) -> NetworkSet:
            return NetworkSet(ipaddress.ip_network(c, strict=False) for c in cidrs)

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
    # the limit's own fields, read on every request
    subject: str = "global"
    route: str | None = None
    model: str | None = None
    window: float = 60.0

    @classmethod
    def build(cls, limit: RateLimit, throttle: float) -> CompiledLimit:
        key = hashlib.sha256(limit.model_dump_json().encode()).hexdigest()[:12]
        burst = limit.burst or limit.requests
        own = (limit.subject, limit.route, limit.model, limit.per_seconds)
        if throttle <= 0:
            return cls(key, limit, 0, math.inf, 0.0, *own)
        rate = limit.requests * throttle / limit.per_seconds  # requests per second
        burst = max(1, math.floor(burst * throttle))
        interval = 1.0 / rate
        return cls(key, limit, max(1, math.floor(limit.requests * throttle)), interval, interval * (burst - 1), *own)


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
