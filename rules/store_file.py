"""The embedded policy store: the policy in memory, persisted under the state dir.

Layout: `policy.json` is the manifest of the current version (everything but the rules, plus the name
of the rules file); `rules-v<N>.json` holds the rules as version N left them (written only by changes
to the rules, so a kill switch does not rewrite 100k rules); `history/v<N>.json` keeps the manifest of
each of the last `history_versions` versions, for rollback; `audit.jsonl` is the append-only log.

A change appends its audit record (fsync), writes its rules file and history manifest, then replaces
`policy.json` by write-then-rename (fsync): that rename is the commit point. If anything fails, the audit
record is truncated away and memory is untouched, so a failed change changes nothing. On start, audit
records newer than the committed policy (a crash between the writes) are dropped.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO

import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from rules.controls import AccessPolicy, RateLimitPolicy, SamplingPolicy
from rules.model import AuditEntry, KillSwitch, Policy, Rule, utcnow
from rules.store import Listener, Mutation, NotFound, StoreError, select_audit

POLICY_FILE = "policy.json"
AUDIT_FILE = "audit.jsonl"
LOCK_FILE = ".lock"
HISTORY_DIR = "history"
DEFAULT_HISTORY_VERSIONS = 200
SERIALIZE_SLICE = 2_000

log = logging.getLogger(__name__)

RULES_ADAPTER = TypeAdapter(list[Rule])


class Manifest(BaseModel):
    """A policy version without its rules, which live in `rules_file`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    updated_at: datetime | None = None
    rules_file: str | None
    killswitches: dict[str, KillSwitch] = {}
    access: AccessPolicy = AccessPolicy()
    ratelimits: RateLimitPolicy = RateLimitPolicy()
    sampling: SamplingPolicy = SamplingPolicy()
    # Fleet only (rules/store_lineage.py): the lineage this version belongs to, and the versions of the
    # lineages it descends from. The embedded store leaves them empty.
    epoch: str = ""
    lineage: dict[str, int] = {}


def policy_from_manifest(manifest: Manifest, rules: Sequence[Rule]) -> Policy:
    """The policy a manifest describes, with `rules` (already validated) as its rules. A tuple is kept as
    the very same object: a replica whose rules did not change hands the data plane the same tuple, and
    the data plane then keeps its compiled matchers (`rules.compile.compile_policy`)."""
    policy = Policy.model_validate(manifest.model_dump(exclude={"rules_file", "epoch", "lineage"}))
    return policy.model_copy(update={"rules": tuple(rules)})


def materialize(state_dir: Path, manifest: Manifest) -> Policy:
    """The whole policy a manifest in `state_dir` describes (its rules read from their file)."""
    rules: list[Rule] = []
    if manifest.rules_file is not None:
        path = state_dir / manifest.rules_file
        try:
            rules = RULES_ADAPTER.validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise StoreError(f"{path} (rules of version {manifest.version}) cannot be read: {exc}") from exc
    return policy_from_manifest(manifest, rules)


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


def serialize_rules(rules: tuple[Rule, ...]) -> bytes:
    """Rules as a JSON array, serialized in slices so that 100k rules do not hold the GIL (and stall the
    data plane) for the whole dump."""
    parts = [
        RULES_ADAPTER.dump_json(list(rules[i : i + SERIALIZE_SLICE]))[1:-1]
        for i in range(0, len(rules), SERIALIZE_SLICE)
    ]
    return b"[" + b",".join(p for p in parts if p) + b"]"


