"""The answer helpers behind samples and anomaly signals, and the stream endings for each API shape."""

from __future__ import annotations

import orjson

from gateway.output_formats import answer_text, classifier_flagged, cut_events, strip_text


def _data(events: bytes) -> list[object]:
    return [
        orjson.loads(line.removeprefix(b"data: ")) if line != b"data: [DONE]" else "[DONE]"
        for line in events.splitlines()
        if line.startswith(b"data: ")
    ]


def test_answer_text_of_a_stream_a_document_and_plain_text() -> None:
    stream = b"".join(
        b"data: "
        + orjson.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": piece}]})
        + b"\n\n"
        for piece in ({"role": "assistant"}, {"content": "Hello, "}, {"content": "world"})
    )
    assert answer_text("text/event-stream", stream + b"data: [DONE]\n\n") == "Hello, world"
    assert answer_text("text/event-stream", b'data: {"type":"response.output_text.delta","delta":"no end"}') == "no end"
    document = {"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "an answer"}}]}
    assert answer_text("application/json", orjson.dumps(document)) == "an answer"
    assert answer_text("application/json", b"{not json") == "{not json"
    assert answer_text("text/plain", "caf\u00e9".encode()) == "caf\u00e9"


def test_the_upstreams_own_content_filter_scores() -> None:
    def answer(results: dict[str, object]) -> bytes:
        choice = {"message": {"content": "x"}, "content_filter_results": results}
        return orjson.dumps({"object": "chat.completion", "choices": [choice]})

    assert classifier_flagged("application/json", answer({"violence": {"filtered": False, "severity": "high"}}))
    assert classifier_flagged("application/json", answer({"hate": {"filtered": True, "severity": "safe"}}))
    assert classifier_flagged("application/json", answer({"hate": {"filtered": False, "severity": "low"}})) is False
    assert classifier_flagged("application/json", answer({})) is None  # scores present but empty
    assert classifier_flagged("application/json", b'{"choices": []}') is None
    assert classifier_flagged("application/json", b'{"content_filter_results": ') is None  # not JSON
    assert classifier_flagged("text/plain", answer({"hate": {"filtered": True}})) is None


def test_strip_text_keeps_the_finish_reason() -> None:
    chat = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}],
    }
    assert _data(strip_text(chat, "chat")) == [
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    ]
    completion = {"object": "text_completion", "choices": [{"index": 1, "text": "x", "finish_reason": "length"}]}
    assert _data(strip_text(completion, "completion")) == [
        {"object": "text_completion", "choices": [{"index": 1, "text": "", "finish_reason": "length"}]}
    ]
    assert strip_text(None, "chat") == b""
    assert chat["choices"][0]["delta"] == {"content": "x"}  # a copy was stripped, not the event


def test_every_shape_ends_a_cut_stream_the_way_its_clients_expect() -> None:
    template = {"id": "c1", "object": "text_completion", "created": 1, "model": "m", "choices": []}
    assert _data(cut_events(template, "completion", "choice:2")) == [
        {
            "id": "c1",
            "object": "text_completion",
            "created": 1,
            "model": "m",
            "choices": [{"index": 2, "finish_reason": "content_filter", "text": ""}],
        },
        "[DONE]",
    ]
    anthropic = cut_events(None, "anthropic", "block:0")
    assert b"event: message_delta" in anthropic and b"event: message_stop" in anthropic
    assert _data(anthropic)[0] == {"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": None}}
    responses = _data(cut_events(None, "responses", "output:0:0"))
    assert responses == [
        {
            "type": "response.incomplete",
            "response": {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}},
        }
    ]
    other = _data(cut_events(None, "raw", "raw"))
    assert other[0] == {
        "error": {
            "type": "invalid_request_error",
            "code": "content_filter",
            "message": "The response was stopped by the content policy.",
        }
    }
    assert other[1] == "[DONE]"
