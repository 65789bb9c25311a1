"""One suite for every PolicyStore: the embedded store and the Redis store behave the same."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from rules.model import AuditEntry, KillSwitch, Policy, RuleSpec, utcnow
from rules.store import NotFound, PolicyStore
from rules.store_file import EmbeddedStore
from rules.store_redis import RedisStore
from tests.redis_server import RedisServer

StoreFactory = Callable[[], Awaitable[PolicyStore]]


def add(pattern: str, incident: str | None = None) -> Callable[[Policy], tuple[Policy, AuditEntry]]:
    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        rule = RuleSpec(pattern=pattern).to_rule(created_by="t", now=utcnow())
        entry = AuditEntry(
            at=utcnow(), actor="t", role="responder", action="rules.add", target=rule.id, incident_id=incident
        )
        return policy.model_copy(update={"rules": policy.rules + (rule,)}), entry

    return mutate


def engage(policy: Policy) -> tuple[Policy, AuditEntry]:
    switch = KillSwitch(scope="global", reason="r", engaged_at=utcnow(), engaged_by="c")
    entry = AuditEntry(at=utcnow(), actor="c", role="commander", action="killswitch.engage", target="global")
    return policy.model_copy(update={"killswitches": {"global": switch}}), entry


@pytest.fixture(params=["embedded", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    opened: list[PolicyStore] = []
    server: RedisServer | None = None
    if request.param == "redis":
        server = RedisServer(tmp_path)
        server.start()

    async def factory() -> PolicyStore:
        store: PolicyStore
        if server is not None:
            store = RedisStore(server.url, cache_dir=tmp_path / "cache", history_versions=3, poll_interval=0.2)
        else:
            store = EmbeddedStore(tmp_path / "state", history_versions=3)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()
    if server is not None:
        server.stop()


async def test_versions_audit_and_listeners(open_store: StoreFactory) -> None:
    store = await open_store()
    seen: list[int] = []

    async def listener(policy: Policy) -> None:
        seen.append(policy.version)

    store.add_listener(listener)
    policy, entry = await store.update(add("one", incident="INC-1"))
    assert policy.version == entry.version == 1 and store.current().version == 1
    await store.update(engage)
    assert seen == [1, 2]
    newest = await store.audit(limit=10)
    assert [e.action for e in newest] == ["killswitch.engage", "rules.add"]
    assert [e.version for e in await store.audit(limit=10, oldest_first=True)] == [1, 2]
    assert [e.version for e in await store.audit(limit=10, incident_id="INC-1")] == [1]
    assert [e.version for e in await store.audit(limit=10, action="killswitch.engage")] == [2]
    assert [e.version for e in await store.audit(limit=10, before_version=2)] == [1]


async def test_a_failing_mutation_changes_nothing(open_store: StoreFactory) -> None:
    store = await open_store()
    await store.update(add("one"))

    def broken(policy: Policy) -> tuple[Policy, AuditEntry]:
        raise ValueError("refused")

    with pytest.raises(ValueError):
        await store.update(broken)
    assert store.current().version == 1 and len(await store.audit(limit=10)) == 1


async def test_history_and_retention(open_store: StoreFactory) -> None:
    store = await open_store()
    await store.update(add("one"))
    await store.update(add("two"))
    await store.update(engage)
    v1 = await store.history(1)
    assert [r.pattern for r in v1.rules] == ["one"] and not v1.killswitches
    v3 = await store.history(3)
    assert [r.pattern for r in v3.rules] == ["one", "two"] and "global" in v3.killswitches
    await store.update(add("three"))
    await store.update(add("four"))
    with pytest.raises(NotFound):
        await store.history(1)


async def test_a_new_store_sees_the_same_policy(open_store: StoreFactory) -> None:
    store = await open_store()
    await store.update(add("one"))
    await store.update(engage)
    await store.close()
    again = await open_store()
    policy = again.current()
    assert policy.version == 2 and [r.pattern for r in policy.rules] == ["one"] and "global" in policy.killswitches
