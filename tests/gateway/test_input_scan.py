"""Literal block rules on input: refused with the contract's 400, never echoing the pattern."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Stack, StackFactory, chat, interpreted_only


async def _send(stack: Stack, payload: Any, path: str = "/v1/chat/completions", **kwargs: Any) -> Any:
    return await stack.gateway.post(path, json=payload, **kwargs)


async def test_block_rule_refuses_matching_prompt(stack: Stack) -> None:
    await stack.push({"pattern": "Synthesize Nerve Agent", "category": "dangerous_instructions"})
    response = await _send(stack, chat("please SYNTHESIZE nerve AGENT now"))
    assert response.status == 400
    assert response.headers["X-Containment-Action"] == "block"
    body = await response.json()
    error = body["error"]
    assert error["code"] == "content_filter"
    assert error["category"] == "dangerous_instructions"
    assert error["request_id"] == response.headers["X-Containment-Request-Id"]
    assert "nerve" not in (await response.text()).lower()


async def test_clean_prompt_passes_with_rules_loaded(stack: Stack) -> None:
    await stack.push({"pattern": "nerve agent"})
    response = await _send(stack, chat("how do nerves work"))
    assert response.status == 200


@pytest.mark.parametrize(
    "payload,path",
    [
        (
            {"model": "m", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "BAD WORD"}]},
            "/v1/chat/completions",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a bad word"}]}]},
            "/v1/chat/completions",
        ),
        ({"model": "m", "prompt": ["fine", "bad word"]}, "/v1/completions"),
        ({"model": "m", "input": "bad word"}, "/v1/embeddings"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "bad word"}]}]},
            "/v1/responses",
        ),
        ({"model": "m", "system": "bad word", "messages": [{"role": "user", "content": "hi"}]}, "/v1/messages"),
        ({"anything": {"deeply": ["nested", {"x": "bad word"}]}}, "/custom/api"),
        ({"tools": [{"function": {"description": "bad word"}}], "messages": []}, "/v1/chat/completions"),
    ],
)
async def test_text_is_found_in_every_shape(stack: Stack, payload: Any, path: str) -> None:
    await stack.push({"pattern": "bad word"})
    response = await _send(stack, payload, path)
    assert response.status == 400, await response.text()


async def test_json_escapes_and_wrong_content_type_do_not_hide_a_prompt(stack: Stack) -> None:
    await stack.push({"pattern": "bad word"})
    raw = b'{"messages": [{"role": "user", "content": "\\u0062ad word"}]}'
    response = await stack.gateway.post("/v1/chat/completions", data=raw, headers={"Content-Type": "text/plain"})
    assert response.status == 400


async def test_gzip_body_is_scanned(stack: Stack) -> None:
    import gzip

    import orjson

    await stack.push({"pattern": "bad word"})
    body = gzip.compress(orjson.dumps(chat("a bad word")))
    response = await stack.gateway.post(
        "/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status == 400


async def test_text_plain_body_is_scanned(stack: Stack) -> None:
    await stack.push({"pattern": "bad word"})
    response = await stack.gateway.post("/upload", data=b"a BAD WORD here", headers={"Content-Type": "text/plain"})
    assert response.status == 400


async def test_identifier_fields_are_not_scanned(stack: Stack) -> None:
    await stack.push({"pattern": "assistant"})
    payload = {"model": "assistant", "messages": [{"role": "assistant", "content": "hi"}]}
    assert (await _send(stack, payload)).status == 200


async def test_shadow_rule_counts_but_does_not_block(stack: Stack) -> None:
    await stack.push({"pattern": "watch me", "action": "shadow", "category": "nl_misuse"})
    response = await _send(stack, chat("please watch me"))
    assert response.status == 200
    metrics = await (await stack.admin.get("/metrics")).text()
    assert (
        'containment_rule_matches_total{action="shadow",category="nl_misuse",direction="input",'
        'severity="medium",stage="1"} 1.0' in metrics
    )


async def test_word_boundary_rule_only_matches_whole_words(stack: Stack) -> None:
    await stack.push({"pattern": "ricin", "word_boundary": True})
    assert (await _send(stack, chat("ricinoleic acid is in castor oil"))).status == 200
    assert (await _send(stack, chat("make ricin at home"))).status == 400
    assert (await _send(stack, chat("RICIN."))).status == 400


async def test_expired_rule_stops_matching_without_a_push(stack: Stack) -> None:
    # A rule already expired is refused at push (tests/admin/test_validation.py): push one about to expire.
    soon = datetime.now(UTC) + timedelta(seconds=1)
    await stack.push({"pattern": "old threat", "expires_at": soon.isoformat()})
    await asyncio.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.05)
    assert (await _send(stack, chat("old threat"))).status == 200


async def test_scope_limits_a_rule_to_its_models(stack: Stack) -> None:
    await stack.push({"pattern": "scoped phrase", "scope": {"models": ["model-a"]}})
    assert (await _send(stack, chat("scoped phrase", model="model-b"))).status == 200
    assert (await _send(stack, chat("scoped phrase", model="model-a"))).status == 400


async def test_scope_limits_a_rule_to_its_routes(make_stack: StackFactory, upstream_server: Any) -> None:
    other = {"name": "other", "path_prefix": "/other/", "upstream": str(upstream_server.make_url(""))}
    stack = await make_stack(routes=[other])  # a rule may only name a configured route
    await stack.push({"pattern": "scoped phrase", "scope": {"routes": ["other"]}})
    assert (await _send(stack, chat("scoped phrase"))).status == 200
    await stack.push({"pattern": "route phrase", "scope": {"routes": ["default"]}})
    assert (await _send(stack, chat("route phrase"))).status == 400


async def test_output_only_rule_does_not_block_input(stack: Stack) -> None:
    await stack.push({"pattern": "only out", "applies_to": "output"})
    assert (await _send(stack, chat("only out"))).status == 200


@interpreted_only
async def test_a_filter_fault_fails_closed(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    await stack.push({"pattern": "anything"})

    def broken(text: str) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr("gateway.filters.input_scan.TextView", broken)
    response = await _send(stack, chat("clean text"))
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "containment_unavailable"
    metrics = await (await stack.admin.get("/metrics")).text()
    assert 'containment_filter_faults_total{filter="input_scan"} 1.0' in metrics


async def test_push_is_enforced_on_the_very_next_request(make_stack: StackFactory) -> None:
    stack = await make_stack()
    for index in range(5):
        await stack.push({"pattern": f"phrase number {index}"})
        assert (await _send(stack, chat(f"say phrase number {index}"))).status == 400


async def test_unknown_content_encoding_is_refused_not_passed_unscanned(stack: Stack) -> None:
    response = await stack.gateway.post(
        "/v1/chat/completions", data=b"\x1f\x8b...", headers={"Content-Encoding": "compress"}
    )
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_encoding"
