"""The one small protocol every policy store implements, and the errors it raises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import NotRequired, Protocol, TypedDict

from rules.model import AuditEntry, Policy

Mutation = Callable[[Policy], tuple[Policy, AuditEntry]]
"""Takes the current policy and returns the next one (version not yet bumped) with its audit record."""

Listener = Callable[[Policy], Awaitable[None]]


class AuditQuery(TypedDict):
    """The keyword arguments of `PolicyStore.audit`, for a store that passes them on to another."""

    limit: int
    before_version: NotRequired[int | None]
    incident_id: NotRequired[str | None]
    action: NotRequired[str | None]
    oldest_first: NotRequired[bool]


def select_audit(
    entries: Iterable[AuditEntry],
    *,
    limit: int,
    before_version: int | None,
    incident_id: str | None,
    action: str | None,
    oldest_first: bool,
) -> list[AuditEntry]:
    """The audit query every store answers the same way, over entries in the order they were written."""
    if limit <= 0:
        return []
    chosen = [
        e
        for e in entries
        if (before_version is None or e.version < before_version)
        and (incident_id is None or e.incident_id == incident_id)
        and (action is None or e.action == action)
    ]
    return chosen[:limit] if oldest_first else list(reversed(chosen[-limit:]))


class StoreError(Exception):
    """The store could not do what was asked; nothing was changed."""


class StoreUnavailable(StoreError):
    """The backing store cannot be reached; writes are refused rather than lost."""


class StoreResyncing(StoreUnavailable):
    """Redis was just re-seeded or merged (it had lost data): until every replica has had the chance to
    add what it knows, only changes that add restrictions are accepted."""


class NotFound(StoreError):
    """The rule, switch or record named does not exist."""


class Conflict(StoreError):
    """The change contradicts the current policy (for example a duplicate rule id)."""


def only_tightens(before: Policy, after: Policy) -> bool:
    """True when `after` is `before` plus restrictions only: rules appended (none removed or changed, at
    least one of them not `shadow`) and/or kill switches engaged on scopes that had none; access lists,
    rate limits and sampling unchanged. Such a change can be applied locally while the store is down
    (rules/store_journal.py) and can never be lost by a merge (rules/store_lineage.py)."""
    if (before.access, before.ratelimits, before.sampling) != (after.access, after.ratelimits, after.sampling):
        return False
    for scope, switch in before.killswitches.items():
        if after.killswitches.get(scope) != switch:
            return False
    count = len(before.rules)
    if len(after.rules) < count:
        return False
    kept = after.rules[:count]
    if kept is not before.rules and any(a is not b and a != b for a, b in zip(kept, before.rules, strict=True)):
        return False
    added_rules = after.rules[count:]
    added_switches = set(after.killswitches) - set(before.killswitches)
    if not added_rules and not added_switches:
        return False
    return not added_rules or any(rule.action != "shadow" for rule in added_rules)


class PolicyStore(Protocol):
    @property
    def healthy(self) -> bool:
        """False while the backing store cannot be reached (the last good policy stays in force)."""

    async def open(self) -> Policy:
        """Load (or create) the policy; returns it."""

    async def close(self) -> None: ...

    def current(self) -> Policy:
        """The last policy this process has seen (no I/O)."""

    async def update(self, mutate: Mutation) -> tuple[Policy, AuditEntry]:
        """Apply one change atomically: bump the version, persist policy and audit record, notify listeners.

        If `mutate` raises, or persisting fails, nothing changes."""

    async def audit(
        self,
        *,
        limit: int,
        before_version: int | None = None,
        incident_id: str | None = None,
        action: str | None = None,
        oldest_first: bool = False,
    ) -> list[AuditEntry]:
        """Audit records, newest first (or oldest first), optionally only one incident's or action's."""

    async def record(self, entry: AuditEntry) -> None:
        """Append an audit record that changes no policy (a reveal of samples): no new version."""

    async def history(self, version: int) -> Policy:
        """The whole policy as it was at `version`; NotFound when that version is no longer kept."""

    def add_listener(self, listener: Listener) -> None:
        """Awaited with every new policy this process learns of, before `update` returns."""
