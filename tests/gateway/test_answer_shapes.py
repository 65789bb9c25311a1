"""Every answer shape is scanned: tool-call arguments (escaped too), refusals, reasoning, Responses and
Anthropic tool-input deltas, NDJSON (Ollama) streams, and the same parts of whole answers. Streams are
cut with the shape's own terminal event at any chunking, and the blocked phrase never reaches the client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.context import Identity, RequestContext
from gateway.filters.output_scan import OutputInspector
from gateway.json_escapes import EscapeDecoder, decode_escapes
from gateway.metrics import GatewayMetrics
from gateway.output_formats import answer_text
from gateway.routing import Router
from gateway.settings import RouteConfig
from rules.compile import compile_policy
from rules.model import Policy, RuleSpec, utcnow
from tests.conftest import StackFactory

PHRASE = "nerve agent"
RULES: list[dict[str, Any]] = [
    {"pattern": PHRASE, "applies_to": "output"},
    {"pattern": "hunter2", "applies_to": "output", "action": "redact"},
]
# The phrase arrives in pieces; in JSON-text shapes one piece hides a letter behind an escape cut in two.
PIECES = ["Here is how: ner", "ve ag", "ent synthesis, step one"]
CLEAN = ["Here is how: ner", "vous ag", "ents relax, step one"]
ARGUMENTS = ['{"query": "ner', "ve \\u00", '61gent", "n": 1}']
CLEAN_ARGUMENTS = ['{"query": "ner', "vous \\u00", '61gents", "n": 1}']


def sse(document: dict[str, Any], name: str = "") -> bytes:
    return (f"event: {name}\n".encode() if name else b"") + b"data: " + orjson.dumps(document) + b"\n\n"


def chat_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return sse(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


def chat_stream(field: str) -> Callable[[list[str]], bytes]:
    def build(pieces: list[str]) -> bytes:
        body = chat_chunk({"role": "assistant"})
        body += b"".join(chat_chunk({field: piece}) for piece in pieces)
        return body + chat_chunk({}, "stop") + b"data: [DONE]\n\n"

    return build


def chat_tool_stream(pieces: list[str]) -> bytes:
    first = {"index": 1, "id": "call_1", "type": "function", "function": {"name": "search", "arguments": ""}}
    body = chat_chunk({"role": "assistant", "tool_calls": [first]})
    body += b"".join(chat_chunk({"tool_calls": [{"index": 1, "function": {"arguments": p}}]}) for p in pieces)
    return body + chat_chunk({}, "tool_calls") + b"data: [DONE]\n\n"


def responses_stream(kind: str, index_key: str = "content_index") -> Callable[[list[str]], bytes]:
    def build(pieces: list[str]) -> bytes:
        body = sse({"type": "response.created", "response": {"id": "r"}}, "response.created")
        for piece in pieces:
            event = {"type": f"response.{kind}.delta", "item_id": "i", "output_index": 0, index_key: 0, "delta": piece}
            body += sse(event, event["type"])
        return body + sse({"type": "response.completed", "response": {"id": "r"}}, "response.completed")

    return build


def responses_arguments_stream(pieces: list[str]) -> bytes:
    body = sse({"type": "response.created", "response": {"id": "r"}}, "response.created")
    for piece in pieces:
        event = {"type": "response.function_call_arguments.delta", "item_id": "i", "output_index": 1, "delta": piece}
        body += sse(event, event["type"])
    done = {"type": "response.function_call_arguments.done", "output_index": 1, "arguments": "".join(pieces)}
    return body + sse(done, done["type"])


def anthropic_stream(delta_type: str, field: str, block: dict[str, Any]) -> Callable[[list[str]], bytes]:
    def build(pieces: list[str]) -> bytes:
        body = sse({"type": "message_start", "message": {"id": "m"}}, "message_start")
        body += sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start")
        for piece in pieces:
            event = {"type": "content_block_delta", "index": 0, "delta": {"type": delta_type, field: piece}}
            body += sse(event, "content_block_delta")
        body += sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        body += sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}, "message_delta")
        return body + sse({"type": "message_stop"}, "message_stop")

    return build


def ollama_stream(kind: str, field: str = "content") -> Callable[[list[str]], bytes]:
    def line(piece: str, done: bool) -> bytes:
        document: dict[str, Any] = {"model": "llama", "created_at": "2025-01-01T00:00:00Z"}
        if kind == "chat":
            document["message"] = {"role": "assistant", field: piece}
        else:
            document[field] = piece
        document["done"] = done
        if done:
            document["done_reason"] = "stop"
        return orjson.dumps(document) + b"\n"

    def build(pieces: list[str]) -> bytes:
        return b"".join(line(piece, False) for piece in pieces) + line("", True)

    return build


def unknown_stream(pieces: list[str]) -> bytes:
    body = b"".join(sse({"type": "custom.delta", "payload": {"words": [piece]}}) for piece in pieces)
    return body + b"data: [DONE]\n\n"


TOOL_BLOCK = {"type": "tool_use", "id": "t", "name": "search", "input": {}}
THINKING_BLOCK = {"type": "thinking", "thinking": ""}
# name: (content type, build, pieces, clean pieces, how a cut stream ends)
STREAMS: dict[str, tuple[str, Callable[[list[str]], bytes], list[str], list[str], bytes]] = {
    "chat tool-call arguments": ("text/event-stream", chat_tool_stream, ARGUMENTS, CLEAN_ARGUMENTS, b"content_filter"),
    "chat tool-call arguments, plain": ("text/event-stream", chat_tool_stream, PIECES, CLEAN, b"content_filter"),
    "chat refusal": ("text/event-stream", chat_stream("refusal"), PIECES, CLEAN, b"content_filter"),
    "chat reasoning_content": ("text/event-stream", chat_stream("reasoning_content"), PIECES, CLEAN, b"content_filter"),
    "chat reasoning": ("text/event-stream", chat_stream("reasoning"), PIECES, CLEAN, b"content_filter"),
    "responses refusal": ("text/event-stream", responses_stream("refusal"), PIECES, CLEAN, b"response.incomplete"),
    "responses function arguments": (
        "text/event-stream",
        responses_arguments_stream,
        ARGUMENTS,
        CLEAN_ARGUMENTS,
        b"response.incomplete",
    ),
    "responses reasoning text": (
        "text/event-stream",
        responses_stream("reasoning_text"),
        PIECES,
        CLEAN,
        b"response.incomplete",
    ),
    "responses reasoning summary": (
        "text/event-stream",
        responses_stream("reasoning_summary_text", "summary_index"),
        PIECES,
        CLEAN,
        b"response.incomplete",
    ),
    "anthropic input_json_delta": (
        "text/event-stream",
        anthropic_stream("input_json_delta", "partial_json", TOOL_BLOCK),
        ARGUMENTS,
        CLEAN_ARGUMENTS,
        b'"stop_reason":"refusal"',
    ),
    "anthropic thinking_delta": (
        "text/event-stream",
        anthropic_stream("thinking_delta", "thinking", THINKING_BLOCK),
        PIECES,
        CLEAN,
        b'"stop_reason":"refusal"',
    ),
    "ollama chat": ("application/x-ndjson", ollama_stream("chat"), PIECES, CLEAN, b'"done_reason":"content_filter"'),
    "ollama chat thinking": (
        "application/x-ndjson",
        ollama_stream("chat", "thinking"),
        PIECES,
        CLEAN,
        b'"done_reason":"content_filter"',
    ),
    "ollama generate": (
        "application/x-ndjson",
        ollama_stream("generate", "response"),
        PIECES,
        CLEAN,
        b'"done_reason":"content_filter"',
    ),
    "unknown JSON events": ("text/event-stream", unknown_stream, PIECES, CLEAN, b'"code":"content_filter"'),
}


def _strings(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return [value] if isinstance(value, str) else []


def received_text(body: bytes) -> str:
    """Every string the client received, in order, joined, with JSON string escapes decoded."""
    out: list[str] = []
    for line in body.splitlines():
        data = line.removeprefix(b"data: ")
        if not data.startswith(b"{"):
            continue
        out.extend(_strings(orjson.loads(data)))
    return decode_escapes("".join(out))


def same_answer(content_type: str, out: bytes, expected: bytes) -> bool:
    """The client got the answer's text unchanged (re-chunked, perhaps: redact rules hold text back);
    events the gateway cannot rewrite byte for byte."""
    text = answer_text(content_type, expected)
    return answer_text(content_type, out) == text if text else out == expected


# ----- through the gateway -----


def _upstream(content_type: str, body: bytes) -> web.Application:
    async def handler(request: web.Request) -> web.StreamResponse:
        size = int(request.headers.get("X-Chunk", "7"))
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for start in range(0, len(body), size):
            await response.write(body[start : start + size])
            await asyncio.sleep(0)
        return response

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    return app


@pytest.mark.parametrize("name", list(STREAMS))
async def test_every_streamed_shape_is_cut_at_every_chunk_size(
    name: str, aiohttp_server: Any, make_stack: StackFactory, tmp_path: Path
) -> None:
    content_type, build, pieces, clean, ending = STREAMS[name]
    blocked_server = await aiohttp_server(_upstream(content_type, build(pieces)))
    clean_server = await aiohttp_server(_upstream(content_type, build(clean)))
    blocked = await make_stack(upstream=str(blocked_server.make_url("")), state_dir=tmp_path / "a")
    await blocked.push(*RULES)
    passing = await make_stack(upstream=str(clean_server.make_url("")), state_dir=tmp_path / "b")
    await passing.push(*RULES)
    for size in range(1, 8):
        headers = {"X-Chunk": str(size)}
        body = await (await blocked.gateway.post("/v1/x", json={"stream": True}, headers=headers)).read()
        assert ending in body, (size, body)
        assert PHRASE not in received_text(body), (size, body)
        assert "synthesis" not in received_text(body)  # nothing after the phrase either
        body = await (await passing.gateway.post("/v1/x", json={"stream": True}, headers=headers)).read()
        assert same_answer(content_type, body, build(clean)), (size, body)


async def test_streamed_reasoning_is_redacted_and_tool_arguments_fail_closed(
    aiohttp_server: Any, make_stack: StackFactory, tmp_path: Path
) -> None:
    secret = ["the password is hun", "ter2, keep it"]
    reasoning = await aiohttp_server(_upstream("text/event-stream", chat_stream("reasoning_content")(secret)))
    arguments = await aiohttp_server(_upstream("text/event-stream", chat_tool_stream(['{"p": "hun', 'ter2"}'])))
    stack = await make_stack(upstream=str(reasoning.make_url("")), state_dir=tmp_path / "a")
    await stack.push(*RULES)
    body = await (await stack.gateway.post("/v1/x", json={"stream": True})).read()
    assert answer_text("text/event-stream", body) == "the password is [REDACTED], keep it"
    assert b"hunter2" not in body and b'"finish_reason":"stop"' in body
    tools = await make_stack(upstream=str(arguments.make_url("")), state_dir=tmp_path / "b")
    await tools.push(*RULES)
    body = await (await tools.gateway.post("/v1/x", json={"stream": True})).read()
    assert b"content_filter" in body and "hunter2" not in received_text(body)


# ----- whole answers -----


def _chat(message: dict[str, Any]) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


ESCAPED = '{"query": "ner\\u0076e \\u0061gent"}'
WHOLE: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], bool]]] = {
    "chat reasoning_content": (
        _chat({"role": "assistant", "content": "ok", "reasoning_content": "the nerve agent"}),
        lambda d: d["choices"][0]["finish_reason"] == "content_filter",
    ),
    "chat reasoning": (
        _chat({"role": "assistant", "content": "ok", "reasoning": "the nerve agent"}),
        lambda d: d["choices"][0]["finish_reason"] == "content_filter",
    ),
    "chat escaped tool-call arguments": (
        _chat(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "s", "arguments": ESCAPED}}],
            }
        ),
        lambda d: "tool_calls" not in d["choices"][0]["message"],
    ),
    "responses function_call": (
        {
            "object": "response",
            "output": [{"type": "function_call", "call_id": "c", "name": "s", "arguments": ESCAPED}],
        },
        lambda d: d["status"] == "incomplete" and d["output"] == [],
    ),
    "responses reasoning summary": (
        {
            "object": "response",
            "output": [
                {"type": "reasoning", "summary": [{"type": "summary_text", "text": "the nerve agent"}]},
                {"type": "message", "content": [{"type": "output_text", "text": "ok"}]},
            ],
        },
        lambda d: d["status"] == "incomplete" and [item["type"] for item in d["output"]] == ["message"],
    ),
    "responses refusal part": (
        {"object": "response", "output": [{"type": "message", "content": [{"type": "refusal", "refusal": PHRASE}]}]},
        lambda d: d["status"] == "incomplete",
    ),
    "anthropic tool_use input": (
        {
            "type": "message",
            "content": [
                {"type": "tool_use", "id": "t", "name": "s", "input": {"query": {"deep": ["the nerve agent"]}}}
            ],
            "stop_reason": "tool_use",
        },
        lambda d: d["stop_reason"] == "refusal" and d["content"] == [],
    ),
    "anthropic thinking": (
        {
            "type": "message",
            "content": [
                {"type": "thinking", "thinking": "a nerve agent", "signature": "x"},
                {"type": "text", "text": "ok"},
            ],
        },
        lambda d: d["stop_reason"] == "refusal" and d["content"] == [{"type": "text", "text": ""}],
    ),
    "ollama chat": (
        {
            "model": "llama",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "s", "arguments": {"q": PHRASE}}}],
            },
            "done": True,
            "done_reason": "stop",
        },
        lambda d: d["done_reason"] == "content_filter" and "tool_calls" not in d["message"],
    ),
    "ollama generate thinking": (
        {"model": "llama", "response": "ok", "thinking": "the nerve agent", "done": True, "done_reason": "stop"},
        lambda d: d["done_reason"] == "content_filter" and d["response"] == "",
    ),
}


@pytest.mark.parametrize("name", list(WHOLE))
async def test_every_whole_shape_is_blocked(name: str, aiohttp_server: Any, make_stack: StackFactory) -> None:
    document, ended = WHOLE[name]

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    stack = await make_stack(upstream=str(server.make_url("")))
    await stack.push(*RULES)
    response = await stack.gateway.post("/v1/x", json={})
    body = await response.read()
    assert response.headers["X-Containment-Action"] == "block"
    assert PHRASE not in received_text(body) and "nerve" not in received_text(body)
    assert ended(orjson.loads(body))


async def test_whole_escaped_arguments_with_a_redact_hit_block(aiohttp_server: Any, make_stack: StackFactory) -> None:
    document = _chat(
        {"role": "assistant", "tool_calls": [{"function": {"name": "s", "arguments": '{"p": "hunte\\u0072\\u0032"}'}}]}
    )

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    stack = await make_stack(upstream=str((await aiohttp_server(app)).make_url("")))
    await stack.push(*RULES)
    body = await (await stack.gateway.post("/v1/x", json={})).json()
    assert body["choices"][0]["finish_reason"] == "content_filter" and "tool_calls" not in body["choices"][0]["message"]


# ----- any chunking, without HTTP -----


def _inspector() -> OutputInspector:
    now = utcnow()
    rules = tuple(RuleSpec.model_validate(rule).to_rule(created_by="t", now=now) for rule in RULES)
    compiled = compile_policy(Policy(version=1, rules=rules))
    route = Router([RouteConfig(name="default", path_prefix="/", upstream="http://127.0.0.1:1")]).routes[0]
    ctx = RequestContext(
        request_id="t",
        method="POST",
        path="/v1/x",
        route=route,
        identity=Identity(key_id=None, client_ip="127.0.0.1"),
        snapshot=compiled,
        now=now,
        stream=True,
    )
    return OutputInspector(ctx, compiled.output, GatewayMetrics(CollectorRegistry()))


INSPECTOR = _inspector()


def _run(content_type: str, chunks: list[bytes]) -> tuple[bytes, bool]:
    stream = INSPECTOR.stream(ndjson=content_type != "text/event-stream")
    out = [stream.feed(chunk) for chunk in chunks]
    if not stream.cut:
        out.append(stream.close())
    return b"".join(out), stream.cut


@st.composite
def chunked(draw: st.DrawFn) -> tuple[str, bool, list[bytes]]:
    name = draw(st.sampled_from(list(STREAMS)))
    content_type, build, pieces, clean, _ = STREAMS[name]
    blocked = draw(st.booleans())
    body = build(pieces if blocked else clean)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=40))))
    bounds = [0, *cuts, len(body)]
    return name, blocked, [body[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunked())
def test_any_chunking_gives_the_same_verdict_and_never_the_phrase(case: tuple[str, bool, list[bytes]]) -> None:
    name, blocked, chunks = case
    content_type = STREAMS[name][0]
    whole, whole_cut = _run(content_type, [b"".join(chunks)])
    out, cut = _run(content_type, chunks)
    assert cut == whole_cut == blocked
    assert PHRASE not in received_text(out)
    if not blocked:
        assert same_answer(content_type, out, b"".join(chunks))


@given(
    st.lists(st.sampled_from(["a", "\\u0073", "\\ud83d\\ude00", '\\"', "\\\\", "é", "\\n", "x\\"]), max_size=12),
    st.data(),
)
def test_escape_decoder_at_any_split_equals_the_whole(parts: list[str], data: st.DataObject) -> None:
    text = "".join(parts)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), max_size=6))))
    decoder = EscapeDecoder()
    out: list[str] = []
    ends: list[int] = []
    for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True):
        decoded, positions = decoder.feed(text[a:b])
        out.append(decoded)
        ends += positions
    decoded, positions = decoder.feed("", final=True)
    out.append(decoded)
    ends += positions
    assert "".join(out) == decode_escapes(text)
    assert len(ends) == len("".join(out)) and ends == sorted(ends) and (not ends or ends[-1] == len(text))


# ----- found by the red team -----


def _logprob_chunk(text: str) -> bytes:
    tokens = [{"token": text, "logprob": -0.1, "bytes": list(text.encode()), "top_logprobs": []}]
    return sse(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [
                {"index": 0, "delta": {"content": text}, "logprobs": {"content": tokens}, "finish_reason": None}
            ],
        }
    )


def test_logprob_tokens_do_not_spell_text_that_is_held_back() -> None:
    chunks = [_logprob_chunk(piece) for piece in PIECES] + [chat_chunk({}, "stop"), b"data: [DONE]\n\n"]
    out, cut = _run("text/event-stream", chunks)
    assert cut
    tokens = "".join(
        token["token"]
        for line in out.splitlines()
        if line.startswith(b"data: {")
        for choice in orjson.loads(line[6:]).get("choices") or []
        for token in ((choice.get("logprobs") or {}).get("content") or [])
    )
    assert "ner" not in tokens and "ner" not in received_text(out)


@pytest.mark.parametrize("ending", [b"", b"data: [DONE]\n\n"], ids=["stream ends", "[DONE] follows"])
def test_a_phrase_at_the_end_of_an_unknown_stream_is_decided_before_it_is_sent(ending: bytes) -> None:
    chunks = [b'data: {"x": "the agent is ner"}\n\n', b'data: {"x": "ve agent"}\n\n', ending]
    out, cut = _run("text/event-stream", [chunk for chunk in chunks if chunk])
    assert cut and "ve agent" not in out.decode()


def _whole(document: dict[str, Any]) -> dict[str, Any]:
    inspector = _inspector()
    changed = inspector.inspect_document(document)
    assert inspector.action == "block", inspector.action
    assert changed is not None
    return changed


def test_a_blocked_whole_answer_keeps_no_logprob_token_of_it() -> None:
    tokens = [{"token": word, "logprob": -0.1, "top_logprobs": [{"token": word}]} for word in ["nerve", " agent"]]
    document = _chat({"role": "assistant", "content": "Use nerve agent."})
    document["choices"][0]["logprobs"] = {"content": tokens}
    assert "nerve" not in received_text(orjson.dumps(_whole(document)))


@pytest.mark.parametrize(
    "where",
    ["logprobs", "audio transcript", "annotation", "tool name", "code interpreter"],
)
def test_a_phrase_only_outside_the_text_slots_blocks_the_whole_answer(where: str) -> None:
    if where == "logprobs":
        document = _chat({"role": "assistant", "content": "Fine."})
        document["choices"][0]["logprobs"] = {"content": [{"token": "nerve agent", "logprob": -1.0}]}
    elif where == "audio transcript":
        document = _chat({"role": "assistant", "content": None, "audio": {"id": "a", "transcript": "nerve agent"}})
    elif where == "annotation":
        document = _chat(
            {"role": "assistant", "content": "Fine.", "annotations": [{"url_citation": {"title": "nerve agent"}}]}
        )
    elif where == "tool name":
        document = _chat(
            {"role": "assistant", "tool_calls": [{"function": {"name": "nerve_agent", "arguments": "{}"}}]}
        )
    else:
        document = {
            "object": "response",
            "output": [
                {"type": "code_interpreter_call", "code": "print('nerve agent')"},
                {"type": "message", "content": [{"type": "output_text", "text": "Fine."}]},
            ],
        }
    assert "nerve" not in received_text(orjson.dumps(_whole(document)))
