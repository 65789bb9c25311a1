"""Typed policy data: rules, kill switches and the whole policy, validated at the edges with pydantic."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from rules.controls import AccessPolicy, RateLimitPolicy, SamplingPolicy

Kind = Literal["literal", "regex"]
Direction = Literal["input", "output", "both"]
Action = Literal["block", "redact", "shadow"]
Severity = Literal["low", "medium", "high", "critical"]
Stage = Literal[1, 2, 3]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
ShortText = Annotated[str, Field(max_length=2000)]

MAX_PATTERN_CHARS = 4096
MAX_REASON_BYTES = 1024
SCOPE_PATTERN = re.compile(r"^(global|(route|model|tenant|key):[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127})$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """A UTC timestamp as the API writes them everywhere: `2026-01-01T00:00:00.000000Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def new_rule_id() -> str:
    return "r_" + os.urandom(8).hex()


def capped_reason(value: str) -> str:
    """A change's reason is for the audit log, not a payload: at most 1 KiB of UTF-8."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_REASON_BYTES:
        raise ValueError(f"at most {MAX_REASON_BYTES} bytes (1 KiB) of UTF-8; this one has {size}")
    return value


Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON_BYTES), AfterValidator(capped_reason)]


def not_past(value: datetime | None) -> datetime | None:
    if value is not None and value <= utcnow():
        raise ValueError(f"{iso(value)} has already passed: a rule that has expired would never match")
    return value


class Scope(BaseModel):
    """Where a rule applies; an absent or empty list means everywhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: list[Name] | None = None
    models: list[Name] | None = None
    tenants: list[Name] | None = None


class RuleSpec(BaseModel):
    """A rule as a responder pushes it. Unknown fields are refused so that a typo never weakens a rule."""

    model_config = ConfigDict(extra="forbid")

    id: Name | None = None
    pattern: Annotated[str, Field(min_length=1, max_length=MAX_PATTERN_CHARS)]
    kind: Kind = "literal"
    applies_to: Direction = "both"
    action: Action = "block"
    category: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")] = "other"
    severity: Severity = "medium"
    stage: Stage = 1
    incident_id: Name | None = None
    owner: Annotated[str, Field(max_length=200)] | None = None
    note: ShortText | None = None
    word_boundary: bool = False
    scope: Scope | None = None
    expires_at: AwareDatetime | None = None  # a naive time would be read differently per replica
    ttl_seconds: Annotated[int, Field(gt=0, le=10 * 365 * 86400)] | None = None

    _expires = field_validator("expires_at")(not_past)

    @model_validator(mode="after")
    def _one_expiry(self) -> RuleSpec:
        if self.expires_at is not None and self.ttl_seconds is not None:
            raise ValueError("give expires_at or ttl_seconds, not both")
        return self

    def to_rule(self, *, created_by: str, now: datetime) -> Rule:
        return to_rules([self], created_by=created_by, now=now)[0]


class Rule(BaseModel):
    """A rule as stored: ids, expiry and provenance filled in by the server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    pattern: str
    kind: Kind
    applies_to: Direction
    action: Action
    category: str
    severity: Severity
    stage: Stage
    incident_id: str | None = None
    owner: str | None = None
    note: str | None = None
    word_boundary: bool = False
    scope: Scope | None = None
    expires_at: datetime | None = None
    created_at: datetime
    created_by: str

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class RulePatch(BaseModel):
    """Body of `PATCH /v1/rules/{id}`: promote (shadow → block), renew, re-scope, re-file. The pattern
    and kind of a rule never change: a different pattern is a different rule."""

    model_config = ConfigDict(extra="forbid")

    reason: Reason
    action: Action | None = None
    applies_to: Direction | None = None
    category: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")] | None = None
    severity: Severity | None = None
    stage: Stage | None = None
    incident_id: Name | None = None
    owner: Annotated[str, Field(max_length=200)] | None = None
    note: ShortText | None = None
    word_boundary: bool | None = None
    scope: Scope | None = None
    expires_at: AwareDatetime | None = None
    ttl_seconds: Annotated[int, Field(gt=0, le=10 * 365 * 86400)] | None = None

    @model_validator(mode="after")
    def _one_expiry(self) -> RulePatch:
        if "expires_at" in self.model_fields_set and self.ttl_seconds is not None:
            raise ValueError("give expires_at or ttl_seconds, not both")
        return self

    def apply(self, rule: Rule, now: datetime) -> Rule:
        changes = {
            name: getattr(self, name)
            for name in self.model_fields_set
            if name not in ("reason", "ttl_seconds", "expires_at")
        }
        for name in ("action", "applies_to", "category", "severity", "stage", "word_boundary"):
            if name in changes and changes[name] is None:
                del changes[name]  # these cannot be unset, only changed
        if self.ttl_seconds is not None:
            changes["expires_at"] = now + timedelta(seconds=self.ttl_seconds)
        elif "expires_at" in self.model_fields_set:
            changes["expires_at"] = self.expires_at  # None: never expires
        return rule.model_copy(update=changes)


KillMode = Literal["reject", "canned"]
# What an engaged switch does to answers already streaming in its scope: cut them (the default), or let
# them finish (only new requests are refused).
RunningStreams = Literal["cut", "finish"]


class KillSwitchSpec(BaseModel):
    """Body of `PUT /v1/killswitches/{scope}`. Mode `canned` answers with `message` as the model's reply."""

    model_config = ConfigDict(extra="forbid")

    engaged: bool
    reason: Reason
    mode: KillMode = "reject"
    message: ShortText | None = None
    ttl_seconds: Annotated[int, Field(gt=0, le=30 * 86400)] | None = None
    incident_id: Name | None = None
    running_streams: RunningStreams = "cut"


class KillSwitch(BaseModel):
    """An engaged kill switch as stored. A released switch is removed from the policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: str
    mode: KillMode = "reject"
    message: str | None = None
    reason: str
    engaged_at: datetime
    engaged_by: str
    expires_at: datetime | None = None
    incident_id: str | None = None
    running_streams: RunningStreams = "cut"

    def active(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


class Policy(BaseModel):
    """Everything a responder can push, at one version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 0
    updated_at: datetime | None = None
    rules: tuple[Rule, ...] = ()
    killswitches: dict[str, KillSwitch] = Field(default_factory=dict)
    access: AccessPolicy = AccessPolicy()
    ratelimits: RateLimitPolicy = RateLimitPolicy()
    sampling: SamplingPolicy = SamplingPolicy()


class AuditEntry(BaseModel):
    """One append-only audit record: who changed what, when, why, and what it was before and after."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime
    actor: str
    role: str
    action: str
    target: str
    reason: str | None = None
    version: int = 0
    incident_id: str | None = None
    contains: bool = False  # the change restricts traffic (counts as containment for its incident)
    before: object = None
    after: object = None


def valid_scope(scope: str) -> bool:
    return SCOPE_PATTERN.match(scope) is not None


_RULES = TypeAdapter(list[Rule])
BUILD_SLICE = 2_000


def to_rules(specs: Sequence[RuleSpec], *, created_by: str, now: datetime) -> list[Rule]:
    """Stored rules from pushed specs: ids, expiry and provenance filled in. Validated by pydantic-core
    in slices (fast, and the GIL is released between slices so a 100k push does not stall traffic)."""
    rows: list[dict[str, object]] = []
    for spec in specs:
        row = dict(spec.__dict__)
        ttl = row.pop("ttl_seconds")
        if ttl is not None:
            row["expires_at"] = now + timedelta(seconds=ttl)
        row["id"] = spec.id or new_rule_id()
        row["created_at"] = now
        row["created_by"] = created_by
        rows.append(row)
    built: list[Rule] = []
    for begin in range(0, len(rows), BUILD_SLICE):
        built.extend(_RULES.validate_python(rows[begin : begin + BUILD_SLICE]))
    return built
