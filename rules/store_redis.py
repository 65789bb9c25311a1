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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as redis
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError

from rules.model import AuditEntry, Policy, Rule, utcnow
from rules.redis_client import connect
from rules.store import Listener, Mutation, NotFound, StoreError, StoreUnavailable, select_audit
from rules.store_file import RULES_ADAPTER, Manifest, policy_from_manifest, serialize_rules, write_atomic

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "{containment}:"
CACHE_MANIFEST = "cache-manifest.json"
CACHE_RULES = "cache-rules.json"
AUDIT_MAXLEN = 1_000_000
WRITE_ATTEMPTS = 8


class _StaleConnection(Exception):
    """A write's first command failed on its connection, before anything of the write was sent."""


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
        try:
            await self.refresh()
        except StoreUnavailable as exc:
            log.warning("Redis unreachable at start (%s); enforcing the cached policy", exc)
            await asyncio.to_thread(self._load_cache)
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
        """Load the newest policy from Redis if this replica is behind; True when it changed."""
        async with self._refresh_lock:
            try:
                raw_version = await self._client.get(self.key("version"))
                version = int(raw_version or 0)
                if version <= self._policy.version:
                    self._up()
                    return False
                raw = await self._client.get(self.key("manifest"))
                if raw is None:
                    self._up()
                    return False
                manifest = Manifest.model_validate_json(raw)
                rules = self._policy.rules
                if manifest.rules_file != self._rules_key:
                    rules = await self._load_rules(manifest.rules_file)
            except (RedisError, OSError) as exc:
                raise self._down(exc) from None
            except ValidationError as exc:
                raise StoreError(f"the policy in Redis is not valid: {exc.error_count()} errors") from exc
            self._up()
            await self._install(policy_from_manifest(manifest, rules), manifest.rules_file)
            return True

    async def _load_rules(self, key: str | None) -> tuple[Rule, ...]:
        if key is None:
            return ()
        blob = await self._client.get(key)
        if blob is None:
            raise StoreError(f"{key} is missing from Redis")
        return tuple(await asyncio.to_thread(RULES_ADAPTER.validate_json, blob))

    async def _install(self, policy: Policy, rules_key: str | None) -> None:
        self._policy = policy
        self._rules_key = rules_key
        for listener in self._listeners:  # enforcement first, the disk cache after
            await listener(policy)
        try:
            await asyncio.to_thread(self._write_cache, policy, rules_key)
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

    def _write_cache(self, policy: Policy, rules_key: str | None) -> None:
        manifest = orjson.loads(policy.model_dump_json(exclude={"rules"}))
        manifest["rules_file"] = rules_key
        previous = self._cache / CACHE_MANIFEST
        old_key = orjson.loads(previous.read_bytes()).get("rules_file") if previous.exists() else "-"
        if rules_key != old_key or not (self._cache / CACHE_RULES).exists():
            write_atomic(self._cache / CACHE_RULES, serialize_rules(policy.rules))
        write_atomic(previous, orjson.dumps(manifest))

    def _load_cache(self) -> None:
        path = self._cache / CACHE_MANIFEST
        if not path.exists():
            log.warning("no cached policy in %s: starting with an empty policy", self._cache)
            return
        manifest = Manifest.model_validate_json(path.read_bytes())
        rules = RULES_ADAPTER.validate_json((self._cache / CACHE_RULES).read_bytes())
        self._policy = policy_from_manifest(manifest, tuple(rules))
        self._rules_key = manifest.rules_file

    # ----- writing -----

    async def update(self, mutate: Mutation) -> tuple[Policy, AuditEntry]:
        async with self._write_lock:
            stale_retried = False
            for _ in range(WRITE_ATTEMPTS):
                try:
                    result = await self._try_update(mutate)
                except WatchError:
                    continue  # another replica wrote first: try again on its policy
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
                policy, entry, rules_key = result
                await self._install(policy, rules_key)
                await self._prune_quietly()
                return policy, entry
            raise StoreUnavailable("the policy kept changing under this write; try again")

    async def _try_update(self, mutate: Mutation) -> tuple[Policy, AuditEntry, str | None]:
        async with self._client.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.key("version"))
            except RedisConnectionError as exc:
                raise _StaleConnection from exc
            version = int(await pipe.get(self.key("version")) or 0)
            reseed = version < self._policy.version  # Redis lost its data: rebuild it from what we enforce
            if reseed:
                log.warning("Redis holds version %s, this replica %s: re-seeding Redis", version, self._policy.version)
                before, before_key = self._policy, None
            else:
                before, before_key = await self._policy_at(version, pipe)
            proposed, entry = mutate(before)
            now = utcnow()
            policy = proposed.model_copy(update={"version": max(version, before.version) + 1, "updated_at": now})
            entry = entry.model_copy(update={"version": policy.version, "at": now})
            rules_changed = reseed or policy.rules is not before.rules
            rules_key = self.key(f"rules:{policy.version}") if rules_changed else before_key
            if not policy.rules:
                rules_key = None
            manifest = orjson.loads(policy.model_dump_json(exclude={"rules"}))
            manifest["rules_file"] = rules_key
            manifest_bytes = orjson.dumps(manifest)
            blob = await asyncio.to_thread(serialize_rules, policy.rules) if rules_changed and rules_key else None
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
        return policy, entry, rules_key

    async def _policy_at(self, version: int, pipe: redis.client.Pipeline) -> tuple[Policy, str | None]:
        if version == self._policy.version:
            return self._policy, self._rules_key
        raw = await pipe.get(self.key("manifest"))
        if raw is None:
            return Policy(version=version), None
        manifest = Manifest.model_validate_json(raw)
        rules = self._policy.rules
        if manifest.rules_file != self._rules_key:
            rules = await self._load_rules(manifest.rules_file)
        return policy_from_manifest(manifest, rules), manifest.rules_file

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
