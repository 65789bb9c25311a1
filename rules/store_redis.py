"""The fleet policy store: Redis is the source of truth; every replica holds the policy in memory.

Keys (all under one hash tag, `{containment}:` by default): `version` (the counter), `manifest` (the
current version without its rules), `rules:<N>` (the rules as version N left them, written only when
rules change), `history:<N>` + the sorted set `history` (manifests kept for rollback), `audit` (a
stream) and the pub/sub channel `changes`.

A change is one optimistic transaction: WATCH `version`, read the policy at that version, apply the
mutation, then MULTI/EXEC the new version, manifest, history, rules, audit record and the PUBLISH; a
concurrent writer makes EXEC fail and the change is retried on the newer policy. Replicas learn of a
change from the channel and, as a safety net, by polling `version` every few seconds.

When Redis cannot be reached the replica keeps its last good policy — also cached on local disk, so a
replica started while Redis is down still enforces it — reports itself unhealthy (`healthy`), refuses
writes with `StoreUnavailable`, and recovers by itself when Redis answers again.

A replica never enforces a policy older than the newest it has seen: it starts from its disk cache, and
when Redis holds less (it lost its data, or was restored from an older copy) the replica re-seeds it, or
merges into it, as described in rules/store_lineage.py, and records the event (`reconciles`, raised as
the `store_reseeded` alert). For `settle_seconds` after a re-seed, so that every replica can add what it
knows, Redis accepts only changes that add restrictions (`StoreResyncing` otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as redis
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError

from rules.model import AuditEntry, Policy, Rule, utcnow
from rules.redis_client import connect
from rules.store import (
    Listener,
    Mutation,
    NotFound,
    StoreError,
    StoreResyncing,
    StoreUnavailable,
    only_tightens,
    select_audit,
)
from rules.store_cache import load_cache, write_cache
from rules.store_file import RULES_ADAPTER, Manifest, policy_from_manifest, serialize_rules
from rules.store_lineage import Reconcile, Relation, new_epoch, plan_reseed, relation

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "{containment}:"
AUDIT_MAXLEN = 1_000_000
WRITE_ATTEMPTS = 8


class _StaleConnection(Exception):
    """A write's first command failed on its connection, before anything of the write was sent."""


