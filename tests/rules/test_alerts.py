"""Alerts fire on a synthetic spike against the rolling baseline, and stay quiet on steady traffic."""

from __future__ import annotations

from rules.alerts import AnomalyDetector


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _steady(detector: AnomalyDetector, clock: Clock, minutes: int, *, per_minute: int = 30) -> None:
    for _ in range(minutes):
        for index in range(per_minute):
            detector.request(blocked=index == 0)  # ~3% blocked
            detector.answer(chars=400 + index, flagged=index == 0)
        clock.now += 60


def test_steady_traffic_raises_nothing() -> None:
    clock = Clock()
    detector = AnomalyDetector(clock=clock)
    _steady(detector, clock, 70)
    assert detector.alerts() == []


def test_block_rate_spike() -> None:
    clock = Clock()
    detector = AnomalyDetector(clock=clock)
    _steady(detector, clock, 60)
    for _ in range(3):
        for index in range(30):
            detector.request(blocked=index < 10)  # 33% blocked
        clock.now += 60
    (alert,) = [a for a in detector.alerts() if a.kind == "block_rate"]
    assert alert.baseline < 0.05 and alert.now > 0.15
    first = alert.since
    clock.now += 30
    assert [a.since for a in detector.alerts() if a.kind == "block_rate"] == [first]  # open since then


def test_output_length_shift_and_classifier_shift() -> None:
    clock = Clock()
    detector = AnomalyDetector(clock=clock)
    _steady(detector, clock, 60)
    for _ in range(3):
        for _ in range(30):
            detector.answer(chars=5000, flagged=True)
        clock.now += 60
    kinds = {a.kind for a in detector.alerts()}
    assert {"output_length", "classifier_score"} <= kinds


def test_report_volume_spike() -> None:
    clock = Clock()
    detector = AnomalyDetector(clock=clock)
    _steady(detector, clock, 60)
    assert detector.alerts() == []
    for _ in range(12):
        detector.report()
    alert = next(a for a in detector.alerts() if a.kind == "report_volume")
    assert alert.now > alert.baseline
    d = alert.as_dict()
    assert set(d) >= {"kind", "what", "since", "baseline", "now", "window_seconds", "baseline_seconds"}


def test_too_little_traffic_raises_nothing() -> None:
    clock = Clock()
    detector = AnomalyDetector(clock=clock)
    for _ in range(5):
        detector.request(blocked=True)
    assert detector.alerts() == []
