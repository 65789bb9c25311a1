"""Watch periods: every rule's hits over time (hourly buckets since it was created, and the last hit),
so that a stage can be closed on evidence. Counted in memory by each data plane and flushed every few
seconds: to a JSON file in the state dir (embedded) or to Redis hashes (fleet: one count for all)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from rules.model import iso
from rules.store_file import write_atomic

log = logging.getLogger(__name__)
INTERVAL = 3600


def _bucket(at: datetime) -> int:
    return int(at.timestamp()) // INTERVAL * INTERVAL


class HitCounter(Protocol):
    def hit(self, rule_id: str, at: datetime) -> None: ...

    async def flush(self) -> None: ...

    async def history(self, rule_id: str) -> tuple[dict[int, int], datetime | None]:
        """Hits per hour (bucket start in epoch seconds) and the last hit."""


def describe(buckets: dict[int, int], last: datetime | None, since: datetime) -> dict[str, object]:
    """The watch-period view of a rule: every hour since `since`, zeros included."""
    start, end = _bucket(since), _bucket(datetime.now(UTC))
    series = [
        {"start": iso(datetime.fromtimestamp(b, UTC)), "count": buckets.get(b, 0)}
        for b in range(start, end + INTERVAL, INTERVAL)
    ][-24 * 30 :]  # at most 30 days of hours
    return {
        "interval_seconds": INTERVAL,
        "total": sum(buckets.values()),
        "last_hit_at": iso(last) if last else None,
        "buckets": series,
    }


class FileHits:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._counts: dict[str, dict[int, int]] = defaultdict(dict)
        self._last: dict[str, datetime] = {}
        self._dirty = False

    def load(self) -> None:
        if not self._path.exists():
            return
        try:
            data = orjson.loads(self._path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("ignoring unreadable %s: %s", self._path, exc)
            return
        for rule_id, entry in data.items():
            self._counts[rule_id] = {int(k): int(v) for k, v in entry["buckets"].items()}
            if entry.get("last"):
                self._last[rule_id] = datetime.fromisoformat(entry["last"])

    def hit(self, rule_id: str, at: datetime) -> None:
        buckets = self._counts[rule_id]
        key = _bucket(at)
        buckets[key] = buckets.get(key, 0) + 1
        self._last[rule_id] = at
        self._dirty = True

    async def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        data = {
            rule_id: {"buckets": {str(k): v for k, v in buckets.items()}, "last": iso(self._last[rule_id])}
            for rule_id, buckets in self._counts.items()
            if rule_id in self._last
        }
        await asyncio.to_thread(write_atomic, self._path, orjson.dumps(data))

    async def history(self, rule_id: str) -> tuple[dict[int, int], datetime | None]:
        buckets = dict(self._counts.get(rule_id, {}))
        last = self._last.get(rule_id)
        for path in self._path.parent.glob("hits*.json"):  # worker processes' counts, if any
            if path == self._path:
                continue
            other = FileHits(path)
            await asyncio.to_thread(other.load)
            for bucket, count in other._counts.get(rule_id, {}).items():
                buckets[bucket] = buckets.get(bucket, 0) + count
            other_last = other._last.get(rule_id)
            if other_last is not None and (last is None or other_last > last):
                last = other_last
        return buckets, last


class RedisHits:
    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._pending: dict[tuple[str, int], int] = defaultdict(int)
        self._last: dict[str, datetime] = {}

    def hit(self, rule_id: str, at: datetime) -> None:
        self._pending[(rule_id, _bucket(at))] += 1
        self._last[rule_id] = at

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, defaultdict(int)
        last, self._last = self._last, {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for (rule_id, bucket), count in pending.items():
                    pipe.hincrby(f"{self._prefix}hits:{rule_id}", str(bucket), count)
                for rule_id, at in last.items():
                    pipe.hset(f"{self._prefix}hits-last", rule_id, iso(at))
                await pipe.execute()
        except (RedisError, OSError) as exc:  # keep the counts for the next flush
            for key, count in pending.items():
                self._pending[key] += count
            for rule_id, at in last.items():
                self._last.setdefault(rule_id, at)
            log.debug("hit flush failed: %s", exc)

    async def history(self, rule_id: str) -> tuple[dict[int, int], datetime | None]:
        await self.flush()
        raw: Any = await self._client.hgetall(f"{self._prefix}hits:{rule_id}")
        last: Any = await self._client.hget(f"{self._prefix}hits-last", rule_id)
        buckets = {int(k): int(v) for k, v in raw.items()}
        return buckets, datetime.fromisoformat(last.decode().replace("Z", "+00:00")) if last else None
