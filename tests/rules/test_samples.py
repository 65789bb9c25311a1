"""Sample retention by count and age, in the file sink and in Redis Streams."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import redis.asyncio as redis

from rules.model import utcnow
from rules.redis_client import connect
from rules.samples import FileSampleSink, RedisSampleSink, Report, Sample, new_id
from tests.redis_server import RedisServer


def _sample(request_id: str, *, age: timedelta = timedelta(0)) -> Sample:
    return Sample(
        id=new_id("s_"),
        at=utcnow() - age,
        request_id=request_id,
        route="default",
        outcome="proxied",
        status=200,
        reason="rate",
        input_text="hi",
    )


async def test_file_sink_keeps_the_newest_within_count_and_age(tmp_path: Path) -> None:
    sink = FileSampleSink(tmp_path, max_count=5, max_age=timedelta(hours=1))
    await sink.open()
    await sink.add(_sample("old", age=timedelta(hours=2)))
    for index in range(12):
        await sink.add(_sample(f"r{index}"))
    kept = await sink.samples(limit=100)  # served from memory at once
    assert [s.request_id for s in kept] == ["r11", "r10", "r9", "r8", "r7"]
    await sink.close()  # writes what is still batched
    assert len((tmp_path / "samples.jsonl").read_bytes().splitlines()) <= 10  # compacted on the way
    reopened = FileSampleSink(tmp_path, max_count=5, max_age=timedelta(hours=1))
    await reopened.open()
    assert [s.request_id for s in await reopened.samples(limit=100)] == ["r11", "r10", "r9", "r8", "r7"]


async def test_file_sink_links_reports_and_reads_worker_files(tmp_path: Path) -> None:
    primary = FileSampleSink(tmp_path, max_count=10, max_age=timedelta(hours=1))
    worker = FileSampleSink(tmp_path, max_count=10, max_age=timedelta(hours=1), name="samples-w1")
    await primary.open()
    await worker.open()
    await worker.add(_sample("from-worker"))
    await asyncio.sleep(0.5)  # the worker writes its batch within a quarter of a second
    assert [s.request_id for s in await primary.samples(limit=10)] == ["from-worker"]
    linked = await primary.add_report(Report(id="rep_1", at=utcnow(), request_id="from-worker", category="other"))
    unlinked = await primary.add_report(Report(id="rep_2", at=utcnow(), request_id="nope", category="other"))
    assert linked.sampled and not unlinked.sampled
    assert [r.id for r in await primary.reports(limit=10)] == ["rep_2", "rep_1"]


async def test_redis_sink_trims_by_count_and_age(redis_server: RedisServer) -> None:
    client: redis.Redis = connect(redis_server.url, timeout=1)
    try:
        sink = RedisSampleSink(client, prefix="{t}:", max_count=50, max_age=timedelta(hours=1))
        for index in range(300):
            await sink.add(_sample(f"r{index}"))
        assert await client.xlen("{t}:samples") < 150  # approximate trimming keeps it near the bound
        newest = await sink.samples(limit=3)
        assert [s.request_id for s in newest] == ["r299", "r298", "r297"]
        assert len(await sink.samples(limit=10, request_id="r250")) == 1
        report = await sink.add_report(Report(id="rep", at=utcnow(), request_id="r299", category="other"))
        assert report.sampled
        aged = RedisSampleSink(client, prefix="{t}:", max_count=50, max_age=timedelta(microseconds=1))
        assert await aged.samples(limit=10) == []  # older than the retention age: gone
    finally:
        await client.aclose()
