"""The other first-hour levers as policy data: access lists and rate limits."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

KEY_ID_PATTERN = r"^[0-9a-f]{16}$"
KeyId = Annotated[str, Field(pattern=KEY_ID_PATTERN)]
TenantName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")]
MAX_LIST_ENTRIES = 10_000


class AccessList(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: Annotated[list[KeyId], Field(max_length=MAX_LIST_ENTRIES)] = []
    tenants: Annotated[list[TenantName], Field(max_length=MAX_LIST_ENTRIES)] = []
    cidrs: Annotated[list[str], Field(max_length=MAX_LIST_ENTRIES)] = []

    @field_validator("cidrs")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        out = []
        for value in values:
            try:
                out.append(str(ipaddress.ip_network(value.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address or CIDR") from None
        return out

    def empty(self) -> bool:
        return not (self.keys or self.tenants or self.cidrs)


class AccessPolicy(BaseModel):
    """`restricted`: only callers on the allow list get through. The deny list applies always."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    restricted: bool = False
    allow: AccessList = AccessList()
    deny: AccessList = AccessList()

    def restricts(self) -> bool:
        return self.restricted or not self.deny.empty()


class AccessSpec(AccessPolicy):
    """Body of `PUT /v1/access`."""

    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    incident_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")] | None = None

    def to_policy(self) -> AccessPolicy:
        return AccessPolicy(restricted=self.restricted, allow=self.allow, deny=self.deny)


Subject = Literal["key", "tenant", "ip", "global"]


class RateLimit(BaseModel):
    """`requests` per `per_seconds` for each subject (each key, tenant, IP, or all traffic), optionally
    only on one route or model; up to `burst` requests at once (default: `requests`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: Subject
    route: TenantName | None = None
    model: TenantName | None = None
    requests: Annotated[int, Field(gt=0, le=10_000_000)]
    per_seconds: Annotated[float, Field(gt=0, le=86_400)]
    burst: Annotated[int, Field(gt=0, le=10_000_000)] | None = None


class RateLimitPolicy(BaseModel):
    """`throttle` (0–1) scales every limit at once: 0.5 halves them all; 0 admits nothing they cover."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limits: Annotated[list[RateLimit], Field(max_length=1000)] = []
    throttle: Annotated[float, Field(ge=0, le=1)] = 1.0


class RateLimitSpec(RateLimitPolicy):
    """Body of `PUT /v1/ratelimits`."""

    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    incident_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")] | None = None

    def to_policy(self) -> RateLimitPolicy:
        return RateLimitPolicy(limits=self.limits, throttle=self.throttle)


class SamplingPolicy(BaseModel):
    """Forensic mode: a higher sample rate for a bounded time, set by a commander (audited)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    forensic_rate: Annotated[float, Field(gt=0, le=1)] | None = None
    forensic_until: datetime | None = None
    reason: str | None = None
    set_by: str | None = None

    def forensic(self, now: datetime) -> float | None:
        if self.forensic_rate is None or self.forensic_until is None or self.forensic_until <= now:
            return None
        return self.forensic_rate


class ForensicSpec(BaseModel):
    """Body of `PUT /v1/sampling/forensic`: `rate` 0 (or `ttl_seconds` 0) ends forensic mode."""

    model_config = ConfigDict(extra="forbid")

    rate: Annotated[float, Field(ge=0, le=1)]
    ttl_seconds: Annotated[int, Field(ge=0, le=30 * 86400)]
    reason: Annotated[str, Field(min_length=1, max_length=2000)]
    incident_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")] | None = None
