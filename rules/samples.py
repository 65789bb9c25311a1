"""Sampled traffic and user reports, kept for stage 2 within a retention bound (count and age).

What is stored was already redacted of personal data (`rules.pii`) and carries key ids only as HMACs.
Matched harmful spans are stored (a responder may need them, on purpose) with their positions, so that
reads can mask them by default. Two sinks: a JSONL file under the state dir (embedded default) and
Redis Streams trimmed by MAXLEN and MINID (fleet mode).
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import redis.asyncio as redis
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.exceptions import RedisError

from rules.model import utcnow
from rules.store import StoreUnavailable


class SampleMatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule_id: str
    category: str
    severity: str
    action: str
    direction: Literal["input", "output"]
    start: int  # in the stored text of that direction
    end: int


class Sample(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    at: datetime
    request_id: str
    route: str
    model: str | None = None
    key_hash: str | None = None
    tenant: str | None = None
    outcome: str
    status: int
    reason: Literal["matched", "rate", "forensic"]
    input_text: str = ""
    output_text: str = ""
    output_chars: int = 0
    matches: tuple[SampleMatch, ...] = ()


class Report(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    at: datetime
    request_id: str
    category: str
    comment: str | None = None
    sampled: bool = False  # the reported request was sampled (GET /v1/samples?request_id=...)


def new_id(prefix: str) -> str:
    return prefix + os.urandom(8).hex()


class SampleSink(Protocol):
    async def add(self, sample: Sample) -> None: ...

    async def add_report(self, report: Report) -> Report:
        """Store a report, linked to the sample of its request when there is one."""

    async def samples(self, *, limit: int, request_id: str | None = None) -> list[Sample]:
        """Newest first, within retention."""

    async def reports(self, *, limit: int) -> list[Report]: ...

    async def close(self) -> None: ...


_FLUSH_SECONDS = 0.25


class FileSampleSink:
    """Samples in memory (the newest `max_count` within `max_age`) and appended to `samples.jsonl`; the
    file is rewritten to the retained set when it has grown to twice that.

    Samples are written in batches, at most `_FLUSH_SECONDS` after they are added (and on close): one
    thread hand-off per sample cost the gateway about 10 µs of CPU per request at 1 % sampling. A crash
    can lose that last fraction of a second of samples; what is in memory is served at once."""

    def __init__(self, directory: Path, *, max_count: int, max_age: timedelta, name: str = "samples") -> None:
        self._dir = directory
        self._name = name  # one file set per process; the primary also reads the others (workers)
        self._max = max_count
        self._age = max_age
        self._samples: deque[Sample] = deque(maxlen=max_count)
        self._reports: deque[Report] = deque(maxlen=max_count)
        self._lines = 0
        self._lock = asyncio.Lock()
        self._pending: list[bytes] = []
        self._flusher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._samples.extend(_read(self._dir / f"{self._name}.jsonl", Sample))
        self._reports.extend(_read(self._dir / f"{self._name}-reports.jsonl", Report))
        self._lines = len(self._samples)
        self._expire()

    def _expire(self) -> None:
        horizon = utcnow() - self._age
        while self._samples and self._samples[0].at < horizon:
            self._samples.popleft()
        while self._reports and self._reports[0].at < horizon:
            self._reports.popleft()

    async def add(self, sample: Sample) -> None:
        self._samples.append(sample)
        self._expire()
        self._pending.append(sample.model_dump_json().encode() + b"\n")
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            await asyncio.sleep(_FLUSH_SECONDS)
        finally:
            self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        """Write the samples added since the last flush (rewriting the file when it has grown to twice
        the retained set)."""
        async with self._lock:
            if not self._pending:
                return
            lines, self._pending = self._pending, []
            self._lines += len(lines)
            if self._lines > 2 * self._max:
                retained = [s.model_dump_json().encode() + b"\n" for s in self._samples]
                await asyncio.to_thread(self._rewrite, f"{self._name}.jsonl", retained)
                self._lines = len(retained)
            else:
                await asyncio.to_thread(self._append, f"{self._name}.jsonl", b"".join(lines))

    def _rewrite(self, name: str, lines: list[bytes]) -> None:
        path = self._dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(lines))
        os.replace(tmp, path)

    def _append(self, name: str, data: bytes) -> None:
        with open(self._dir / name, "ab") as handle:
            handle.write(data)

    async def add_report(self, report: Report) -> Report:
        async with self._lock:
            sampled = any(s.request_id == report.request_id for s in await self.samples(limit=self._max))
            linked = report.model_copy(update={"sampled": sampled})
            self._reports.append(linked)
            line = linked.model_dump_json().encode() + b"\n"
            await asyncio.to_thread(self._append, f"{self._name}-reports.jsonl", line)
            return linked

    async def samples(self, *, limit: int, request_id: str | None = None) -> list[Sample]:
        self._expire()
        found = list(self._samples)
        for path in self._other_files(".jsonl"):
            found.extend(await asyncio.to_thread(_read, path, Sample))
        horizon = utcnow() - self._age
        found = sorted((s for s in found if s.at >= horizon), key=lambda s: s.at, reverse=True)
        return [s for s in found if request_id is None or s.request_id == request_id][:limit]

    async def reports(self, *, limit: int) -> list[Report]:
        self._expire()
        found = list(self._reports)
        for path in self._other_files("-reports.jsonl"):
            found.extend(await asyncio.to_thread(_read, path, Report))
        horizon = utcnow() - self._age
        return sorted((r for r in found if r.at >= horizon), key=lambda r: r.at, reverse=True)[:limit]

    def _other_files(self, suffix: str) -> list[Path]:
        """Other processes' files (workers on the embedded store)."""
        own = f"{self._name}{suffix}"
        names = [p for p in self._dir.glob(f"samples*{suffix}") if p.name != own]
        if suffix == ".jsonl":
            names = [p for p in names if not p.name.endswith("-reports.jsonl")]
        return sorted(names)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()


