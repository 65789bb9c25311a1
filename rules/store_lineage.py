"""Fleet policy lineages: how a replica tells that Redis lost data, and how Redis is rebuilt from the
newest policy any replica knows without lifting a restriction.

Every version written to Redis belongs to an *epoch* (a lineage id, made when a replica re-seeds or
merges Redis) and carries `lineage`: for each earlier epoch it descends from, the newest version of
that epoch it includes. A replica that knows version N of epoch E compares it with Redis:

| Redis holds | relation | the replica |
|---|---|---|
| nothing, and the replica knows a version | `empty` | re-seeds Redis from its policy |
| epoch E, a higher version | `ahead` | loads it |
| epoch E, version N | `same` | — |
| epoch E, a lower version (restored from an older copy) | `behind` | re-seeds Redis from its policy |
| another epoch whose lineage has E at N or later | `ahead` | loads it |
| another epoch that does not include (E, N) | `diverged` | merges (below) |

A merge keeps the newer side and adds every engaged kill switch and every rule of the other side that
it lacks.

A re-seed or a merge is one new version, one above both sides, in a new epoch: versions never go
backwards, and a replica never installs a policy older than the newest it has seen (its disk cache
included). A merge only adds restrictions: a release that only one side saw is undone (fail closed),
and the audit record of the merge lists what it brought back.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rules.model import AuditEntry, Policy, utcnow
from rules.store_file import Manifest

Relation = Literal["empty", "ahead", "same", "behind", "diverged"]
LINEAGE_KEPT = 100  # epochs remembered in a lineage (re-seeds are rare events)


def new_epoch() -> str:
    return f"{int(time.time())}-{os.urandom(4).hex()}"


def relation(
    *,
    mine: tuple[str, int],
    redis: tuple[str, int] | None,
    redis_lineage: dict[str, int],
) -> Relation:
    """How Redis's (epoch, version) — None when Redis holds no policy — stands to this replica's."""
    epoch, version = mine
    if redis is None:
        return "empty" if version > 0 else "same"
    redis_epoch, redis_version = redis
    if version == 0:
        return "ahead" if redis_version > 0 else "same"
    if redis_epoch == epoch:
        if redis_version > version:
            return "ahead"
        return "same" if redis_version == version else "behind"
    if redis_lineage.get(epoch, -1) >= version and redis_version > version:
        return "ahead"
    return "diverged"


def merge_lineage(*parts: dict[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in parts:
        for epoch, version in part.items():
            merged[epoch] = max(version, merged.get(epoch, -1))
    newest = sorted(merged.items(), key=lambda item: item[1])[-LINEAGE_KEPT:]
    return dict(newest)


def union_restrictions(base: Policy, other: Policy, now: datetime) -> tuple[Policy, list[str]]:
    """`base` plus the engaged kill switches and the rules of `other` that `base` lacks; and what was added."""
    added: list[str] = []
    switches = dict(base.killswitches)
    for scope, switch in other.killswitches.items():
        if scope not in switches and switch.active(now):
            switches[scope] = switch
            added.append(f"killswitch {scope}")
    known = {rule.id for rule in base.rules}
    extra = tuple(rule for rule in other.rules if rule.id not in known)
    added.extend(f"rule {rule.id}" for rule in extra[:1000])
    if len(extra) > 1000:
        added.append(f"... {len(extra) - 1000} more rules")
    update: dict[str, object] = {"killswitches": switches}
    if extra:
        update["rules"] = base.rules + extra
    return base.model_copy(update=update), added


@dataclass(frozen=True, slots=True)
class Reconcile:
    """One re-seed or merge of Redis by this replica: raised as the `store_reseeded` alert."""

    at: datetime
    kind: Relation
    redis_version: int
    local_version: int
    version: int
    merged: tuple[str, ...]

    def describe(self) -> str:
        what = {
            "empty": "Redis held no policy",
            "behind": "Redis held an older version of this lineage",
            "diverged": "Redis held a policy written without this replica's newer one",
        }.get(self.kind, self.kind)
        text = (
            f"{what} (Redis version {self.redis_version}, this replica {self.local_version}): "
            f"re-seeded as version {self.version}"
        )
        if self.merged:
            text += f"; restrictions merged in: {', '.join(self.merged[:10])}"
            if len(self.merged) > 10:
                text += f" and {len(self.merged) - 10} more"
        return text


@dataclass(frozen=True, slots=True)
class ReseedPlan:
    policy: Policy
    epoch: str
    lineage: dict[str, int]
    event: Reconcile
    entry: AuditEntry


def plan_reseed(
    kind: Relation, mine: Policy, known: tuple[str, dict[str, int]], theirs: Policy, current: Manifest | None
) -> ReseedPlan:
    """What a replica writes to a Redis that holds less than it knows (`theirs`, described by `current`):
    its own policy (merged with `theirs` when they diverged), one version above both, in a new epoch."""
    now = utcnow()
    my_epoch, my_lineage = known
    merged: list[str] = []
    policy = mine
    if kind == "diverged":
        base, other = (theirs, mine) if theirs.version > mine.version else (mine, theirs)
        policy, merged = union_restrictions(base, other, now)
    version = max(theirs.version, mine.version) + 1
    policy = policy.model_copy(update={"version": version, "updated_at": now})
    epoch = new_epoch()
    lineage = merge_lineage(
        my_lineage,
        current.lineage if current is not None else {},
        {my_epoch: mine.version},
        {current.epoch: current.version} if current is not None else {},
    )
    event = Reconcile(now, kind, theirs.version, mine.version, version, tuple(merged))
    entry = AuditEntry(
        at=now,
        actor="containment",
        role="system",
        action="policy.reseed",
        target=f"version {version}",
        reason=event.describe(),
        version=version,
        contains=bool(merged),
        before={"redis_version": theirs.version, "redis_epoch": current.epoch if current is not None else None},
        after={"from_version": mine.version, "epoch": epoch, "relation": kind, "merged": merged},
    )
    return ReseedPlan(policy, epoch, lineage, event, entry)
