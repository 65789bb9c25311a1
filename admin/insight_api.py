"""What the data plane saw: samples (masked unless revealed, on purpose and audited), user reports,
forensic sampling, anomaly alerts."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from admin.auth import Principal, requires
from admin.context import INSIGHT, STORE
from admin.controls_api import parse_body
from admin.errors import ApiError, check_reason, ok
from rules.controls import ForensicSpec, SamplingPolicy
from rules.model import AuditEntry, Policy, iso, utcnow
from rules.roles import Role
from rules.samples import Sample

MAX_LIMIT = 500


def masked(sample: Sample) -> dict[str, object]:
    """The sample with every matched span replaced by `[MASKED:<category>]`; positions stay in `matches`."""
    data = sample.model_dump(mode="json")
    for direction in ("input", "output"):
        text = getattr(sample, f"{direction}_text")
        spans = sorted((m.start, m.end, m.category) for m in sample.matches if m.direction == direction)
        out, cursor = [], 0
        for start, end, category in spans:
            if start < cursor:
                continue  # overlaps a span already masked
            out.append(text[cursor:start])
            out.append(f"[MASKED:{category}]")
            cursor = end
        out.append(text[cursor:])
        data[f"{direction}_text"] = "".join(out)
    data["masked"] = True
    return data


async def record_reveal(
    request: web.Request, principal: Principal, samples: list[Sample], reason: str, what: str
) -> None:
    """A responder chose to see harmful text: audit who, why and which samples; count the exposure."""
    harmful = sum(1 for s in samples if s.matches)
    await request.app[STORE].record(
        AuditEntry(
            at=utcnow(),
            actor=principal.name,
            role=principal.role.name,
            action="samples.reveal",
            target=f"{len(samples)} {what}",
            reason=reason,
            after={"sample_ids": [s.id for s in samples][:200], "with_harmful_spans": harmful},
        )
    )
    request.app[INSIGHT].on_reveal(principal.name, harmful)


def _int(request: web.Request, name: str, default: int, high: int) -> int:
    try:
        value = int(request.query.get(name, str(default)))
    except ValueError:
        raise ApiError(400, "invalid_query", f"{name} must be a whole number") from None
    if not 0 < value <= high:
        raise ApiError(400, "invalid_query", f"{name} must be 1..{high}")
    return value


@requires(Role.responder)
async def list_samples(request: web.Request, principal: Principal) -> web.Response:
    insight = request.app[INSIGHT]
    limit = _int(request, "limit", 50, MAX_LIMIT)
    reveal = request.query.get("reveal", "false").lower() in ("1", "true", "yes")
    reason = request.query.get("reason", "").strip()
    check_reason(reason, "invalid_query")
    if reveal and not reason:
        raise ApiError(422, "invalid_query", "reveal=true needs a reason= (it is audited)", field="reason")
    found = await insight.sink.samples(
        limit=MAX_LIMIT if _filtered(request) else limit, request_id=request.query.get("request_id")
    )
    for name in ("category", "rule_id", "outcome", "route"):
        value = request.query.get(name)
        if value is None:
            continue
        if name in ("category", "rule_id"):
            found = [s for s in found if any(getattr(m, name) == value for m in s.matches)]
        else:
            found = [s for s in found if getattr(s, name) == value]
    found = found[:limit]
    if reveal and found:
        await record_reveal(request, principal, found, reason, "samples")
    samples = [s.model_dump(mode="json") | {"masked": False} if reveal else masked(s) for s in found]
    return ok({"samples": samples, "revealed": reveal})


def _filtered(request: web.Request) -> bool:
    return any(name in request.query for name in ("category", "rule_id", "outcome", "route"))


@requires(Role.responder)
async def list_reports(request: web.Request, principal: Principal) -> web.Response:
    reports = await request.app[INSIGHT].sink.reports(limit=_int(request, "limit", 100, MAX_LIMIT))
    return ok({"reports": [r.model_dump(mode="json") for r in reports]})


@requires(Role.viewer)
async def get_sampling(request: web.Request, principal: Principal) -> web.Response:
    insight = request.app[INSIGHT]
    sampling = request.app[STORE].current().sampling
    active = sampling.forensic(utcnow())
    return ok(
        {
            "forensic": sampling.model_dump(mode="json") | {"active": active is not None},
            "forensic_max_rate": insight.forensic_max_rate,
            "forensic_max_seconds": insight.forensic_max_seconds,
        }
    )


@requires(Role.commander)
async def put_forensic(request: web.Request, principal: Principal) -> web.Response:
    insight = request.app[INSIGHT]
    spec = await parse_body(request, ForensicSpec, "invalid_forensic")
    ending = spec.rate == 0 or spec.ttl_seconds == 0
    if not ending and (insight.forensic_max_seconds == 0 or insight.forensic_max_rate == 0):
        raise ApiError(422, "invalid_forensic", "forensic mode is disabled by configuration", field="rate")
    if spec.rate > insight.forensic_max_rate:
        raise ApiError(422, "invalid_forensic", f"rate: at most {insight.forensic_max_rate} (configured)", field="rate")
    if spec.ttl_seconds > insight.forensic_max_seconds:
        raise ApiError(
            422,
            "invalid_forensic",
            f"ttl_seconds: at most {insight.forensic_max_seconds} (configured)",
            field="ttl_seconds",
        )
    now = utcnow()
    sampling = (
        SamplingPolicy()
        if ending
        else SamplingPolicy(
            forensic_rate=spec.rate,
            forensic_until=now + timedelta(seconds=spec.ttl_seconds),
            reason=spec.reason,
            set_by=principal.name,
        )
    )

    def mutate(policy: Policy) -> tuple[Policy, AuditEntry]:
        entry = AuditEntry(
            at=now,
            actor=principal.name,
            role=principal.role.name,
            action="sampling.forensic",
            target="forensic off" if ending else f"forensic {spec.rate} for {spec.ttl_seconds}s",
            reason=spec.reason,
            incident_id=spec.incident_id,
            before=policy.sampling.model_dump(mode="json"),
            after=sampling.model_dump(mode="json"),
        )
        return policy.model_copy(update={"sampling": sampling}), entry

    policy, _ = await request.app[STORE].update(mutate)
    until = policy.sampling.forensic_until
    return ok({"version": policy.version, "active": not ending, "until": iso(until) if until else None})


@requires(Role.viewer)
async def list_alerts(request: web.Request, principal: Principal) -> web.Response:
    alerts = request.app[INSIGHT].detector.alerts()
    return ok({"alerts": [alert.as_dict() for alert in alerts], "scope": "this process's traffic"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/samples", list_samples)
    app.router.add_get("/v1/reports", list_reports)
    app.router.add_get("/v1/sampling", get_sampling)
    app.router.add_put("/v1/sampling/forensic", put_forensic)
    app.router.add_get("/v1/alerts", list_alerts)