class _NeedsReconcile(Exception):
    """Redis holds less than this replica knows: re-seed or merge it before writing."""


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        cache_dir: Path,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 0.5,
        poll_interval: float = 2.0,
        history_versions: int = 200,
        settle_seconds: float | None = None,
    ) -> None:
        self._client = connect(url, timeout=timeout)
        self._url = url
        self._timeout = timeout
        self._prefix = prefix
        self._cache = cache_dir
        self._poll_interval = poll_interval
        self._history_versions = max(1, history_versions)
        self._policy = Policy()
        self._rules_key: str | None = None
        self._epoch = ""
        self._lineage: dict[str, int] = {}
        self._settle = settle_seconds if settle_seconds is not None else max(1.0, 2.5 * poll_interval)
        self._settle_until = 0.0
        self.reconciles: deque[Reconcile] = deque(maxlen=20)  # the latest re-seeds by this replica
        self.reconcile_count = 0
        self._listeners: list[Listener] = []
        self._write_lock = asyncio.Lock()
        self._refresh_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._dropping: asyncio.Task[None] | None = None
        self.healthy = False
        self.last_error: str | None = None

    def key(self, name: str) -> str:
        return self._prefix + name

    @property
    def client(self) -> redis.Redis:
        return self._client

    # ----- life cycle -----

    async def open(self) -> Policy:
        self._cache.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._load_cache)  # the newest policy this replica has seen
        try:
            await self.refresh()
        except StoreUnavailable as exc:
            log.warning("Redis unreachable at start (%s); enforcing the cached policy", exc)
        self._tasks = [asyncio.create_task(self._subscribe()), asyncio.create_task(self._poll())]
        return self._policy

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)  # bounded: a wedged socket must not hang shutdown
        self._tasks = []
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self._client.aclose(), 2)

    def current(self) -> Policy:
        return self._policy

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # ----- health -----

    def _down(self, exc: BaseException) -> StoreUnavailable:
        if self.healthy:
            log.warning("Redis unreachable: %s", exc)
        self.healthy = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._dropping is None or self._dropping.done():
            self._dropping = asyncio.get_running_loop().create_task(self._drop_idle_connections())
        return StoreUnavailable(f"Redis unreachable ({type(exc).__name__})")

    async def _drop_idle_connections(self) -> None:
        """Close the connections idle in the pool: they may have died with Redis, and since the client
        never retries, each would fail one later command once Redis is back (a write refused with 503
        while the replica reports ready). The next command on each connects afresh."""
        with contextlib.suppress(RedisError, OSError):
            await self._client.connection_pool.disconnect(inuse_connections=False)

    def _up(self) -> None:
        if not self.healthy and self.last_error is not None:
            log.info("Redis reachable again")
        self.healthy = True

    # ----- reading -----

    async def refresh(self) -> bool:
        """Load the newest policy from Redis if this replica is behind, or re-seed Redis if it is; True
        when the policy changed."""
        async with self._refresh_lock:
            for _ in range(2):
                try:
                    raw = await self._client.get(self.key("manifest"))
                    manifest = Manifest.model_validate_json(raw) if raw is not None else None
                    found = self._relation(manifest)
                    if found == "same":
                        self._up()
                        return False
                    if found != "ahead" or manifest is None:
                        self._up()
                        if await self._reconcile() is not None:
                            return True
                        continue  # another replica re-seeded first: load what it wrote
                    rules = self._policy.rules
                    if manifest.rules_file != self._rules_key or manifest.epoch != self._epoch:
                        rules = await self._load_rules(manifest.rules_file)
                except (RedisError, OSError) as exc:
                    raise self._down(exc) from None
                except ValidationError as exc:
                    raise StoreError(f"the policy in Redis is not valid: {exc.error_count()} errors") from exc
                self._up()
                await self._install(policy_from_manifest(manifest, rules), manifest)
                return True
            return False

    def _relation(self, manifest: Manifest | None) -> Relation:
        return relation(
            mine=(self._epoch, self._policy.version),
            redis=(manifest.epoch, manifest.version) if manifest is not None else None,
            redis_lineage=manifest.lineage if manifest is not None else {},
        )

    async def _load_rules(self, key: str | None) -> tuple[Rule, ...]:
        if key is None:
            return ()
        blob = await self._client.get(key)
        if blob is None:
            raise StoreError(f"{key} is missing from Redis")
        return tuple(await asyncio.to_thread(RULES_ADAPTER.validate_json, blob))

    async def _install(self, policy: Policy, manifest: Manifest) -> None:
        self._policy = policy
        self._rules_key = manifest.rules_file
        self._epoch = manifest.epoch
        self._lineage = dict(manifest.lineage)
        for listener in self._listeners:  # enforcement first, the disk cache after
            await listener(policy)
        try:
            await asyncio.to_thread(self._write_cache, policy, manifest)
        except OSError as exc:
            log.error("could not write the policy cache in %s: %s", self._cache, exc)

    async def _subscribe(self) -> None:
        backoff = 0.1
        task = asyncio.current_task()
        while task is None or not task.cancelling():  # redis-py may turn a cancellation into an error
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.key("changes"))
                backoff = 0.1
                await self._refresh_quietly()  # anything published while we were away
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._refresh_quietly()
            except (RedisError, OSError) as exc:
                self._down(exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _poll(self) -> None:
        task = asyncio.current_task()
        while task is None or not task.cancelling():
            await asyncio.sleep(self._poll_interval)
            await self._refresh_quietly()

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except StoreError as exc:
            log.debug("refresh failed: %s", exc)

    # ----- the local disk cache -----

    def _write_cache(self, policy: Policy, manifest: Manifest) -> None:
        write_cache(self._cache, policy, manifest)

    def _load_cache(self) -> None:
        loaded = load_cache(self._cache)
        if loaded is not None:
            self._policy, manifest = loaded
            self._rules_key, self._epoch, self._lineage = manifest.rules_file, manifest.epoch, dict(manifest.lineage)

    # ----- writing -----

    async def update(self, mutate: Mutation) -> tuple[Policy, AuditEntry]:
        async with self._write_lock:
            stale_retried = False
            for _ in range(WRITE_ATTEMPTS):
                try:
                    result = await self._try_update(mutate)
                except WatchError:
                    continue  # another replica wrote first: try again on its policy
                except _NeedsReconcile:
                    await self._reconcile()  # Redis lost data: rebuild it first, then write on top
                    continue
                except _StaleConnection as exc:
                    # The transaction's first command found a dead connection (Redis restarted since it
                    # was last used): nothing was sent, so one more try on a fresh connection is safe.
                    if stale_retried:
                        raise self._down(exc.__cause__ or exc) from None
                    stale_retried = True
                    await self._drop_idle_connections()
                    continue
                except (RedisError, OSError) as exc:
                    raise self._down(exc) from None
                self._up()
                policy, entry, manifest = result
                await self._install(policy, manifest)
                await self._prune_quietly()
                return policy, entry
            raise StoreUnavailable("the policy kept changing under this write; try again")

    async def _try_update(self, mutate: Mutation) -> tuple[Policy, AuditEntry, Manifest]:
        async with self._client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.key("version"))
            except RedisConnectionError as exc:
                raise _StaleConnection from exc
            raw = await pipe.get(self.key("manifest"))
            current = Manifest.model_validate_json(raw) if raw is not None else None
            if self._relation(current) not in ("same", "ahead"):
                raise _NeedsReconcile
            if current is None:  # a new fleet: the first write starts its lineage
                before, before_key, epoch, lineage = Policy(), None, new_epoch(), {}
            else:
                before, before_key = await self._policy_at(current)
                epoch, lineage = current.epoch, current.lineage
            proposed, entry = mutate(before)
            if time.monotonic() < self._settle_until and not only_tightens(before, proposed):
                wait = self._settle_until - time.monotonic()
                raise StoreResyncing(
                    f"Redis was re-seeded from this replica's policy {self._settle - wait:.1f}s ago; until every "
                    f"replica has added what it knows (another {wait:.1f}s) only restrictive changes are accepted"
                )
            now = utcnow()
            policy = proposed.model_copy(update={"version": before.version + 1, "updated_at": now})
            entry = entry.model_copy(update={"version": policy.version, "at": now})
            rules_changed = policy.rules is not before.rules
            rules_key = self.key(f"rules:{policy.version}") if rules_changed else before_key
            manifest = self._manifest(policy, rules_key, epoch, lineage)
            await self._commit(pipe, policy, entry, manifest, write_rules=rules_changed)
        return policy, entry, manifest

    def _manifest(self, policy: Policy, rules_key: str | None, epoch: str, lineage: dict[str, int]) -> Manifest:
        fields = policy.model_dump(exclude={"rules"})
        return Manifest.model_validate(
            fields | {"rules_file": rules_key if policy.rules else None, "epoch": epoch, "lineage": lineage}
        )

    async def _commit(
        self, pipe: redis.client.Pipeline, policy: Policy, entry: AuditEntry, manifest: Manifest, *, write_rules: bool
    ) -> None:
        """MULTI/EXEC one version: counter, manifest, history, rules (when they changed), audit, PUBLISH."""
        manifest_bytes = manifest.model_dump_json().encode()
        rules_key = manifest.rules_file
        blob = await asyncio.to_thread(serialize_rules, policy.rules) if write_rules and rules_key else None
        pipe.multi()
        pipe.set(self.key("version"), policy.version)
        pipe.set(self.key("manifest"), manifest_bytes)
        pipe.set(self.key(f"history:{policy.version}"), manifest_bytes)
        pipe.zadd(self.key("history"), {str(policy.version): policy.version})
        if blob is not None and rules_key is not None:
            pipe.set(rules_key, blob)
        pipe.xadd(self.key("audit"), {"e": entry.model_dump_json()}, maxlen=AUDIT_MAXLEN, approximate=True)
        pipe.publish(self.key("changes"), str(policy.version))
        await pipe.execute()

    async def _policy_at(self, manifest: Manifest) -> tuple[Policy, str | None]:
        if (manifest.epoch, manifest.version) == (self._epoch, self._policy.version):
            return self._policy, self._rules_key
        rules = self._policy.rules
        if manifest.rules_file != self._rules_key or manifest.epoch != self._epoch:
            rules = await self._load_rules(manifest.rules_file)
        return policy_from_manifest(manifest, rules), manifest.rules_file

    async def _reconcile(self) -> Reconcile | None:
        """Re-seed Redis from this replica's policy when Redis holds less (rules/store_lineage.py): one
        new version in a new epoch; raised as an alert. None when another replica did it first."""
        for _ in range(WRITE_ATTEMPTS):
            try:
                async with self._client.pipeline(transaction=True) as pipe:
                    await pipe.watch(self.key("version"))
                    raw = await pipe.get(self.key("manifest"))
                    current = Manifest.model_validate_json(raw) if raw is not None else None
                    kind = self._relation(current)
                    if kind in ("same", "ahead"):
                        return None
                    theirs = Policy()
                    if current is not None:
                        theirs = policy_from_manifest(current, await self._load_rules(current.rules_file))
                    plan = plan_reseed(kind, self._policy, (self._epoch, self._lineage), theirs, current)
                    policy, event, entry = plan.policy, plan.event, plan.entry
                    manifest = self._manifest(policy, self.key(f"rules:{policy.version}"), plan.epoch, plan.lineage)
                    await self._commit(pipe, policy, entry, manifest, write_rules=True)
            except WatchError:
                continue
            except (RedisError, OSError) as exc:
                raise self._down(exc) from None
            except ValidationError as exc:
                raise StoreError(f"the policy in Redis is not valid: {exc.error_count()} errors") from exc
            log.warning("policy store re-seeded: %s", event.describe())
            self.reconciles.append(event)
            self.reconcile_count += 1
            self._settle_until = time.monotonic() + self._settle
            await self._install(policy, manifest)
            return event
        raise StoreUnavailable("the policy kept changing while Redis was being re-seeded; try again")

    async def _prune_quietly(self) -> None:
        """Drop history beyond `history_versions`, and rules blobs no kept manifest names."""
        try:
            members: list[Any] = await self._client.zrange(self.key("history"), 0, -1)
            versions = [int(v) for v in members]
            old = versions[: -self._history_versions]
            if not old:
                return
            kept = await self._client.mget([self.key(f"history:{v}") for v in versions[-self._history_versions :]])
            referenced = {orjson.loads(m).get("rules_file") for m in kept if m} | {self._rules_key}
            doomed_rules = {self.key(f"rules:{v}") for v in old} - referenced
            async with self._client.pipeline(transaction=False) as pipe:
                for version in old:
                    pipe.delete(self.key(f"history:{version}"))
                    pipe.zrem(self.key("history"), str(version))
                for key in doomed_rules:
                    pipe.delete(key)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.debug("history prune failed: %s", exc)

    # ----- audit and history -----

    async def audit(
        self,
        *,
        limit: int,
        before_version: int | None = None,
        incident_id: str | None = None,
        action: str | None = None,
        oldest_first: bool = False,
    ) -> list[AuditEntry]:
        if limit <= 0:
            return []
        try:
            raw: Any = await self._client.xrange(self.key("audit"), "-", "+")
        except (RedisError, OSError) as exc:
            raise self._down(exc) from None
        return select_audit(
            (AuditEntry.model_validate_json(fields[b"e"]) for _, fields in raw),
            limit=limit,
            before_version=before_version,
            incident_id=incident_id,
            action=action,
            oldest_first=oldest_first,
        )

    async def record(self, entry: AuditEntry) -> None:
        entry = entry.model_copy(update={"version": self._policy.version})
        try:
            await self._client.xadd(
                self.key("audit"), {"e": entry.model_dump_json()}, maxlen=AUDIT_MAXLEN, approximate=True
            )
        except (RedisError, OSError) as exc:
            raise self._down(exc) from None

    async def history(self, version: int) -> Policy:
        if version == self._policy.version:
            return self._policy
        try:
            raw = await self._client.get(self.key(f"history:{version}"))
            if raw is None:
                raise NotFound(f"policy version {version} is not kept (the last {self._history_versions} are)")
            manifest = Manifest.model_validate_json(raw)
            rules = await self._load_rules(manifest.rules_file)
        except (RedisError, OSError) as exc:
            raise self._down(exc) from None
        return policy_from_manifest(manifest, rules)

    async def ping(self) -> float:
        """Round-trip time to Redis in seconds (raises StoreUnavailable)."""
        started = time.perf_counter()
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise self._down(exc) from None
        self._up()
        return time.perf_counter() - started
