"""Sampling, masking, reveal audit, forensic mode, user reports, watch periods, alerts and metrics."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from asyncio.subprocess import PIPE
from typing import Any

from tests.conftest import COMMANDER, RESPONDER, VIEWER, Stack, StackFactory, auth, chat


async def _samples(stack: Stack, query: str = "") -> list[dict[str, Any]]:
    await stack.settle()
    response = await stack.admin.get(f"/v1/samples{query}", headers=auth(RESPONDER))
    assert response.status == 200, await response.text()
    samples: list[dict[str, Any]] = (await response.json())["samples"]
    return samples


async def test_blocked_requests_are_sampled_masked_and_pii_redacted(make_stack: StackFactory) -> None:
    stack = await make_stack(sample_rate=0)
    await stack.push({"pattern": "nerve agent", "category": "dangerous_instructions", "id": "na"})
    text = "mail me at bob@example.com: how to make a nerve agent"
    response = await stack.gateway.post(
        "/v1/chat/completions", json=chat(text), headers={"Authorization": "Bearer sk-secretkey"}
    )
    assert response.status == 400
    await stack.gateway.post("/v1/chat/completions", json=chat("a clean question"))  # rate 0: not sampled
    (sample,) = await _samples(stack)
    assert sample["reason"] == "matched" and sample["outcome"] == "block" and sample["status"] == 400
    assert sample["request_id"] == response.headers["X-Containment-Request-Id"]
    assert "bob@example.com" not in sample["input_text"] and "[EMAIL]" in sample["input_text"]
    assert "nerve agent" not in sample["input_text"]
    assert "[MASKED:dangerous_instructions]" in sample["input_text"]
    (match,) = sample["matches"]
    assert match["rule_id"] == "na" and match["category"] == "dangerous_instructions" and match["end"] > match["start"]
    key_id = hashlib.sha256(b"sk-secretkey").hexdigest()[:16]
    assert sample["key_hash"] and sample["key_hash"] != key_id and key_id not in str(sample)


async def test_reveal_needs_a_reason_is_audited_and_counted(stack: Stack) -> None:
    await stack.push({"pattern": "nerve agent", "category": "dangerous_instructions"})
    await stack.gateway.post("/v1/chat/completions", json=chat("a nerve agent"))
    await stack.settle()
    assert (await stack.admin.get("/v1/samples?reveal=true", headers=auth(RESPONDER))).status == 422
    assert (await stack.admin.get("/v1/samples", headers=auth(VIEWER))).status == 403
    response = await stack.admin.get("/v1/samples?reveal=true&reason=variant+analysis", headers=auth(RESPONDER))
    body = await response.json()
    assert body["revealed"] is True
    assert "nerve agent" in body["samples"][0]["input_text"]
    entry = (await (await stack.admin.get("/v1/audit", headers=auth(VIEWER))).json())["entries"][0]
    assert entry["action"] == "samples.reveal" and entry["actor"] == "rory" and entry["reason"] == "variant analysis"
    assert entry["after"]["with_harmful_spans"] == 1
    metrics = await (await stack.admin.get("/metrics")).text()
    assert 'containment_sample_reveals_total{responder="rory"} 1.0' in metrics


async def test_base_rate_samples_clean_traffic_with_the_answer(make_stack: StackFactory) -> None:
    stack = await make_stack(sample_rate=1.0)
    await stack.gateway.post("/v1/chat/completions", json=chat("my card is 4111 1111 1111 1111, thanks"))
    (sample,) = await _samples(stack)
    assert sample["reason"] == "rate" and sample["outcome"] == "proxied"
    assert sample["output_text"] == "my card is [CARD], thanks"
    assert sample["output_chars"] == len("my card is 4111 1111 1111 1111, thanks")


async def test_streamed_output_match_is_sampled_with_the_model_text(stack: Stack) -> None:
    await stack.push({"pattern": "nerve agent", "applies_to": "output", "category": "dangerous_instructions"})
    await stack.gateway.post("/v1/chat/completions", json=chat("here: the nerve agent steps", stream=True))
    (sample,) = await _samples(stack, "?category=dangerous_instructions")
    assert sample["outcome"] == "block"
    assert sample["output_text"].startswith("here: the [MASKED:dangerous_instructions]")


async def test_forensic_mode_is_bounded_commander_only_and_audited(make_stack: StackFactory) -> None:
    stack = await make_stack(sample_rate=0, forensic_max_seconds=600, forensic_max_rate=0.5)
    body = {"rate": 0.5, "ttl_seconds": 300, "reason": "INC-9 evidence"}
    assert (await stack.admin.put("/v1/sampling/forensic", json=body, headers=auth(RESPONDER))).status == 403
    too_long = await stack.admin.put("/v1/sampling/forensic", json=body | {"ttl_seconds": 601}, headers=auth(COMMANDER))
    assert too_long.status == 422 and (await too_long.json())["error"]["field"] == "ttl_seconds"
    too_much = await stack.admin.put("/v1/sampling/forensic", json=body | {"rate": 0.9}, headers=auth(COMMANDER))
    assert too_much.status == 422
    response = await stack.admin.put("/v1/sampling/forensic", json=body, headers=auth(COMMANDER))
    assert response.status == 200 and (await response.json())["active"] is True
    stack.telemetry._rng = lambda: 0.1  # under 0.5: sampled
    await stack.gateway.post("/v1/chat/completions", json=chat("during the incident"))
    (sample,) = await _samples(stack)
    assert sample["reason"] == "forensic"
    shown = await (await stack.admin.get("/v1/sampling", headers=auth(VIEWER))).json()
    assert shown["forensic"]["active"] is True and shown["forensic"]["set_by"] == "cleo"
    await stack.admin.put("/v1/sampling/forensic", json=body | {"rate": 0}, headers=auth(COMMANDER))
    await stack.gateway.post("/v1/chat/completions", json=chat("after the incident"))
    assert len(await _samples(stack)) == 1
    actions = [
        e["action"] for e in (await (await stack.admin.get("/v1/audit", headers=auth(VIEWER))).json())["entries"]
    ]
    assert actions[:2] == ["sampling.forensic", "sampling.forensic"]


async def test_user_reports(make_stack: StackFactory) -> None:
    stack = await make_stack(sample_rate=1.0)
    response = await stack.gateway.post("/v1/chat/completions", json=chat("hello"))
    request_id = response.headers["X-Containment-Request-Id"]
    await stack.settle()
    report = await stack.gateway.post(
        "/_containment/reports",
        json={"request_id": request_id, "category": "self_harm", "comment": "reach me at me@x.org"},
    )
    assert report.status == 202
    assert (await report.json())["sampled"] is True
    stored = (await (await stack.admin.get("/v1/reports", headers=auth(RESPONDER))).json())["reports"][0]
    assert stored["comment"] == "reach me at [EMAIL]" and stored["request_id"] == request_id
    for bad, status in (
        ({"request_id": "x"}, 422),
        ({"request_id": "x", "category": "nope"}, 422),
        ("not json", 400),
        ({"request_id": "x", "category": "other", "extra": 1}, 422),
    ):
        sent = {"data": bad} if isinstance(bad, str) else {"json": bad}
        answer = await stack.gateway.post("/_containment/reports", **sent)
        assert answer.status == status
        assert (await answer.json())["error"]["code"] == "invalid_request"
    metrics = await (await stack.admin.get("/metrics")).text()
    assert 'containment_user_reports_total{category="self_harm"} 1.0' in metrics


async def test_reports_are_read_like_proxied_bodies(stack: Stack) -> None:
    import gzip

    import orjson

    packed = gzip.compress(orjson.dumps({"request_id": "abc", "category": "other"}))
    answer = await stack.gateway.post("/_containment/reports", data=packed, headers={"Content-Encoding": "gzip"})
    assert answer.status == 202
    answer = await stack.gateway.post("/_containment/reports", data=b"x", headers={"Content-Encoding": "br"})
    assert answer.status == 415 and (await answer.json())["error"]["code"] == "unsupported_encoding"
    answer = await stack.gateway.post("/_containment/reports", data=b"x" * 20_000)
    assert answer.status == 413


async def test_watch_period_hits(stack: Stack) -> None:
    (rule_id,) = (await stack.push({"pattern": "watched", "action": "shadow"}))["ids"]
    for _ in range(3):
        await stack.gateway.post("/v1/chat/completions", json=chat("watched phrase"))
    rule = await (await stack.admin.get(f"/v1/rules/{rule_id}", headers=auth(VIEWER))).json()
    hits = rule["hits"]
    assert hits["total"] == 3 and hits["interval_seconds"] == 3600 and hits["last_hit_at"]
    assert hits["buckets"][-1]["count"] == 3


async def test_alerts_endpoint(stack: Stack) -> None:
    body = await (await stack.admin.get("/v1/alerts", headers=auth(VIEWER))).json()
    assert body["alerts"] == []
    detector = stack.telemetry.detector
    now = [1_800_000_000.0]
    detector.clock = lambda: now[0]
    for _ in range(60):  # an hour of quiet baseline
        for _ in range(30):
            detector.request(blocked=False)
        now[0] += 60
    for _ in range(40):  # then a spike of blocks
        detector.request(blocked=True)
    alerts = (await (await stack.admin.get("/v1/alerts", headers=auth(VIEWER))).json())["alerts"]
    assert [a["kind"] for a in alerts] == ["block_rate"]
    assert alerts[0]["baseline"] == 0 and alerts[0]["now"] == 0.25  # 40 of the last 5 minutes' 160


async def test_metrics_pass_promtool(stack: Stack) -> None:
    await stack.push({"pattern": "x"})
    await stack.gateway.post("/v1/chat/completions", json=chat("x"))
    text = await (await stack.admin.get("/metrics")).text()
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make test installs it (Debian package prometheus)"
    process = await asyncio.create_subprocess_exec(promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=PIPE)
    out, err = await asyncio.wait_for(process.communicate(text.encode()), 30)
    assert process.returncode == 0, (out + err).decode()
