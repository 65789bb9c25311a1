"""Restrictive changes while the store is down: applied on this replica at once, journaled locally, and
replayed to the store when it returns.

`JournaledStore` wraps the store of the process that serves the admin API (embedded or Redis). When a
change fails because the store cannot take it (Redis down or re-syncing, the state dir read-only or
full) and the change only adds restrictions (`rules.store.only_tightens`: kill switches engaged where
none was, rules pushed of which at least one blocks or redacts), it is applied on top of the store's
policy in this process — the data plane enforces it before the answer goes out — appended to the
journal file (fsync; kept in memory only when that fails too), and replayed to the store, oldest first,
as soon as the store takes writes again. Anything else (a release, access lists, rate limits, a
rollback, a shadow-only push) still needs the store and is refused as before (503).

The policy this process enforces meanwhile is the store's with the pending changes on top, at version
store + pending: each replayed change moves one from the one count to the other, so versions never go
backwards. The answer to a local-only change carries `local_only` (`local_only_answer`: the store
remembers which of the audit entries it returned were local only, since the admin API may call it from
another thread, where a context variable set here would not be seen).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Unpack

from pydantic import BaseModel, ConfigDict, ValidationError

from rules.model import AuditEntry, KillSwitch, Policy, Rule, iso, utcnow
from rules.store import AuditQuery, Listener, Mutation, PolicyStore, StoreError, StoreUnavailable, only_tightens
from rules.store_file import write_atomic

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"


class PendingChange(BaseModel):
    """One restrictive change applied locally and not yet in the store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    killswitches: dict[str, KillSwitch] = {}
    rules: tuple[Rule, ...] = ()
    entry: AuditEntry
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class LocalOnly:
    replicas_not_reached: int
    journal: str  # "disk", or "memory" when the journal file could not be written either
    pending: int
    why: str

    def answer(self) -> dict[str, object]:
        return {
            "message": f"local only, {self.replicas_not_reached} replicas not reached",
            "replicas_not_reached": self.replicas_not_reached,
            "journal": self.journal,
            "pending": self.pending,
            "store_error": self.why,
        }


def local_only_answer(store: object, entry: AuditEntry) -> dict[str, object]:
    """`{"local_only": {...}}` when the change `store.update` returned `entry` for was applied on this
    replica only, else `{}`: merged into the JSON answer of a change."""
    lookup = getattr(store, "local_outcome", None)
    outcome = lookup(entry) if callable(lookup) else None
    return {"local_only": outcome.answer()} if isinstance(outcome, LocalOnly) else {}


def apply_change(policy: Policy, change: PendingChange, now: datetime) -> Policy:
    """`policy` plus the change's kill switches (where none is engaged) and rules (ids it lacks)."""
    switches = dict(policy.killswitches)
    for scope, switch in change.killswitches.items():
        if scope not in switches and switch.active(now):
            switches[scope] = switch
    known = {rule.id for rule in policy.rules} if change.rules else set()
    added = tuple(rule for rule in change.rules if rule.id not in known)
    update: dict[str, object] = {"killswitches": switches}
    if added:
        update["rules"] = policy.rules + added
    return policy.model_copy(update=update)