class EmbeddedStore:
    """A `PolicyStore` for one process, persisted to files; the default when no Redis URL is given."""

    healthy = True  # local files: nothing to lose contact with

    def __init__(self, state_dir: Path, *, history_versions: int = DEFAULT_HISTORY_VERSIONS) -> None:
        self._dir = state_dir
        self._history_versions = max(1, history_versions)
        self._policy = Policy()
        self._rules_file: str | None = None
        self._audit: list[AuditEntry] = []
        self._lock = asyncio.Lock()
        self._listeners: list[Listener] = []
        self._lock_handle: IO[bytes] | None = None

    # ----- loading -----

    async def open(self) -> Policy:
        await asyncio.to_thread(self._load)
        return self._policy

    def _load(self) -> None:
        try:
            (self._dir / HISTORY_DIR).mkdir(parents=True, exist_ok=True)
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
                manifest = self._read_manifest(policy_path)
                self._policy = self._materialize(manifest)
                self._rules_file = manifest.rules_file
            self._audit = self._load_audit(self._dir / AUDIT_FILE)
        except BaseException:
            handle.close()
            raise
        self._lock_handle = handle

    @staticmethod
    def _read_manifest(path: Path) -> Manifest:
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            raise StoreError(f"{path} is not a valid policy manifest: {exc.error_count()} errors") from exc

    def _materialize(self, manifest: Manifest) -> Policy:
        return materialize(self._dir, manifest)

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

    # ----- reading -----

    def current(self) -> Policy:
        return self._policy

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def audit(
        self,
        *,
        limit: int,
        before_version: int | None = None,
        incident_id: str | None = None,
        action: str | None = None,
        oldest_first: bool = False,
    ) -> list[AuditEntry]:
        return select_audit(
            self._audit,
            limit=limit,
            before_version=before_version,
            incident_id=incident_id,
            action=action,
            oldest_first=oldest_first,
        )

    async def record(self, entry: AuditEntry) -> None:
        async with self._lock:
            entry = entry.model_copy(update={"version": self._policy.version})
            line = entry.model_dump_json().encode() + b"\n"

            def append() -> None:
                with open(self._dir / AUDIT_FILE, "ab") as handle:
                    handle.write(line)
                    handle.flush()
                    os.fsync(handle.fileno())

            try:
                await asyncio.to_thread(append)
            except OSError as exc:
                raise StoreError(f"could not write the audit log: {exc.strerror or exc}") from exc
            self._audit.append(entry)

    async def history(self, version: int) -> Policy:
        """The whole policy as it was at `version` (NotFound when that version is no longer kept)."""
        if version == self._policy.version:
            return self._policy
        path = self._dir / HISTORY_DIR / f"v{version}.json"
        if not path.exists():
            raise NotFound(f"policy version {version} is not kept (the last {self._history_versions} are)")
        return await asyncio.to_thread(lambda: self._materialize(self._read_manifest(path)))

    # ----- writing -----

    async def update(self, mutate: Mutation) -> tuple[Policy, AuditEntry]:
        async with self._lock:
            before = self._policy
            proposed, entry = mutate(before)
            now = utcnow()
            policy = proposed.model_copy(update={"version": before.version + 1, "updated_at": now})
            entry = entry.model_copy(update={"version": policy.version, "at": now})
            rules_changed = policy.rules is not before.rules
            rules_file = f"rules-v{policy.version}.json" if rules_changed else self._rules_file
            if not policy.rules:
                rules_file = None
            try:
                await asyncio.to_thread(self._persist, policy, entry, rules_file, rules_changed)
            except OSError as exc:
                raise StoreError(f"could not persist the policy: {exc.strerror or exc}") from exc
            self._policy = policy
            self._rules_file = rules_file
            self._audit.append(entry)
            await asyncio.to_thread(self._prune)
            for listener in self._listeners:
                await listener(policy)
            return policy, entry

    def _manifest_bytes(self, policy: Policy, rules_file: str | None) -> bytes:
        data = orjson.loads(policy.model_dump_json(exclude={"rules"}))
        data["rules_file"] = rules_file
        return orjson.dumps(data)

    def _persist(self, policy: Policy, entry: AuditEntry, rules_file: str | None, rules_changed: bool) -> None:
        written: list[Path] = []
        with open(self._dir / AUDIT_FILE, "ab") as handle:
            committed_size = handle.tell()
            try:
                handle.write(entry.model_dump_json().encode() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
                if rules_changed and rules_file is not None:
                    written.append(self._dir / rules_file)
                    write_atomic(self._dir / rules_file, serialize_rules(policy.rules))
                manifest = self._manifest_bytes(policy, rules_file)
                written.append(self._dir / HISTORY_DIR / f"v{policy.version}.json")
                write_atomic(written[-1], manifest)
                write_atomic(self._dir / POLICY_FILE, manifest)
            except BaseException:
                handle.truncate(committed_size)  # the change did not commit: neither does its record
                for path in written:
                    path.unlink(missing_ok=True)
                raise

    def _prune(self) -> None:
        """Keep the last `history_versions` manifests and the rules files they (or the current) name."""
        history = self._dir / HISTORY_DIR
        versions = sorted(int(p.stem[1:]) for p in history.glob("v*.json") if p.stem[1:].isdigit())
        for version in versions[: -self._history_versions]:
            (history / f"v{version}.json").unlink(missing_ok=True)
        referenced = {self._rules_file}
        for version in versions[-self._history_versions :]:
            try:
                referenced.add(orjson.loads((history / f"v{version}.json").read_bytes()).get("rules_file"))
            except (OSError, orjson.JSONDecodeError):
                continue
        for path in self._dir.glob("rules-v*.json"):
            if path.name not in referenced:
                path.unlink(missing_ok=True)


class FileFollower:
    """A read-only view of an embedded store's state dir, for `--workers`: the worker processes poll
    `policy.json` and load a new version when the primary process (which owns the store) commits one."""

    healthy = True

    def __init__(self, state_dir: Path, *, poll_interval: float = 0.25) -> None:
        self._dir = state_dir
        self._interval = poll_interval
        self._policy = Policy()
        self._rules_file: str | None = None
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> Policy:
        await self.refresh()
        self._task = asyncio.create_task(self._follow())
        return self._policy

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2)

    def current(self) -> Policy:
        return self._policy

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def refresh(self) -> bool:
        path = self._dir / POLICY_FILE
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return False
        manifest = Manifest.model_validate_json(raw)
        if manifest.version <= self._policy.version:
            return False
        if manifest.rules_file == self._rules_file and self._policy.version:  # only controls changed
            self._policy = policy_from_manifest(manifest, self._policy.rules)
        else:
            self._policy = await asyncio.to_thread(materialize, self._dir, manifest)
        self._rules_file = manifest.rules_file
        for listener in self._listeners:
            await listener(self._policy)
        return True

    async def update(self, mutate: Mutation) -> tuple[Policy, AuditEntry]:
        raise StoreError("worker processes are read-only; changes go through the primary's admin API")

    async def audit(
        self,
        *,
        limit: int,
        before_version: int | None = None,
        incident_id: str | None = None,
        action: str | None = None,
        oldest_first: bool = False,
    ) -> list[AuditEntry]:
        raise StoreError("worker processes do not serve the audit log")

    async def history(self, version: int) -> Policy:
        raise StoreError("worker processes do not serve policy history")

    async def record(self, entry: AuditEntry) -> None:
        raise StoreError("worker processes do not write the audit log")

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except (OSError, ValidationError, StoreError) as exc:  # a write in progress, or a bad file
                log.debug("policy follow failed: %s", exc)
