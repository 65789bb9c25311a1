"""Sampling, watch-period counts and anomaly signals: what happens after a request is answered.

Sampling runs last in the chain (after the answer went out): every request that matched a rule
(block, redact or shadow) is sampled; the others at the route's rate (`sample_rates`, else
`--sample-rate`), or at the forensic rate while a commander has forensic mode on. A sample is built
off the request path by a writer task — texts redacted of personal data, key ids HMAC'd, matched spans
located — and written to the sink; when the queue is full, samples are dropped and counted, never
waited for.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.context import RequestContext
from gateway.metrics import GatewayMetrics
from gateway.output_formats import answer_text, classifier_flagged
from rules.alerts import AnomalyDetector
from rules.match import Matcher
from rules.model import utcnow
from rules.normalize import TextView
from rules.pii import redact_pii
from rules.samples import Report, Sample, SampleMatch, SampleSink, new_id
from rules.watch import HitCounter

log = logging.getLogger(__name__)
MAX_STORED_CHARS = 32_000
QUEUE = 2_000


@dataclass(frozen=True, slots=True)
class _Job:
    ctx: RequestContext
    status: int
    outcome: str
    reason: str
    output: str


class Telemetry:
    def __init__(
        self,
        *,
        sink: SampleSink,
        hits: HitCounter,
        detector: AnomalyDetector,
        metrics: GatewayMetrics,
        sample_rate: float,
        route_rates: Mapping[str, float],
        hmac_secret: bytes,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._sink = sink
        self.hits = hits
        self.detector = detector
        self._metrics = metrics
        self._rate = sample_rate
        self._route_rates = dict(route_rates)
        self._secret = hmac_secret
        self._rng = rng
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(QUEUE)

    # ----- on the request path: cheap -----

    def begin(self, ctx: RequestContext) -> None:
        """Decide now whether this request is sampled at the base (or forensic) rate, so that the proxy
        keeps a copy of the answer for it."""
        rate = self._route_rates.get(ctx.route.name, self._rate)
        forensic = ctx.snapshot.sampling.forensic(ctx.now)
        if forensic is not None and forensic > rate:
            rate, ctx.forensic = forensic, True
        ctx.sampled = rate > 0 and self._rng() < rate

    def finish(self, ctx: RequestContext, status: int, outcome: str) -> None:
        self.detector.request(blocked=outcome == "block")
        for rule_id in set(ctx.matched_rules):
            self.hits.hit(rule_id, ctx.now)
        output = "".join(ctx.output_parts)
        if not output and ctx.answer is not None and (ctx.sampled or ctx.matched_rules):
            output = answer_text(*ctx.answer)
        if ctx.answer is not None or ctx.output_parts:
            flagged = classifier_flagged(*ctx.answer) if ctx.answer is not None else None
            self.detector.answer(chars=len(output), flagged=flagged)
            self._metrics.child(self._metrics.output_chars).observe(len(output))
        if ctx.matched_rules:
            reason = "matched"
        elif ctx.sampled:
            reason = "forensic" if ctx.forensic else "rate"
        else:
            return
        try:
            self._queue.put_nowait(_Job(ctx, status, outcome, reason, output))
        except asyncio.QueueFull:
            self._metrics.samples_dropped.inc()

    # ----- off the request path -----

    async def run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._sink.add(self._build(job))
                self._metrics.samples_written.labels(job.reason).inc()
            except Exception as exc:  # a sink outage must never reach traffic
                self._metrics.samples_dropped.inc()
                log.warning("sample not stored: %s", exc)

    def key_hash(self, key_id: str | None) -> str | None:
        if key_id is None:
            return None
        return hmac.new(self._secret, key_id.encode(), hashlib.sha256).hexdigest()[:16]

    def _build(self, job: _Job) -> Sample:
        ctx = job.ctx
        input_text = redact_pii("\n".join(ctx.texts))[:MAX_STORED_CHARS]
        output_text = redact_pii(job.output)[:MAX_STORED_CHARS]
        matched = set(ctx.matched_rules)
        matches = self._locate(ctx.snapshot.input, input_text, matched, "input") + self._locate(
            ctx.snapshot.output, output_text, matched, "output"
        )
        return Sample(
            id=new_id("s_"),
            at=ctx.now,
            request_id=ctx.request_id,
            route=ctx.route.name,
            model=ctx.model,
            key_hash=self.key_hash(ctx.identity.key_id),
            tenant=ctx.identity.tenant,
            outcome=job.outcome,
            status=job.status,
            reason=job.reason,  # type: ignore[arg-type]
            input_text=input_text,
            output_text=output_text,
            output_chars=len(job.output),
            matches=tuple(matches),
        )

    @staticmethod
    def _locate(
        matcher: Matcher, text: str, matched: set[str], direction: Literal["input", "output"]
    ) -> list[SampleMatch]:
        if not text or not matched:
            return []
        view = TextView(text)
        found = []
        for hit in matcher.scan(view, lambda rule: rule.id in matched):
            start, end = hit.original_span(view)
            rule = hit.rule
            found.append(
                SampleMatch(
                    rule_id=rule.id,
                    category=rule.category,
                    severity=rule.severity,
                    action=rule.action,
                    direction=direction,
                    start=start,
                    end=end,
                )
            )
        return found

    async def report(self, request_id: str, category: str, comment: str | None) -> Report:
        report = Report(
            id=new_id("rep_"),
            at=utcnow(),
            request_id=request_id,
            category=category,
            comment=redact_pii(comment)[:2000] if comment else None,
        )
        stored = await self._sink.add_report(report)
        self.detector.report()
        self._metrics.user_reports.labels(category).inc()
        return stored


def load_secret(configured: str | None, state_dir: Path) -> bytes:
    """The HMAC secret for key ids: configured, or made once and kept in the state dir (mode 0600)."""
    if configured:
        return configured.encode()
    path = state_dir / "sample-hmac.key"
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = os.urandom(32).hex().encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
    return secret
