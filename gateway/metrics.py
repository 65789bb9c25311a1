"""Data-plane Prometheus metrics on a private registry. Labels are bounded: route names from config,
categories from the taxonomy, fixed outcome names — never a prompt, an IP or a key."""

from __future__ import annotations

from bisect import bisect_left
from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

from rules.model import Rule

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Tally:
    """One histogram child's observations, counted in plain Python and added to it in batches by
    `flush()`. prometheus-client's own `observe` takes two locks and walks the buckets in Python (about
    2 µs); the data plane makes five observations per request, so it counts here instead."""

    __slots__ = ("_child", "_bounds", "_counts", "_total", "_dirty")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)  # the last is +Inf
        self._counts = [0] * len(self._bounds)
        self._total = 0.0
        self._dirty = False

    def observe(self, amount: float) -> None:
        self._counts[bisect_left(self._bounds, amount)] += 1  # the first bucket with amount <= bound
        self._total += amount
        self._dirty = True

    def time(self) -> _Timing:
        """Observe the duration of a `with` block, in seconds."""
        return _Timing(self)

    def flush(self) -> None:
        if not self._dirty:
            return
        self._child._sum.inc(self._total)
        for index, count in enumerate(self._counts):
            if count:
                self._child._buckets[index].inc(count)
        self._counts = [0] * len(self._bounds)
        self._total = 0.0
        self._dirty = False


class _Timing:
    __slots__ = ("_tally", "_started")

    def __init__(self, tally: Tally) -> None:
        self._tally = tally
        self._started = 0.0

    def __enter__(self) -> _Timing:
        self._started = perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self._tally.observe(perf_counter() - self._started)


class Count:
    """One counter child's increments, added to it in batches by `flush()` (as `Tally` does)."""

    __slots__ = ("_child", "_count")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._count = 0

    def inc(self, amount: int = 1) -> None:
        self._count += amount

    def flush(self) -> None:
        if self._count:
            self._child.inc(self._count)
            self._count = 0


class _FlushFirst(Collector):
    """Registered before every other metric, so that a scrape of this registry first adds the counts
    still held in `Tally` / `Count` (the registry collects in registration order)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> list[Any]:
        self._metrics.flush()
        return []


class GatewayMetrics:
    """The data plane's metrics. Hot-path observations go through `child()`, which batches them:
    they reach the registry when it is scraped, and every second (`flush()`, driven by the data plane)
    for the multiprocess files that `--workers` scrapes are read from."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._batched: list[Tally | Count] = []
        registry.register(_FlushFirst(self))
        self.requests = Counter(
            "containment_requests",
            "Requests handled by the data plane, by route and outcome.",
            ["route", "outcome"],
            registry=registry,
        )
        self.matches = Counter(
            "containment_rule_matches",
            "Rule matches that were enforced (block) or only counted (shadow).",
            ["category", "severity", "stage", "direction", "action"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "containment_upstream_errors",
            "Upstream failures, by route and kind (unavailable, timeout, stream_aborted, too_large, undecodable).",
            ["route", "kind"],
            registry=registry,
        )
        self.filter_faults = Counter(
            "containment_filter_faults",
            "Unexpected errors inside a filter; each one refused its request (fail closed).",
            ["filter"],
            registry=registry,
        )
        self.scan_seconds = Histogram(
            "containment_scan_seconds",
            "Time spent normalizing and matching one request's texts.",
            ["direction"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.gateway_seconds = Histogram(
            "containment_gateway_seconds",
            "Time from request arrival until it is sent upstream or refused (the gateway's own share).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.policy_version = Gauge(
            "containment_policy_version",
            "Version of the policy snapshot in force (the lowest across worker processes).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.policy_rules = Gauge(
            "containment_policy_rules",
            "Rules in the policy snapshot in force.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.killswitches = Gauge(
            "containment_killswitches_engaged",
            "Kill switches engaged in the snapshot.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.reload_seconds = Histogram(
            "containment_policy_reload_seconds",
            "Time to compile and install a new policy snapshot.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=registry,
        )
        self.store_up = Gauge(
            "containment_store_up",
            "1 while the policy store (and the fleet rate-limit reconciliation) can be reached; 0 when degraded.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.store_up.set(1)
        self.reload_failures = Counter(
            "containment_policy_reload_failures",
            "Policy snapshots that failed to compile; the previous snapshot stayed in force.",
            registry=registry,
        )

        self.upstream_seconds = Histogram(
            "containment_upstream_seconds",
            "Time from sending a request upstream to its response headers.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.output_chars = Histogram(
            "containment_output_chars",
            "Length of answers the gateway read (characters).",
            buckets=(0, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000),
            registry=registry,
        )
        self.samples_written = Counter(
            "containment_samples_written", "Samples stored, by why they were sampled.", ["reason"], registry=registry
        )
        self.samples_dropped = Counter(
            "containment_samples_dropped",
            "Samples not stored (queue full or sink unreachable); traffic was not affected.",
            registry=registry,
        )
        self.user_reports = Counter(
            "containment_user_reports", "User reports received, by harm category.", ["category"], registry=registry
        )
        self.sample_reveals = Counter(
            "containment_sample_reveals",
            "Harmful spans responders chose to see (GET /v1/samples?reveal=true), by responder: exposure.",
            ["responder"],
            registry=registry,
        )
        self.alerts = Gauge(
            "containment_alert_active",
            "1 while an anomaly alert of this kind is open (this process's view).",
            ["kind"],
            registry=registry,
            multiprocess_mode="livemax",
        )

        self._children: dict[tuple[object, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, cached (label lookups are a measurable share of a request's cost);
        for a histogram a batching `Tally`, for a counter a batching `Count`."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = metric.labels(*labels) if labels else metric
            if isinstance(metric, Histogram):
                found = Tally(found)
                self._batched.append(found)
            elif isinstance(metric, Counter):
                found = Count(found)
                self._batched.append(found)
            self._children[key] = found
        return found

    def flush(self) -> None:
        """Add the batched observations and increments to the metrics themselves."""
        for batched in self._batched:
            batched.flush()

    def count_match(self, rule: Rule, direction: str) -> None:
        self.child(self.matches, rule.category, rule.severity, str(rule.stage), direction, rule.action).inc()