def _read(path: Path, model: type[Any]) -> list[Any]:
    if not path.exists():
        return []
    found = []
    for line in path.read_bytes().splitlines():
        try:
            found.append(model.model_validate_json(line))
        except ValidationError:
            continue  # a torn line
    return found


class RedisSampleSink:
    """Samples and reports as Redis Streams, trimmed on every write by count (MAXLEN ~) and age (MINID ~)."""

    def __init__(self, client: redis.Redis, *, prefix: str, max_count: int, max_age: timedelta) -> None:
        self._client = client
        self._samples = prefix + "samples"
        self._reports = prefix + "reports"
        self._max = max_count
        self._age = max_age

    def _min_id(self) -> str:
        return f"{int((utcnow() - self._age).timestamp() * 1000)}-0"

    async def _xadd(self, stream: str, payload: bytes) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(stream, {"d": payload}, maxlen=self._max, approximate=True)
                pipe.xtrim(stream, minid=self._min_id(), approximate=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unreachable ({type(exc).__name__})") from None

    async def add(self, sample: Sample) -> None:
        await self._xadd(self._samples, sample.model_dump_json().encode())
        try:
            ttl = int(self._age.total_seconds())
            await self._client.set(f"{self._samples}:req:{sample.request_id}", sample.id, ex=ttl)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unreachable ({type(exc).__name__})") from None

    async def add_report(self, report: Report) -> Report:
        try:
            sampled = bool(await self._client.exists(f"{self._samples}:req:{report.request_id}"))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unreachable ({type(exc).__name__})") from None
        linked = report.model_copy(update={"sampled": sampled})
        await self._xadd(self._reports, linked.model_dump_json().encode())
        return linked

    async def _read(self, stream: str, limit: int) -> list[bytes]:
        try:
            raw: Any = await self._client.xrevrange(stream, "+", self._min_id(), count=limit)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unreachable ({type(exc).__name__})") from None
        return [fields[b"d"] for _, fields in raw]

    async def samples(self, *, limit: int, request_id: str | None = None) -> list[Sample]:
        rows = await self._read(self._samples, self._max if request_id else limit)
        found = [Sample.model_validate_json(row) for row in rows]
        return [s for s in found if request_id is None or s.request_id == request_id][:limit]

    async def reports(self, *, limit: int) -> list[Report]:
        return [Report.model_validate_json(row) for row in await self._read(self._reports, limit)]

    async def close(self) -> None:
        return None
