"""Stage 2: `POST /v1/variants` (proposals from sampled traffic) and `POST /v1/rules/simulate` (a dry run
of candidate rules over the stored samples). Neither changes policy."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from admin.auth import Principal, requires
from admin.context import CATEGORIES, INSIGHT
from admin.controls_api import parse_body
from admin.errors import ApiError, ok, read_json
from admin.insight_api import masked, record_reveal
from admin.rules_api import validate_push
from rules.match import Matcher
from rules.model import Rule
from rules.normalize import TextView
from rules.roles import Role
from rules.samples import Sample
from rules.variants import analyse

SAMPLES_SCANNED = 100_000


class VariantsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: Annotated[float, Field(gt=0, le=1)] = 0.3
    max_benign_share: Annotated[float, Field(ge=0, le=0.2)] = 0.01
    max_proposals: Annotated[int, Field(ge=1, le=50)] = 10
    reveal: bool = False
    reason: Annotated[str, Field(max_length=2000)] | None = None


@requires(Role.responder)
async def variants(request: web.Request, principal: Principal) -> web.Response:
    spec = await parse_body(request, VariantsSpec, "invalid_variants")
    if spec.reveal and not (spec.reason or "").strip():
        raise ApiError(422, "invalid_variants", "reason: reveal needs a reason (it is audited)", field="reason")
    samples = await request.app[INSIGHT].sink.samples(limit=SAMPLES_SCANNED)
    analysis = await asyncio.to_thread(
        analyse,
        samples,
        threshold=spec.threshold,
        max_benign_share=spec.max_benign_share,
        max_proposals=spec.max_proposals,
    )
    by_id = {s.id: s for s in samples}
    shown = {sid for p in analysis.proposals for sid in p.example_sample_ids}
    if spec.reveal and shown:
        revealed = [by_id[sid] for sid in sorted(shown)]
        await record_reveal(request, principal, revealed, spec.reason or "", "samples (variant analysis)")

    def example(sample: Sample) -> dict[str, Any]:
        view = sample.model_dump(mode="json") | {"masked": False} if spec.reveal else masked(sample)
        return {key: view[key] for key in ("id", "request_id", "input_text", "output_text", "masked")}

    return ok(
        {
            "samples_scanned": analysis.samples_scanned,
            "blocked": analysis.blocked,
            "near": analysis.near,
            "background": analysis.background,
            "groups": analysis.groups,
            "proposals": [
                {
                    "kind": p.kind,
                    "pattern": p.pattern,
                    "word_boundary": p.word_boundary,
                    "category": p.category,
                    "catches_unblocked": p.catches_unblocked,
                    "catches_blocked": p.catches_blocked,
                    "benign_hits": p.benign_hits,
                    "group": p.group,
                    "rule": p.as_rule(),
                    "examples": [example(by_id[sid]) for sid in p.example_sample_ids],
                }
                for p in analysis.proposals
            ],
        }
    )


def simulate_rules(rules: list[Rule], samples: list[Sample]) -> dict[str, Any]:
    matchers = {
        "input": Matcher([r for r in rules if r.applies_to in ("input", "both")]),
        "output": Matcher([r for r in rules if r.applies_to in ("output", "both")]),
    }
    index_of = {rule.id: index for index, rule in enumerate(rules)}
    per_rule = [{"blocked": 0, "unblocked": 0} for _ in rules]
    totals = {"blocked": 0, "unblocked": 0}
    for sample in samples:
        side = "blocked" if any(m.action == "block" for m in sample.matches) else "unblocked"
        hit: set[str] = set()
        for direction, text in (("input", sample.input_text), ("output", sample.output_text)):
            if text:
                hit |= {h.rule.id for h in matchers[direction].scan(TextView(text))}
        for rule_id in hit:
            per_rule[index_of[rule_id]][side] += 1
        if hit:
            totals[side] += 1
    return {
        "samples_scanned": len(samples),
        "would_match": totals["blocked"] + totals["unblocked"],
        "would_match_previously_blocked": totals["blocked"],
        "would_match_previously_unblocked": totals["unblocked"],
        "by_rule": [
            {
                "index": i,
                "pattern": rule.pattern,
                "kind": rule.kind,
                "would_match": c["blocked"] + c["unblocked"],
                "previously_blocked": c["blocked"],
                "previously_unblocked": c["unblocked"],
            }
            for i, (rule, c) in enumerate(zip(rules, per_rule, strict=True))
        ],
    }


@requires(Role.responder)
async def simulate(request: web.Request, principal: Principal) -> web.Response:
    body = await read_json(request)
    body = {"rules": body.get("rules"), "reason": "simulation"} if set(body) <= {"rules"} else body
    rules, _ = await asyncio.to_thread(validate_push, body, request.app[CATEGORIES], principal.name)
    samples = await request.app[INSIGHT].sink.samples(limit=SAMPLES_SCANNED)
    return ok(await asyncio.to_thread(simulate_rules, rules, samples))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/variants", variants)
    app.router.add_post("/v1/rules/simulate", simulate)
