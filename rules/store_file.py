"""The embedded policy store: the policy in memory, persisted under the state dir.

Every change appends its audit record (fsync), then replaces `policy.json` by write-then-rename (fsync);
the rename is the commit point. On start, audit records newer than the committed policy (a crash between
the two writes) are dropped, so the audit log never claims a change that did not happen.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import IO

from pydantic import TypeAdapter, ValidationError

from rules.model import AuditEntry, Policy, Rule, utcnow
from rules.store import Listener, Mutation, StoreError

POLICY_FILE = "policy.json"
AUDIT_FILE = "audit.jsonl"
LOCK_FILE = ".lock"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see either the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


_RULES = TypeAdapter(list[Rule])
SERIALIZE_SLICE = 2_000


def serialize_policy(policy: Policy) -> bytes:
    """`policy` as JSON, its rules serialized in slices so that a 100k-rule policy does not hold the GIL
    (and stall the data plane) for the whole dump."""
    head = policy.model_dump_json(exclude={"rules"}).encode()
    rules = policy.rules
    parts = [
        _RULES.dump_json(list(rules[i : i + SERIALIZE_SLICE]))[1:-1] for i in range(0, len(rules), SERIALIZE_SLICE)
    ]
    return head[:-1] + b',"rules":[' + b",".join(p for p in parts if p) + b"]}"


class EmbeddedStore:
    """A `PolicyStore` for one process, persisted to files; the default when no Redis URL is given."""

    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir
        self._policy = Policy()
        self._audit: list[AuditEntry] = []
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self._lock_handle: IO[bytes] | None = None

    async def open(self) -> Policy:
        await asyncio.to_thread(self._load)
        return self._policy

    def _load(self) -> None:
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create state dir {self._dir}: {exc.strerror}") from exc
        handle = open(self._dir / LOCK_FILE, "ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.close()
            raise StoreError(f"state dir {self._dir} is in use by another containment process") from exc
        try:
            policy_path = self._dir / POLICY_FILE
            if policy_path.exists():
                try:
                    self._policy = Policy.model_validate_json(policy_path.read_bytes())
                except ValidationError as exc:
                    raise StoreError(f"{policy_path} is not a valid policy file: {exc.error_count()} errors") from exc
            self._audit = self._load_audit(self._dir / AUDIT_FILE)
        except BaseException:
            handle.close()
            raise
        self._lock_handle = handle

    def _load_audit(self, path: Path) -> list[AuditEntry]:
        if not path.exists():
            return []
        kept: list[AuditEntry] = []
        dropped = False
        for line in path.read_bytes().splitlines():
            try:
                entry = AuditEntry.model_validate_json(line)
            except ValidationError:
                dropped = True  # a torn final line from a crash mid-append
                continue
            if entry.version > self._policy.version:
                dropped = True  # recorded, but the policy write never committed
                continue
            kept.append(entry)
        if dropped:
            write_atomic(path, b"".join(e.model_dump_json().encode() + b"\n" for e in kept))
        return kept

    async def close(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def current(self) -> Policy:
        return self._policy

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def update(self, mutate: Mutation) -> tuple[Policy, AuditEntry]:
        async with self._lock:
            before = self._policy
            proposed, entry = mutate(before)
            now = utcnow()
            policy = proposed.model_copy(update={"version": before.version + 1, "updated_at": now})
            entry = entry.model_copy(update={"version": policy.version, "at": now})
            try:
                await asyncio.to_thread(self._persist, policy, entry)
            except OSError as exc:
                raise StoreError(f"could not persist the policy: {exc.strerror or exc}") from exc
            self._policy = policy
            self._audit.append(entry)
            for listener in self._listeners:
                await listener(policy)
            return policy, entry

    def _persist(self, policy: Policy, entry: AuditEntry) -> None:
        with open(self._dir / AUDIT_FILE, "ab") as handle:
            committed_size = handle.tell()
            try:
                handle.write(entry.model_dump_json().encode() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
                write_atomic(self._dir / POLICY_FILE, serialize_policy(policy))
            except BaseException:
                handle.truncate(committed_size)  # the change did not commit: neither does its record
                raise

    async def audit(self, *, limit: int, before_version: int | None = None) -> list[AuditEntry]:
        entries = self._audit
        if before_version is not None:
            entries = [e for e in entries if e.version < before_version]
        return list(reversed(entries[-limit:])) if limit > 0 else []
