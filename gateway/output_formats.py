"""Where a model's answer keeps its text, per API shape, and how a blocked answer is written.

Non-streaming documents: OpenAI chat completions (`choices[].message`: content, text parts, refusal,
`reasoning_content`/`reasoning`/`reasoning_details`, tool-call and legacy function-call arguments),
completions (`choices[].text`), responses (`output[]`: message text and refusal parts, `function_call`
arguments, `custom_tool_call` input, `reasoning` summary and text), Anthropic messages (`content[]`:
text, thinking, `tool_use` input), Ollama (`message`, `response`, `thinking`), and any other JSON
(every string value but identifiers). Tool arguments given as JSON text are also checked with their
string escapes decoded; tool inputs given as objects have their keys checked.

Streaming events: chat/completions chunks (every string field of a delta, tool-call arguments per call,
other delta structures checked), every Responses API `response.*.delta` with string text, Anthropic
`content_block_delta` (`text_delta`, `thinking_delta`, `input_json_delta`; other deltas checked), and
NDJSON lines (Ollama). Other events are scanned as opaque text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.formats import IDENTIFIER_KEYS
from gateway.sse import Event, NDJSONParser, SSEParser

Slot = tuple[Any, Any]  # (container, key): container[key] is a string
JsonPath = tuple[str | int, ...]  # where a streamed text sits in its event


@dataclass(slots=True)
class Section:
    """Text slots that are blocked together (one chat choice, or a whole document). `arguments` are the
    slots (among `slots`) that hold JSON text, also checked with their string escapes decoded; `keys`
    are object keys of tool inputs, checked too (they cannot be redacted: a redact hit there blocks)."""

    slots: list[Slot]
    owner: dict[str, Any]
    shape: str
    arguments: list[Slot] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


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
            section = Section([], choice, "chat" if kind == "chat.completion" else "completion")
            if kind == "text_completion":
                if isinstance(choice.get("text"), str):
                    section.slots.append((choice, "text"))
            else:
                _message_slots(choice.get("message"), section)
            found.append(section)
        return found
    if kind == "response" and isinstance(document.get("output"), list):
        section = Section([], document, "responses")
        for item in document["output"]:
            if isinstance(item, dict):
                _response_item(item, section)
        return [section]
    if document.get("type") == "message" and isinstance(document.get("content"), list):
        section = Section([], document, "anthropic")
        for block in document["content"]:
            if isinstance(block, dict):
                _anthropic_block(block, section)
        return [section]
    if "done" in document and (isinstance(document.get("message"), dict) or isinstance(document.get("response"), str)):
        section = Section([], document, "ollama")
        for name in ("response", "thinking"):
            if isinstance(document.get(name), str):
                section.slots.append((document, name))
        _message_slots(document.get("message"), section)
        return [section]
    return [Section(list(_strings(document)), document, "generic")]


_MESSAGE_TEXT = ("content", "refusal", "reasoning_content", "reasoning", "thinking")


def _message_slots(message: object, section: Section) -> None:
    """Chat (and Ollama) message text: content (string or parts), refusal, reasoning, tool calls."""
    if not isinstance(message, dict):
        return
    slots = section.slots
    for name in _MESSAGE_TEXT:
        value = message.get(name)
        if isinstance(value, str):
            slots.append((message, name))
        elif name == "content" and isinstance(value, list):
            slots.extend((p, "text") for p in value if isinstance(p, dict) and isinstance(p.get("text"), str))
    details = message.get("reasoning_details")  # OpenRouter: reasoning as typed parts
    if isinstance(details, list):
        slots.extend(
            (part, name)
            for part in details
            if isinstance(part, dict)
            for name in ("text", "summary")
            if isinstance(part.get(name), str)
        )
    calls = message.get("tool_calls")
    functions = [call.get("function") for call in calls if isinstance(call, dict)] if isinstance(calls, list) else []
    functions.append(message.get("function_call"))  # the legacy single call
    for function in functions:
        if isinstance(function, dict):
            _tool_input(function, "arguments", section)


def _tool_input(holder: dict[str, Any], name: str, section: Section) -> None:
    """Tool input: JSON text (scanned raw and decoded) or an object (its strings and keys)."""
    value = holder.get(name)
    if isinstance(value, str):
        section.slots.append((holder, name))
        section.arguments.append((holder, name))
    elif isinstance(value, (dict, list)):
        section.slots.extend(_strings(value, skip=frozenset()))
        section.keys.extend(_keys(value))


def _response_item(item: dict[str, Any], section: Section) -> None:
    """A responses output item: message parts (text, refusal), function and custom tool calls, reasoning."""
    kind = item.get("type")
    if kind == "function_call":
        _tool_input(item, "arguments", section)
    elif kind == "custom_tool_call":
        if isinstance(item.get("input"), str):
            section.slots.append((item, "input"))
    for name in ("content", "summary"):
        parts = item.get(name)
        if isinstance(parts, list):
            section.slots.extend(
                (part, key)
                for part in parts
                if isinstance(part, dict)
                for key in ("text", "refusal")
                if isinstance(part.get(key), str)
            )


def _anthropic_block(block: dict[str, Any], section: Section) -> None:
    """An Anthropic content block: text, thinking, or a tool's input object."""
    for name in ("text", "thinking"):
        if isinstance(block.get(name), str):
            section.slots.append((block, name))
    if block.get("type") in ("tool_use", "server_tool_use"):
        _tool_input(block, "input", section)


