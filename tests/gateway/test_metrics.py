"""Batched metrics: what a scrape shows is what prometheus-client's own observe/inc would have shown."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from gateway.metrics import LATENCY_BUCKETS, Count, GatewayMetrics, Tally

AMOUNTS = [0.0, 0.00005, 0.0001, 0.00010001, 0.0025, 0.7, 5, 5.0001, 1e9, -1.0]


def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    found = [(s.name, s.labels, s.value) for metric in registry.collect() for s in metric.samples]
    return [sample for sample in found if not sample[0].endswith("_created")]


def test_a_tally_exposes_what_observe_would_have() -> None:
    direct_registry, batched_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h", "h", ["route"], buckets=LATENCY_BUCKETS, registry=direct_registry)
    batched = Histogram("h", "h", ["route"], buckets=LATENCY_BUCKETS, registry=batched_registry)
    tally = Tally(batched.labels("r"))
    for round_ in range(2):  # and again after a flush has reset the batch
        for amount in AMOUNTS:
            direct.labels("r").observe(amount)
            tally.observe(amount)
        assert samples(batched_registry) != samples(direct_registry)  # nothing reached it before the flush
        tally.flush()
        got, want = samples(batched_registry), samples(direct_registry)
        assert [sample[:2] for sample in got] == [sample[:2] for sample in want]
        # counts exactly; the sum up to float rounding (a batch is summed in another order)
        assert [sample[2] for sample in got] == pytest.approx([sample[2] for sample in want], rel=1e-12), round_


def test_a_tally_times_a_block() -> None:
    registry = CollectorRegistry()
    tally = Tally(Histogram("h", "h", buckets=(0.5, 60), registry=registry))
    with tally.time():
        pass
    tally.flush()
    assert ("h_bucket", {"le": "0.5"}, 1.0) in samples(registry)


def test_a_scrape_of_the_gateway_registry_includes_what_is_still_batched() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    requests = metrics.child(metrics.requests, "default", "proxied")
    assert isinstance(requests, Count)
    for _ in range(3):
        requests.inc()
    metrics.child(metrics.gateway_seconds, "default").observe(0.0003)
    text = generate_latest(registry).decode()
    assert 'containment_requests_total{outcome="proxied",route="default"} 3.0' in text
    assert 'containment_gateway_seconds_bucket{le="0.0005",route="default"} 1.0' in text
    requests.inc()
    assert 'containment_requests_total{outcome="proxied",route="default"} 4.0' in generate_latest(registry).decode()
