"""Data-plane Prometheus metrics on a private registry. Labels are bounded: route names from config,
categories from the taxonomy, fixed outcome names — never a prompt, an IP or a key."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rules.model import Rule

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
        """`metric.labels(*labels)`, cached: label lookups are a measurable share of a request's cost."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def count_match(self, rule: Rule, direction: str) -> None:
        self.child(self.matches, rule.category, rule.severity, str(rule.stage), direction, rule.action).inc()
