"""Where a model's answer keeps its text, per API shape, and how a blocked answer is written.

Non-streaming documents: OpenAI chat completions (`choices[].message.content`, text parts, tool-call
arguments), completions (`choices[].text`), responses (`output[].content[].text`), Anthropic messages
(`content[].text`), and any other JSON (every string value but identifiers). Streaming events: the
chat/completions chunk, responses `response.output_text.delta` and Anthropic `content_block_delta`
shapes; other event streams are scanned as raw `data:` text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.formats import IDENTIFIER_KEYS
from gateway.sse import Event, SSEParser

Slot = tuple[Any, Any]  # (container, key): container[key] is a string


@dataclass(slots=True)
class Section:
    """Text slots that are blocked together (one chat choice, or a whole document)."""

    slots: list[Slot]
    owner: dict[str, Any]
    shape: str


def sections(document: object) -> list[Section]:
    if not isinstance(document, dict):
        return [Section(list(_strings(document)), {}, "generic")]
    kind = document.get("object")
    choices = document.get("choices")
    if kind in ("chat.completion", "text_completion") and isinstance(choices, list):
        found = []
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            if kind == "text_completion":
                slots = [(choice, "text")] if isinstance(choice.get("text"), str) else []
            else:
                slots = _message_slots(choice.get("message"))
            found.append(Section(slots, choice, "chat" if kind == "chat.completion" else "completion"))
        return found
    if kind == "response" and isinstance(document.get("output"), list):
        slots = [
            (part, "text")
            for item in document["output"]
            if isinstance(item, dict) and isinstance(item.get("content"), list)
            for part in item["content"]
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return [Section(slots, document, "responses")]
    if document.get("type") == "message" and isinstance(document.get("content"), list):
        slots = [(p, "text") for p in document["content"] if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return [Section(slots, document, "anthropic")]
    return [Section(list(_strings(document)), document, "generic")]


def _message_slots(message: object) -> list[Slot]:
    if not isinstance(message, dict):
        return []
    slots: list[Slot] = []
    content = message.get("content")
    if isinstance(content, str):
        slots.append((message, "content"))
    elif isinstance(content, list):
        slots.extend((p, "text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if isinstance(message.get("refusal"), str):
        slots.append((message, "refusal"))
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            slots.append((function, "arguments"))
    return slots


def _strings(value: object) -> Iterator[Slot]:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                if key not in IDENTIFIER_KEYS:
                    yield value, key
            else:
                yield from _strings(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                yield value, index
            else:
                yield from _strings(item)


def block_section(section: Section) -> None:
    """Empty the section's text the way its API reports a content-filtered answer."""
    for container, key in section.slots:
        container[key] = ""
    owner = section.owner
    if section.shape in ("chat", "completion"):
        owner["finish_reason"] = "content_filter"
        message = owner.get("message")
        if isinstance(message, dict):
            message.pop("tool_calls", None)
    elif section.shape == "responses":
        owner["status"] = "incomplete"
        owner["incomplete_details"] = {"reason": "content_filter"}
    elif section.shape == "anthropic":
        owner["stop_reason"] = "refusal"


# ----- streams -----


@dataclass(slots=True)
class StreamPiece:
    """What one event means for the scan: text for the scanner `key`, and which scanners it ends."""

    document: dict[str, Any] | None
    shape: str
    texts: list[tuple[str, str]]  # (scanner key, text)
    ends: list[str]  # scanner keys whose text is complete
    ends_all: bool = False


_CHOICE_KEYS = {index: f"choice:{index}" for index in range(8)}


def classify(event: Event) -> StreamPiece:
    data = event.data
    if data == "[DONE]" or event.is_done:
        return StreamPiece(None, "done", [], [], ends_all=True)
    try:
        document = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        return StreamPiece(None, "raw", [("raw", data)] if data else [], [])
    kind = document.get("object")
    if kind in ("chat.completion.chunk", "text_completion") and isinstance(document.get("choices"), list):
        chat = kind == "chat.completion.chunk"
        field = "content" if chat else "text"
        texts, ends = [], []
        for choice in document["choices"]:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            key = (_CHOICE_KEYS.get(index) if type(index) is int else None) or f"choice:{index}"  # bool: "choice:True"
            holder = choice.get("delta") if chat else choice
            if isinstance(holder, dict) and isinstance(text := holder.get(field), str) and text:
                texts.append((key, text))
            if choice.get("finish_reason") is not None:
                ends.append(key)
        return StreamPiece(document, "chat" if chat else "completion", texts, ends)
    kind = document.get("type")
    if kind == "content_block_delta" and isinstance(document.get("delta"), dict):
        text = document["delta"].get("text")
        key = f"block:{document.get('index', 0)}"
        return StreamPiece(document, "anthropic", [(key, text)] if isinstance(text, str) and text else [], [])
    if kind == "content_block_stop":
        return StreamPiece(document, "anthropic", [], [f"block:{document.get('index', 0)}"])
    if kind in ("message_delta", "message_stop"):
        return StreamPiece(document, "anthropic", [], [], ends_all=True)
    if kind == "response.output_text.delta" and isinstance(document.get("delta"), str):
        key = f"output:{document.get('output_index', 0)}:{document.get('content_index', 0)}"
        return StreamPiece(document, "responses", [(key, document["delta"])] if document["delta"] else [], [])
    if kind == "response.output_text.done":
        key = f"output:{document.get('output_index', 0)}:{document.get('content_index', 0)}"
        return StreamPiece(document, "responses", [], [key])
    if kind in ("response.completed", "response.incomplete", "response.failed"):
        return StreamPiece(document, "responses", [], [], ends_all=True)
    return StreamPiece(document, "other", [], [])


