"""Anomaly alerts: the last WINDOW of traffic against a rolling baseline of the BASELINE before it.

Per-minute buckets of requests, blocks, answer lengths, user reports and upstream classifier flags.
An alert opens when the window differs from the baseline by the thresholds below (and there is enough
traffic on both sides to tell), stays open while it does, and says what, since when, baseline vs now.

| kind | opens when |
|---|---|
| `block_rate` | the share of requests blocked is over 3× the baseline's and 5 points above it |
| `output_length` | the mean answer length is over 2× or under ½ the baseline's |
| `report_volume` | user reports per minute are over 3× the baseline's + 1, and at least 5 came in |
| `classifier_score` | the share of answers the upstream's content filter flagged (severity medium or
  high, or filtered) is over 3× the baseline's and 5 points above it |

Other parts of the process raise alerts of their own with `raise_alert` (`store_reseeded`: Redis held
less than this replica knew and was re-seeded from it, see rules/store_lineage.py); such an alert stays
open for `RAISED_HOLD` seconds after it was last raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

WINDOW = 5 * 60
BASELINE = 60 * 60
MIN_REQUESTS = 20
MIN_REPORTS = 5
RAISED_HOLD = 60 * 60


@dataclass(slots=True)
class _Minute:
    requests: int = 0
    blocks: int = 0
    answers: int = 0
    answer_chars: int = 0
    reports: int = 0
    scored: int = 0
    flagged: int = 0

    def add(self, other: _Minute) -> None:
        self.requests += other.requests
        self.blocks += other.blocks
        self.answers += other.answers
        self.answer_chars += other.answer_chars
        self.reports += other.reports
        self.scored += other.scored
        self.flagged += other.flagged


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    what: str
    since: datetime
    baseline: float
    now: float
    window: int = WINDOW
    baseline_window: int = BASELINE

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "what": self.what,
            "since": self.since.isoformat().replace("+00:00", "Z"),
            "baseline": round(self.baseline, 4),
            "now": round(self.now, 4),
            "window_seconds": self.window,
            "baseline_seconds": self.baseline_window,
        }


@dataclass
class AnomalyDetector:
    clock: Callable[[], float] = time.time
    _minutes: dict[int, _Minute] = field(default_factory=dict)
    _since: dict[str, float] = field(default_factory=dict)
    _raised: dict[str, tuple[Alert, float]] = field(default_factory=dict)

    def raise_alert(self, kind: str, what: str, *, since: datetime, baseline: float, now: float) -> None:
        """Open (or renew) an alert that is not computed from traffic; it closes RAISED_HOLD seconds later."""
        self._raised[kind] = (Alert(kind, what, since, baseline, now, RAISED_HOLD, 0), self.clock() + RAISED_HOLD)

    def _now_minute(self) -> _Minute:
        minute = int(self.clock() // 60)
        bucket = self._minutes.get(minute)
        if bucket is None:
            bucket = self._minutes[minute] = _Minute()
            horizon = minute - (WINDOW + BASELINE) // 60 - 1
            for old in [m for m in self._minutes if m < horizon]:
                del self._minutes[old]
        return bucket

    def request(self, *, blocked: bool) -> None:
        bucket = self._now_minute()
        bucket.requests += 1
        bucket.blocks += blocked

    def answer(self, *, chars: int, flagged: bool | None) -> None:
        bucket = self._now_minute()
        bucket.answers += 1
        bucket.answer_chars += chars
        if flagged is not None:
            bucket.scored += 1
            bucket.flagged += flagged

    def report(self) -> None:
        self._now_minute().reports += 1

    def _sum(self, start: int, end: int) -> _Minute:
        total = _Minute()
        for minute, bucket in self._minutes.items():
            if start <= minute < end:
                total.add(bucket)
        return total

    def alerts(self) -> list[Alert]:
        minute = int(self.clock() // 60) + 1
        now = self._sum(minute - WINDOW // 60, minute)
        base = self._sum(minute - (WINDOW + BASELINE) // 60, minute - WINDOW // 60)
        found: dict[str, tuple[str, float, float]] = {}
        if now.requests >= MIN_REQUESTS and base.requests >= MIN_REQUESTS:
            rate_now, rate_base = now.blocks / now.requests, base.blocks / base.requests
            if rate_now > 3 * rate_base and rate_now > rate_base + 0.05:
                found["block_rate"] = ("share of requests blocked", rate_base, rate_now)
        if now.answers >= MIN_REQUESTS and base.answers >= MIN_REQUESTS:
            mean_now, mean_base = now.answer_chars / now.answers, base.answer_chars / base.answers
            if mean_base > 0 and (mean_now > 2 * mean_base or mean_now < 0.5 * mean_base):
                found["output_length"] = ("mean answer length (characters)", mean_base, mean_now)
        per_minute_now, per_minute_base = now.reports / (WINDOW / 60), base.reports / (BASELINE / 60)
        if now.reports >= MIN_REPORTS and per_minute_now > 3 * per_minute_base + 1:
            found["report_volume"] = ("user reports per minute", per_minute_base, per_minute_now)
        if now.scored >= MIN_REQUESTS and base.scored >= MIN_REQUESTS:
            flag_now, flag_base = now.flagged / now.scored, base.flagged / base.scored
            if flag_now > 3 * flag_base and flag_now > flag_base + 0.05:
                what = "share of answers the upstream's content filter flagged"
                found["classifier_score"] = (what, flag_base, flag_now)
        current = self.clock()
        self._since = {kind: self._since.get(kind, current) for kind in found}
        self._raised = {kind: held for kind, held in self._raised.items() if held[1] > current}
        computed = [
            Alert(kind, what, datetime.fromtimestamp(self._since[kind], UTC), baseline, now_value)
            for kind, (what, baseline, now_value) in sorted(found.items())
        ]
        return computed + [alert for _, (alert, _) in sorted(self._raised.items())]