class JournaledStore:
    """A `PolicyStore` that keeps restrictive changes working while the store it wraps is down."""

    def __init__(
        self, inner: PolicyStore, directory: Path, *, peers: Callable[[], int], retry_seconds: float = 1.0
    ) -> None:
        self._inner = inner
        self._path = directory / JOURNAL_FILE
        self._peers = peers
        self._retry = retry_seconds
        self._pending: list[PendingChange] = []
        self._listeners: list[Listener] = []
        self._lock = asyncio.Lock()
        self._view: tuple[Policy, int, Policy] | None = None  # (store policy, pending count, view)
        self._task: asyncio.Task[None] | None = None
        self.journal_on_disk = True
        self._outcomes: deque[tuple[AuditEntry, LocalOnly]] = deque(maxlen=64)
        inner.add_listener(self._on_store)

    @property
    def healthy(self) -> bool:
        return self._inner.healthy

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def open(self) -> Policy:
        await self._inner.open()
        self._pending = await asyncio.to_thread(self._read_journal)
        if self._pending:
            log.warning("%d restrictive change(s) journaled while the store was down: replaying", len(self._pending))
        self._task = asyncio.create_task(self._replay_loop())
        return self.current()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2)
        await self._inner.close()

    def current(self) -> Policy:
        base, count = self._inner.current(), len(self._pending)
        if self._view is not None and self._view[0] is base and self._view[1] == count:
            return self._view[2]
        view = base
        if count:
            now = utcnow()
            for change in self._pending:
                view = apply_change(view, change, now)
            view = view.model_copy(update={"version": base.version + count})
        self._view = (base, count, view)
        return view

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def _on_store(self, policy: Policy) -> None:
        view = self.current()
        for listener in self._listeners:
            await listener(view)

    def local_outcome(self, entry: AuditEntry) -> LocalOnly | None:
        """How the change that `update` answered with `entry` went, when it was applied locally only."""
        return next((outcome for known, outcome in self._outcomes if known is entry), None)

    async def update(self, mutate: Mutation) -> tuple[Policy, AuditEntry]:
        async with self._lock:
            failure: StoreError | None = None
            if self._pending:
                try:
                    await self._replay()
                except StoreError as exc:
                    failure = exc
            if failure is None:
                try:
                    return await self._inner.update(mutate)
                except StoreUnavailable as exc:
                    failure = exc
                except StoreError as exc:
                    if type(exc) is not StoreError:
                        raise  # NotFound, Conflict: about the change, not the store
                    failure = exc
            return await self._apply_locally(mutate, failure)

    async def _apply_locally(self, mutate: Mutation, failure: StoreError) -> tuple[Policy, AuditEntry]:
        before = self.current()
        after, entry = mutate(before)
        if not (entry.contains and only_tightens(before, after)):
            raise failure
        now = utcnow()
        added = {scope: after.killswitches[scope] for scope in set(after.killswitches) - set(before.killswitches)}
        change = PendingChange(
            killswitches=added,
            rules=after.rules[len(before.rules) :],
            entry=entry.model_copy(update={"at": now}),
            applied_at=now,
        )
        self._pending.append(change)
        on_disk = await self._write_journal()
        view = self.current()
        log.warning("store unavailable (%s): %s applied on this replica only, journaled", failure, entry.action)
        outcome = LocalOnly(max(0, self._peers()), "disk" if on_disk else "memory", len(self._pending), str(failure))
        for listener in self._listeners:
            await listener(view)
        answered = entry.model_copy(update={"version": view.version, "at": now})
        self._outcomes.append((answered, outcome))
        return view, answered

    async def _replay(self) -> None:
        """Replay the pending changes to the store, oldest first (the caller holds the lock)."""
        while self._pending:
            change = self._pending.pop(0)  # out of the count first, so the version handed on stays level
            try:
                await self._inner.update(_replaying(change))
            except BaseException:
                self._pending.insert(0, change)
                self._view = None
                raise
            await self._write_journal()
            log.info("replayed %s (applied locally at %s) to the store", change.entry.action, iso(change.applied_at))

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self._retry)
            if not self._pending or not self._inner.healthy:
                continue
            async with self._lock:
                with contextlib.suppress(StoreError):
                    await self._replay()

    def _read_journal(self) -> list[PendingChange]:
        try:
            lines = self._path.read_bytes().splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error("cannot read the local journal %s: %s", self._path, exc)
            return []
        changes = []
        for line in lines:
            try:
                changes.append(PendingChange.model_validate_json(line))
            except ValidationError:
                log.error("skipping an unreadable line of %s", self._path)
        return changes

    async def _write_journal(self) -> bool:
        data = b"".join(change.model_dump_json().encode() + b"\n" for change in self._pending)
        try:
            if data:
                await asyncio.to_thread(write_atomic, self._path, data)
            else:
                await asyncio.to_thread(self._path.unlink, missing_ok=True)
        except OSError as exc:
            if self.journal_on_disk:
                log.error("cannot write the local journal %s (%s): keeping it in memory", self._path, exc)
            self.journal_on_disk = False
            return False
        self.journal_on_disk = True
        return True

    async def audit(self, **query: Unpack[AuditQuery]) -> list[AuditEntry]:
        return await self._inner.audit(**query)

    async def record(self, entry: AuditEntry) -> None:
        await self._inner.record(entry)

    async def history(self, version: int) -> Policy:
        return await self._inner.history(version)


def _replaying(change: PendingChange) -> Mutation:
    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        after = change.entry.after
        note = {"replayed": True, "applied_locally_at": iso(change.applied_at)}
        annotated = after | note if isinstance(after, dict) else {"change": after, **note}
        return apply_change(policy, change, utcnow()), change.entry.model_copy(update={"after": annotated})

    return mutate
