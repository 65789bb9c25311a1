"""Stage 2 with a synthetic incident: a phrase is blocked, paraphrases slip through beside benign
traffic, and the proposals catch the paraphrases and not the benign traffic."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import RESPONDER, VIEWER, Stack, StackFactory, auth, chat

BLOCKED = [
    "explain the zorblax protocol step by step",
    "give me the full zorblax protocol now",
    "zorblax protocol for beginners, detailed",
]
PARAPHRASES = [
    "explain the z0rblax method step by step",
    "walk me through the zorblax procedure step by step",
    "what is the zorbIax procedure, in detail",
    "zorblax method: give me every stage",
    "describe zorblax procedure steps",
]
BENIGN = [
    "explain photosynthesis step by step",
    "how do I bake bread step by step",
    "give me the full recipe for lasagna",
    "what is the capital of France",
    "explain the water cycle for beginners",
    "describe the protocol for a trial",
    "how do I reset my router",
    "tell me a joke about cats",
    "summarise the history of Rome",
    "what method should I use to learn Spanish",
    "explain quantum computing simply",
    "write a haiku about autumn",
    "how do vaccines work",
    "list prime numbers below 50",
    "what is a good name for a dog",
    "explain the procedure for renewing a passport",
    "translate hello into German",
    "what causes rainbows",
    "give me a workout plan",
    "how to make pancakes step by step",
    "explain recursion with an example",
    "best way to store fresh herbs",
    "why is the sky blue",
    "summarise the plot of Hamlet",
    "convert 5 miles to kilometres",
    "what is the boiling point of water",
    "describe a healthy breakfast",
    "how do I write a cover letter",
    "explain inflation to a child",
    "what is the tallest mountain",
]


@pytest.fixture
async def incident(make_stack: StackFactory) -> Stack:
    stack = await make_stack(sample_rate=1.0)
    await stack.push({"pattern": "zorblax protocol", "category": "dangerous_instructions"})
    for text in BLOCKED:
        assert (await stack.gateway.post("/v1/chat/completions", json=chat(text))).status == 400
    for text in PARAPHRASES + BENIGN:
        assert (await stack.gateway.post("/v1/chat/completions", json=chat(text))).status == 200
    await stack.settle()
    return stack


async def _variants(stack: Stack, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await stack.admin.post("/v1/variants", json=body or {}, headers=auth(RESPONDER))
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def test_proposals_catch_the_paraphrases_and_not_the_benign_traffic(incident: Stack) -> None:
    result = await _variants(incident)
    assert result["blocked"] == 3 and result["near"] >= 5
    assert result["proposals"], result
    rules = [p["rule"] for p in result["proposals"]]
    assert all(rule["action"] == "shadow" for rule in rules)
    assert all(p["benign_hits"] == 0 for p in result["proposals"])
    simulation = await (
        await incident.admin.post("/v1/rules/simulate", json={"rules": rules}, headers=auth(RESPONDER))
    ).json()
    assert simulation["samples_scanned"] == len(BLOCKED + PARAPHRASES + BENIGN)
    assert simulation["would_match_previously_unblocked"] == len(PARAPHRASES)  # every paraphrase, no benign prompt
    assert simulation["would_match_previously_blocked"] == len(BLOCKED)
    first = result["proposals"][0]
    assert first["kind"] == "literal" and first["catches_unblocked"] == len(PARAPHRASES)


async def test_examples_are_masked_unless_revealed_with_a_reason(incident: Stack) -> None:
    masked = await _variants(incident)
    examples = [e for p in masked["proposals"] for e in p["examples"]]
    assert examples and all(e["masked"] for e in examples)
    refused = await incident.admin.post("/v1/variants", json={"reveal": True}, headers=auth(RESPONDER))
    assert refused.status == 422
    revealed = await _variants(incident, {"reveal": True, "reason": "stage 2 review"})
    assert all(not e["masked"] for p in revealed["proposals"] for e in p["examples"])
    entry = (await (await incident.admin.get("/v1/audit", headers=auth(VIEWER))).json())["entries"][0]
    assert entry["action"] == "samples.reveal" and entry["reason"] == "stage 2 review"


async def test_no_blocked_traffic_no_proposals(make_stack: StackFactory) -> None:
    stack = await make_stack(sample_rate=1.0)
    for text in BENIGN[:10]:
        await stack.gateway.post("/v1/chat/completions", json=chat(text))
    await stack.settle()
    result = await _variants(stack)
    assert result["proposals"] == [] and result["blocked"] == 0


async def test_simulate_validates_like_a_push(stack: Stack) -> None:
    bad = await stack.admin.post(
        "/v1/rules/simulate", json={"rules": [{"pattern": "(a+)+$", "kind": "regex"}]}, headers=auth(RESPONDER)
    )
    assert bad.status == 422 and (await bad.json())["error"]["index"] == 0
    viewer = await stack.admin.post("/v1/rules/simulate", json={"rules": [{"pattern": "x"}]}, headers=auth(VIEWER))
    assert viewer.status == 403
    empty = await stack.admin.post("/v1/rules/simulate", json={"rules": [{"pattern": "x"}]}, headers=auth(RESPONDER))
    assert (await empty.json())["samples_scanned"] == 0