def _strings(value: object, skip: frozenset[str] = IDENTIFIER_KEYS) -> Iterator[Slot]:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                if key not in skip:
                    yield value, key
            else:
                yield from _strings(item, skip)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                yield value, index
            else:
                yield from _strings(item, skip)


def _keys(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def block_section(section: Section) -> None:
    """Empty the section's text the way its API reports a content-filtered answer; tool calls, tool
    inputs and reasoning items go with it (a blocked call is never forwarded with its arguments)."""
    for container, key in section.slots:
        container[key] = ""
    owner = section.owner
    if section.shape in ("chat", "completion"):
        owner["finish_reason"] = "content_filter"
        message = owner.get("message")
        if isinstance(message, dict):
            message.pop("tool_calls", None)
            message.pop("function_call", None)
    elif section.shape == "responses":
        owner["status"] = "incomplete"
        owner["incomplete_details"] = {"reason": "content_filter"}
        owner["output"] = [item for item in owner["output"] if isinstance(item, dict) and item.get("type") == "message"]
    elif section.shape == "anthropic":
        owner["stop_reason"] = "refusal"
        owner["content"] = [block for block in owner["content"] if isinstance(block, dict) and "text" in block]
    elif section.shape == "ollama":
        owner["done_reason"] = "content_filter"
        message = owner.get("message")
        if isinstance(message, dict):
            message.pop("tool_calls", None)
    # Whatever else the blocked part carries goes too: logprob tokens spell its text, and an audio
    # transcript, annotations or a tool's name may say the same.
    for container, key in list(_strings(owner, _KEPT_ON_BLOCK)):
        container[key] = ""


# Fields a blocked answer keeps: identifiers and the block's own report.
_KEPT_ON_BLOCK = IDENTIFIER_KEYS | frozenset(
    {"finish_reason", "status", "stop_reason", "reason", "done_reason", "created_at", "call_id", "stop_sequence"}
)


def remainder(document: object, sections_found: list[Section]) -> str:
    """Every string of an answer that no section's slots hold (identifiers aside), one per line: what a
    block must still be found in (a phrase in a logprob token, a code interpreter's code, a citation)."""
    held = {(id(container), key) for section in sections_found for container, key in section.slots}
    return "\n".join(container[key] for container, key in _strings(document) if (id(container), key) not in held)


# ----- streams -----


@dataclass(slots=True)
class StreamPiece:
    """What one event means for the scan: text for the scanner `key` (and where it sits in the event,
    so that it can be rewritten), texts that can only be checked, and which scanners it ends. A key's
    scanners are ended with it by prefix: ending `choice:0` ends `choice:0/tool:1/args`."""

    document: dict[str, Any] | None
    shape: str
    texts: list[tuple[str, str, JsonPath]]  # (scanner key, text, path in the event)
    ends: list[str]  # scanner keys whose text is complete
    ends_all: bool = False
    checks: list[tuple[str, str]] | None = None  # (scanner key, text): scanned, never rewritten


_CHOICE_KEYS = {index: f"choice:{index}" for index in range(8)}
_ANTHROPIC_DELTAS = {"text_delta": ("text", ""), "thinking_delta": ("thinking", "/thinking")}
_ANTHROPIC_DELTAS["input_json_delta"] = ("partial_json", "/args")
_UNSCANNED_DELTAS = frozenset({"signature_delta"})  # an opaque signature of the thinking text
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")


def is_ndjson(content_type: str) -> bool:
    return content_type.startswith(NDJSON_TYPES)


def _load(event: Event) -> dict[str, Any] | None:
    data = event.data
    try:
        document = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def classify(event: Event) -> StreamPiece:
    data = event.data
    if data == "[DONE]" or event.is_done:
        return StreamPiece(None, "done", [], [], ends_all=True)
    try:
        document = orjson.loads(data) if data else None
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        return StreamPiece(None, "raw", [("raw", data, ())] if data else [], [])
    kind = document.get("object")
    if kind in ("chat.completion.chunk", "text_completion") and isinstance(document.get("choices"), list):
        return _choices(document, kind == "chat.completion.chunk")
    kind = document.get("type")
    if isinstance(kind, str):
        if kind.startswith("response."):
            return _responses(document, kind)
        if kind.startswith(("content_block_", "message_")):
            return _anthropic(document, kind)
    return StreamPiece(document, "other", [], [])


def _choices(document: dict[str, Any], chat: bool) -> StreamPiece:
    texts: list[tuple[str, str, JsonPath]] = []
    ends: list[str] = []
    checks: list[tuple[str, str]] = []
    for position, choice in enumerate(document["choices"]):
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", 0)
        key = (_CHOICE_KEYS.get(index) if type(index) is int else None) or f"choice:{index}"  # bool: "choice:True"
        if chat:
            delta = choice.get("delta")
            if isinstance(delta, dict):
                for name, value in delta.items():
                    if type(value) is str:
                        if value and name not in IDENTIFIER_KEYS:
                            texts.append(
                                (
                                    key if name == "content" else f"{key}/{name}",
                                    value,
                                    ("choices", position, "delta", name),
                                )
                            )
                    elif value is not None:
                        _chat_nested(key, position, name, value, texts, checks)
        elif isinstance(text := choice.get("text"), str) and text:
            texts.append((key, text, ("choices", position, "text")))
        if choice.get("finish_reason") is not None:
            ends.append(key)
    return StreamPiece(document, "chat" if chat else "completion", texts, ends, checks=checks or None)


def _chat_nested(
    key: str,
    position: int,
    name: str,
    value: object,
    texts: list[tuple[str, str, JsonPath]],
    checks: list[tuple[str, str]],
) -> None:
    """Tool-call arguments (one scanner per call index), the legacy `function_call`, and any other
    structure in a delta (`reasoning_details`, `audio`...): its strings are checked."""
    if name == "tool_calls" and isinstance(value, list):
        for place, call in enumerate(value):
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                arguments = function.get("arguments")
                number = call.get("index", place)
                if isinstance(arguments, str) and arguments:
                    path: JsonPath = ("choices", position, "delta", "tool_calls", place, "function", "arguments")
                    texts.append((f"{key}/tool:{number}/args", arguments, path))
                if isinstance(function.get("name"), str) and function["name"]:
                    checks.append((f"{key}/tool:{number}/name", function["name"]))
        return
    if name == "function_call" and isinstance(value, dict):
        if isinstance(value.get("arguments"), str) and value["arguments"]:
            texts.append((f"{key}/fc/args", value["arguments"], ("choices", position, "delta", name, "arguments")))
        return
    strings = strings_of(value)
    if strings:
        checks.append((f"{key}/{name}", "\n".join(strings) + "\n"))


def _anthropic(document: dict[str, Any], kind: str) -> StreamPiece:
    key = f"block:{document.get('index', 0)}"
    if kind == "content_block_delta":
        delta = document.get("delta")
        if not isinstance(delta, dict):
            return StreamPiece(document, "other", [], [])
        known = _ANTHROPIC_DELTAS.get(delta.get("type", "text_delta"))
        if known is not None:
            name, suffix = known
            text = delta.get(name)
            if not isinstance(text, str) or not text:
                return StreamPiece(document, "anthropic", [], [])
            return StreamPiece(document, "anthropic", [(key + suffix, text, ("delta", name))], [])
        if delta.get("type") in _UNSCANNED_DELTAS:
            return StreamPiece(document, "anthropic", [], [])
        return StreamPiece(
            document, "anthropic", [], [], checks=[(key + "/other", "\n".join(strings_of(delta)) + "\n")]
        )
    if kind == "content_block_start":
        strings = strings_of(document.get("content_block"))
        checks = [(key + "/start", "\n".join(strings) + "\n")] if strings else []
        return StreamPiece(document, "anthropic", [], [], checks=checks)
    if kind == "content_block_stop":
        return StreamPiece(document, "anthropic", [], [key])
    if kind in ("message_delta", "message_stop"):
        return StreamPiece(document, "anthropic", [], [], ends_all=True)
    return StreamPiece(document, "other", [], [])


def _responses(document: dict[str, Any], kind: str) -> StreamPiece:
    """Responses API events: every `response.*.delta` with string text (output text, refusal, function
    and custom tool call input, reasoning text and summary, transcripts) has its own scanner; the
    other events repeat text already streamed and are scanned whole (see StreamInspector)."""
    if kind in ("response.completed", "response.incomplete", "response.failed"):
        return StreamPiece(document, "responses", [], [], ends_all=True)
    stem = kind[9:]
    if stem.endswith(".delta"):
        stem = stem[:-6]
        delta = document.get("delta")
        if not isinstance(delta, str) or stem == "audio":  # `response.audio.delta` is base64 audio
            return StreamPiece(document, "responses", [], [])
        texts: list[tuple[str, str, JsonPath]] = [(_responses_key(document, stem), delta, ("delta",))]
        return StreamPiece(document, "responses", texts if delta else [], [])
    if stem.endswith(".done"):
        return StreamPiece(document, "responses", [], [_responses_key(document, stem[:-5])])
    return StreamPiece(document, "responses", [], [])


def _responses_key(document: dict[str, Any], stem: str) -> str:
    part = document.get("content_index", document.get("summary_index", 0))
    key = f"output:{document.get('output_index', 0)}:{part}"
    if stem == "output_text":
        return key
    return f"{key}/{stem}/args" if stem.endswith("arguments") else f"{key}/{stem}"


def classify_line(event: Event) -> StreamPiece:
    """One line of an NDJSON stream (Ollama's /api/chat and /api/generate)."""
    document = _load(event)
    if document is None:
        data = event.data
        return StreamPiece(None, "raw", [("raw", data, ())] if data else [], [])
    texts: list[tuple[str, str, JsonPath]] = []
    checks: list[tuple[str, str]] = []
    message = document.get("message")
    if isinstance(message, dict):
        for name, value in message.items():
            if type(value) is str:
                if value and name not in IDENTIFIER_KEYS:
                    texts.append(("message" if name == "content" else f"message/{name}", value, ("message", name)))
            elif value is not None:
                strings = strings_of(value) + list(_keys(value))
                if strings:
                    checks.append((f"message/{name}", "\n".join(strings) + "\n"))
    elif "response" not in document and "thinking" not in document:
        return StreamPiece(document, "other", [], []) if "done" not in document else _ollama_end(document)
    for name in ("response", "thinking"):
        value = document.get(name)
        if isinstance(value, str) and value:
            texts.append(("response" if name == "response" else "response/thinking", value, (name,)))
    return StreamPiece(document, "ollama", texts, [], ends_all=document.get("done") is True, checks=checks or None)


def _ollama_end(document: dict[str, Any]) -> StreamPiece:
    return StreamPiece(document, "ollama", [], [], ends_all=document.get("done") is True)


def encode(document: dict[str, Any], shape: str) -> bytes:
    """An event of `shape` (its `type` names the SSE event, as Anthropic and the Responses API do)."""
    if shape == "ollama":
        return orjson.dumps(document) + b"\n"
    if shape in ("anthropic", "responses"):
        kind = document.get("type")
        return encode_event(document, kind if isinstance(kind, str) else "")
    return encode_event(document)


def encode_event(document: dict[str, Any], event_name: str = "") -> bytes:
    prefix = f"event: {event_name}\n".encode() if event_name else b""
    return prefix + b"data: " + orjson.dumps(document) + b"\n\n"


_sse = encode_event


def strings_of(document: object) -> list[str]:
    return [container[key] for container, key in _strings(document)]


def rewrite(document: dict[str, Any], texts: list[tuple[JsonPath, str]]) -> dict[str, Any]:
    """A copy of the event with the text at each path replaced."""
    copy: dict[str, Any] = orjson.loads(orjson.dumps(document))
    for path, text in texts:
        target: Any = copy
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = text
    return copy


def strip_text(document: dict[str, Any] | None, shape: str) -> bytes:
    """An event with its text removed and everything else (finish_reason, done) kept."""
    if document is None:
        return b""
    copy = orjson.loads(orjson.dumps(document))
    if shape == "ollama":
        message = copy.get("message")
        if isinstance(message, dict):
            copy["message"] = {"role": message.get("role", "assistant"), "content": ""}
        for name in ("response", "thinking"):
            if name in copy:
                copy[name] = ""
        return encode(copy, shape)
    for choice in copy.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if shape == "chat" and isinstance(choice.get("delta"), dict):
            choice["delta"] = {}
        elif shape == "completion":
            choice["text"] = ""
        if choice.get("logprobs") is not None:
            choice["logprobs"] = None  # its tokens spell the text that was held back or changed
    return encode_event(copy)


def _choice_index(key: str) -> int:
    head = key.split("/", 1)[0]
    number = head[7:] if head.startswith("choice:") else ""
    return int(number) if number.isdigit() else 0


def text_event(template: dict[str, Any], shape: str, key: str, text: str, path: JsonPath = ()) -> bytes:
    """An event carrying `text` for scanner `key` (and nothing else): text released at the end of its
    part. Chat and completion chunks are built afresh (a tool call's continuation carries only its
    arguments); other shapes are a copy of the key's last event, `template`."""
    if shape in ("chat", "completion"):
        document: dict[str, Any] = {k: template[k] for k in ("id", "object", "created", "model") if k in template}
        choice: dict[str, Any] = {"index": _choice_index(key)}
        if shape == "completion":
            choice["text"] = text
            choice["logprobs"] = None
        else:
            choice["delta"] = _chat_delta(key, text)
        choice["finish_reason"] = None
        document["choices"] = [choice]
        return _sse(document)
    if shape == "ollama":
        copy = rewrite(template, [(path, text)])
        copy["done"] = False
        copy.pop("done_reason", None)
        return encode(copy, shape)
    if not path:  # an older caller: the text of a text delta
        path = ("delta", "text") if shape == "anthropic" else ("delta",)
    return encode(rewrite(template, [(path, text)]), shape)


def _chat_delta(key: str, text: str) -> dict[str, Any]:
    parts = key.split("/")
    if len(parts) == 1:
        return {"content": text}
    if parts[1].startswith("tool:"):
        number = parts[1][5:]
        index: object = int(number) if number.isdigit() else number
        return {"tool_calls": [{"index": index, "function": {"arguments": text}}]}
    if parts[1] == "fc":
        return {"function_call": {"arguments": text}}
    return {parts[1]: text}


def cut_events(template: dict[str, Any] | None, shape: str, key: str) -> bytes:
    """The end of a stream whose next text matched a block rule."""
    if shape in ("chat", "completion") and template is not None:
        document: dict[str, Any] = {k: template[k] for k in ("id", "object", "created", "model") if k in template}
        choice: dict[str, Any] = {"index": _choice_index(key), "finish_reason": "content_filter"}
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
    if shape == "ollama":
        return _ollama_cut(template)
    error = {
        "error": {
            "type": "invalid_request_error",
            "code": "content_filter",
            "message": "The response was stopped by the content policy.",
        }
    }
    return b"data: " + orjson.dumps(error) + b"\n\ndata: [DONE]\n\n"


def _ollama_cut(template: dict[str, Any] | None) -> bytes:
    """The last line of a cut NDJSON stream: Ollama's final `done` line, with `done_reason: content_filter`."""
    document: dict[str, Any] = {}
    if template is not None:
        document = {k: template[k] for k in ("model", "created_at") if k in template}
    if template is not None and "response" in template and "message" not in template:
        document["response"] = ""
    else:
        document["message"] = {"role": "assistant", "content": ""}
    document["done"] = True
    document["done_reason"] = "content_filter"
    return orjson.dumps(document) + b"\n"


def answer_text(content_type: str, body: bytes) -> str:
    """The text of a model's answer as the client received it (for samples and answer-length signals)."""
    if content_type.startswith("text/event-stream") or is_ndjson(content_type):
        ndjson = is_ndjson(content_type)
        parser: SSEParser | NDJSONParser = NDJSONParser() if ndjson else SSEParser()
        events = parser.feed(body)
        tail = parser.close()
        if tail is not None:
            events.append(tail)
        pieces = [classify_line(event) if ndjson else classify(event) for event in events]
        return "".join(text for piece in pieces for _, text, _ in piece.texts)
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