def encode_event(document: dict[str, Any], event_name: str = "") -> bytes:
    prefix = f"event: {event_name}\n".encode() if event_name else b""
    return prefix + b"data: " + orjson.dumps(document) + b"\n\n"


_sse = encode_event


def strings_of(document: object) -> list[str]:
    return [container[key] for container, key in _strings(document)]


def strip_text(document: dict[str, Any] | None, shape: str) -> bytes:
    """A chat/completion chunk with its text removed and everything else (finish_reason) kept."""
    if document is None:
        return b""
    copy = orjson.loads(orjson.dumps(document))
    for choice in copy.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if shape == "chat" and isinstance(choice.get("delta"), dict):
            choice["delta"].pop("content", None)
        elif shape == "completion":
            choice["text"] = ""
    return encode_event(copy)


def text_event(template: dict[str, Any], shape: str, key: str, text: str) -> bytes:
    """A copy of the text event `template` carrying `text` for scanner `key` (and nothing else)."""
    document = orjson.loads(orjson.dumps(template))
    if shape in ("chat", "completion"):
        index = int(key.split(":")[1])
        field = "content" if shape == "chat" else "text"
        choice: dict[str, Any] = {"index": index, "finish_reason": None}
        choice["delta" if shape == "chat" else "text"] = {field: text} if shape == "chat" else text
        if shape == "completion":
            choice["logprobs"] = None
        document["choices"] = [choice]
        document.pop("usage", None)
        return _sse(document)
    if shape == "anthropic":
        document["delta"] = {"type": "text_delta", "text": text}
        return _sse(document, "content_block_delta")
    document["delta"] = text
    return _sse(document, "response.output_text.delta")


def cut_events(template: dict[str, Any] | None, shape: str, key: str) -> bytes:
    """The end of a stream whose next text matched a block rule."""
    if shape in ("chat", "completion") and template is not None:
        document: dict[str, Any] = {k: template[k] for k in ("id", "object", "created", "model") if k in template}
        index = int(key.split(":")[1]) if key.startswith("choice:") else 0
        choice: dict[str, Any] = {"index": index, "finish_reason": "content_filter"}
        choice["delta" if shape == "chat" else "text"] = {} if shape == "chat" else ""
        document["choices"] = [choice]
        return _sse(document) + b"data: [DONE]\n\n"
    if shape == "anthropic":
        return _sse(
            {"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_sequence": None}}, "message_delta"
        ) + _sse({"type": "message_stop"}, "message_stop")
    if shape == "responses":
        return _sse(
            {
                "type": "response.incomplete",
                "response": {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}},
            },
            "response.incomplete",
        )
    error = {
        "error": {
            "type": "invalid_request_error",
            "code": "content_filter",
            "message": "The response was stopped by the content policy.",
        }
    }
    return b"data: " + orjson.dumps(error) + b"\n\ndata: [DONE]\n\n"


def answer_text(content_type: str, body: bytes) -> str:
    """The text of a model's answer as the client received it (for samples and answer-length signals)."""
    if content_type.startswith("text/event-stream"):
        parser = SSEParser()
        events = parser.feed(body)
        tail = parser.close()
        if tail is not None:
            events.append(tail)
        return "".join(text for event in events for _, text in classify(event).texts)
    if "json" in content_type:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body.decode("utf-8", "replace")
        return "".join(str(container[key]) for section in sections(document) for container, key in section.slots)
    return body.decode("utf-8", "replace")


_SEVERE = {"medium", "high"}


def classifier_flagged(content_type: str, body: bytes) -> bool | None:
    """Whether the upstream's own content filter (Azure-style `content_filter_results`) flagged the
    answer at severity medium or high (or filtered it); None when the answer carries no such scores."""
    if "json" not in content_type or b"content_filter_results" not in body:
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    found: list[bool] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            results = value.get("content_filter_results")
            if isinstance(results, dict):
                for verdict in results.values():
                    if isinstance(verdict, dict):
                        found.append(verdict.get("filtered") is True or verdict.get("severity") in _SEVERE)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(document)
    return any(found) if found else None
