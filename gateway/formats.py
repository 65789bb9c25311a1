"""Pull the text to scan out of a request body — everything an upstream, a tool or the model could read.

A body that looks like JSON (a JSON Content-Type, or a first character `{`, `[` or `"` after whitespace,
a byte-order mark or a UTF-16/32 encoding) is parsed whatever its Content-Type says, and must be strict
JSON: one that only a lenient parser reads (Python's `json`: `NaN`, numbers out of range, lone
surrogates, UTF-16/32) or that repeats a key in an object is refused (BodyError → 400), since the gateway
cannot know which reading the upstream makes. A UTF-8 BOM is skipped. Every string value is scanned
(`texts`, which a redaction rewrites in place through `locations`) except values of identifier keys
(`model`, `role`, `type`, ...) and media payloads: a valid base64 data URL, or valid base64, standing
where the APIs put images, audio and files (`binary_slot`). Besides each string, `derived` texts are
scanned: the conversation joined (every string under a text key — `content`, `text`, `system`, ... —
in order, system prompts first, one space apart), the strings of any string that is itself a JSON
document (tool-call `arguments`), decoded media payloads that are UTF-8 text. Form bodies give their
fields (`gateway/forms.py`); text/* bodies are scanned as text, also with backslash escapes decoded.
Other binary types are proxied unscanned.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

from gateway.forms import FormError, decode_backslash_escapes, multipart_fields, urlencoded_fields
from rules.redact import redact_spans

MAX_DEPTH = 64
IDENTIFIER_KEYS = frozenset({"model", "role", "type", "object", "id", "tool_call_id", "encoding_format"})
# Keys of the APIs' own request shapes (OpenAI chat, completions, responses, embeddings; Anthropic messages;
# tool schemas): not scanned. Every other key is, with the identifier values outside STANDARD_VALUES.
API_KEYS = frozenset(
    {
        "model",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "name",
        "tools",
        "tool_choice",
        "function",
        "functions",
        "function_call",
        "parameters",
        "properties",
        "required",
        "description",
        "items",
        "enum",
        "stream",
        "stream_options",
        "include_usage",
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "n",
        "stop",
        "stop_sequences",
        "seed",
        "user",
        "id",
        "object",
        "tool_calls",
        "tool_call_id",
        "arguments",
        "image_url",
        "url",
        "detail",
        "input",
        "input_audio",
        "data",
        "format",
        "file",
        "file_data",
        "file_id",
        "filename",
        "instructions",
        "system",
        "metadata",
        "response_format",
        "json_schema",
        "schema",
        "strict",
        "additionalProperties",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "parallel_tool_calls",
        "reasoning",
        "reasoning_effort",
        "effort",
        "summary",
        "thinking",
        "budget_tokens",
        "source",
        "media_type",
        "tool_use_id",
        "is_error",
        "cache_control",
        "prompt",
        "suffix",
        "echo",
        "best_of",
        "encoding_format",
        "dimensions",
        "modalities",
        "audio",
        "voice",
        "store",
        "previous_response_id",
        "truncation",
        "include",
        "service_tier",
        "output",
        "refusal",
        "default",
        "title",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "const",
        "call_id",
        "status",
        "annotations",
        "parts",
        "inline_data",
        "mime_type",
        "contents",
        "generationConfig",
        "system_instruction",
        "safetySettings",
        "options",
        "keep_alive",
        "images",
    }
)
STANDARD_VALUES = frozenset(
    {
        "system",
        "user",
        "assistant",
        "tool",
        "developer",
        "function",
        "model",
        "text",
        "image_url",
        "input_text",
        "input_image",
        "input_file",
        "input_audio",
        "output_text",
        "image",
        "document",
        "tool_use",
        "tool_result",
        "thinking",
        "redacted_thinking",
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
        "refusal",
        "file",
        "base64",
        "url",
        "json_object",
        "json_schema",
        "object",
        "string",
        "number",
        "integer",
        "boolean",
        "array",
        "null",
        "float",
        "auto",
        "none",
        "required",
        "chat.completion",
        "ephemeral",
    }
)

# A string whose nearest key is one of these is conversation text: the model reads it next to its neighbours.
CONVERSATION_KEYS = frozenset(
    {"content", "text", "prompt", "input", "system", "instructions", "refusal", "output", "thinking", "parts"}
)
SYSTEM_KEYS = ("system", "instructions", "system_instruction", "systemInstruction")  # read before the messages
_MEDIA_KEYS = frozenset({"url", "image_url", "file_data", "data"})
_BASE64_PARENTS = frozenset({"input_audio", "inline_data", "inlineData"})
_UTF8_BOM = b"\xef\xbb\xbf"
# Every object member's key ends in a quote after an even run of backslashes, then `:`. Counting the `":`
# ends, less those after exactly one backslash (the escaped `\":` of JSON inside strings), bounds the
# member count from above: when it equals the parsed count, no key was repeated.
_KEY_END = re.compile(rb'"[ \t\n\r]*:')
_ESCAPED_KEY_END = re.compile(rb'\\"[ \t\n\r]*:')
_EVEN_KEY_END = re.compile(rb'\\\\"[ \t\n\r]*:')
_DATA_URL = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[^;,\s]*)*;base64,", re.ASCII | re.IGNORECASE)
_JSONISH = re.compile(r"\s*[\[{]")
_NOT_JSON = object()

Location = tuple[object, str | int]  # (the dict or list holding a scanned string, its key); (None, 0): the body


class BodyError(ValueError):
    """The body cannot be read as what it claims to be."""


@dataclass(frozen=True, slots=True)
class Derived:
    """A text scanned besides `texts`. `segments` (start, end, index) place whole `texts[index]` in it
    (a joined conversation), so a redaction can be mapped back; without segments it cannot, and
    `source` names the text it was decoded from (-1: none)."""

    text: str
    segments: tuple[tuple[int, int, int], ...] = ()
    source: int = -1


@dataclass(frozen=True, slots=True)
class ExtractedBody:
    """The model named, the texts to scan, and what they came from: a parsed JSON `document` (each text's
    place in it in `locations`), or the whole body as text (`raw_text`), so that a redaction can be
    written back; plus the `derived` texts scanned for block and shadow."""

    model: str | None
    texts: tuple[str, ...]
    document: object | None = None
    raw_text: bool = False
    stream: bool = False
    locations: tuple[Location, ...] = ()
    derived: tuple[Derived, ...] = ()


def _is_json_type(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _charset(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return ""


def _looks_like_json(body: bytes) -> bool:
    """Whether the first non-space character is `{`, `[` or `"` — however much space comes first."""
    head = body[:64]
    if head.isascii() and not head.strip():  # leading whitespace past the first 64 bytes
        head = body.lstrip(b" \t\r\n")[:64]
    encoding = json.detect_encoding(head)
    text = head.decode(encoding, "ignore") if encoding not in ("utf-8", "utf-8-sig") else ""
    if not text:
        text = head[3:].decode("latin-1") if head.startswith(_UTF8_BOM) else head.decode("latin-1")
    return text.lstrip(" \t\r\n\ufeff")[:1] in ("{", "[", '"')


def extract(content_type: str, body: bytes) -> ExtractedBody:
    if not body:
        return ExtractedBody(None, ())
    media_type = _media_type(content_type)
    if _is_json_type(media_type) or _looks_like_json(body):
        data = body[3:] if body.startswith(_UTF8_BOM) else body
        document = _parse_json(data, _is_json_type(media_type))
        if document is not _NOT_JSON:
            return _from_document(document, data)
    if media_type.startswith("multipart/"):
        try:
            fields = multipart_fields(content_type, body)
        except FormError as exc:
            raise BodyError(str(exc)) from None
        return _from_fields(fields, (), -1)
    text = body.decode("utf-8", "replace")
    if media_type == "application/x-www-form-urlencoded":
        return _from_fields(urlencoded_fields(text), (text,), 0)
    if not media_type or media_type.startswith("text/"):
        charset = _charset(content_type)
        if charset not in ("", "utf-8", "utf8", "us-ascii", "ascii"):
            try:  # not written back as UTF-8: scanned, but a redaction there is refused
                return _from_fields([("", body.decode(charset, "replace"))], (), -1)
            except LookupError:
                pass
        return _from_text(text)
    # Any other type: scanned as text when the body is text (a JSON document with trailing data, a prompt
    # under application/octet-stream: some upstreams read a body whatever its type); binary is not.
    try:
        return _from_text(body.decode("utf-8"))
    except UnicodeDecodeError:
        return ExtractedBody(None, ())


def _from_text(text: str) -> ExtractedBody:
    """A text body: the text (written back if redacted), and the text with backslash escapes decoded."""
    derived = (Derived(decode_backslash_escapes(text), (), 0),) if "\\" in text else ()
    return ExtractedBody(None, (text,), raw_text=True, derived=derived)


def _parse_json(data: bytes, declared: bool) -> object:
    """The document, or _NOT_JSON for a body no JSON parser reads (scanned as text then)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        strict_error = str(exc)
    try:
        json.loads(data)  # what a lenient upstream reads: NaN, 1e400, lone surrogates, UTF-16/32
    except RecursionError:
        raise BodyError("body is JSON nested too deep") from None
    except ValueError:
        if declared:
            raise BodyError(f"body is not valid JSON: {strict_error}") from None
        return _NOT_JSON
    raise BodyError(f"body is not strict JSON (UTF-8, no NaN/Infinity, no lone surrogates): {strict_error}")


def _system_first(item: tuple[str, object]) -> bool:
    return item[0] not in SYSTEM_KEYS


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise BodyError("body repeats a key in a JSON object")
    return document


def _from_document(document: object, data: bytes) -> ExtractedBody:
    collector = Collector()
    if isinstance(document, str):
        collector.add(None, 0, document, False)
    else:
        collector.visit(document, 0, "", False)
    ends = len(_KEY_END.findall(data))
    if (
        ends > collector.keys
        and ends - len(_ESCAPED_KEY_END.findall(data)) + len(_EVEN_KEY_END.findall(data)) > collector.keys
    ):  # maybe a repeated key: orjson kept only the last
        json.loads(data, object_pairs_hook=_refuse_duplicates)
    model: object = None
    stream = False
    if isinstance(document, dict):
        model = document.get("model")
        stream = document.get("stream") is True
    return ExtractedBody(
        model if isinstance(model, str) else None,
        tuple(collector.texts),
        document,
        stream=stream,
        locations=tuple(collector.locations),
        derived=tuple(collector.joined()) + tuple(collector.derived) + collector.named(),
    )


def _from_fields(fields: list[tuple[str, str]], texts: tuple[str, ...], source: int) -> ExtractedBody:
    """Form fields: the values joined into one text and the names into another, JSON and escapes in
    values decoded."""
    model: str | None = None
    derived: list[Derived] = []
    for name, value in fields:
        if name == "model" and model is None:
            model = value
        derived.extend(decoded_json(value, source))
        if "\\" in value:
            derived.append(Derived(decode_backslash_escapes(value), (), source))
    for joined in (" ".join(value for _, value in fields), " ".join(name for name, _ in fields)):
        if joined.strip():
            derived.insert(0, Derived(joined, (), source))
    return ExtractedBody(model, texts, raw_text=bool(texts), derived=tuple(derived))


def binary_slot(container: dict[str, object], parent_key: str, key: str) -> bool:
    """Where the APIs put media as base64: OpenAI chat `image_url.url`, `input_audio.data`,
    `file.file_data`; Responses `input_image.image_url`, `input_file.file_data`; Anthropic
    `source.data` of a `"type": "base64"` source; Gemini `inline_data.data`."""
    if key == "url":
        return parent_key == "image_url"
    if key in ("image_url", "file_data"):
        return True
    return key == "data" and (parent_key in _BASE64_PARENTS or container.get("type") == "base64")


def media_payload(value: str) -> bytes | None:
    """The bytes of a whole valid base64 data URL or base64 string; None when `value` is anything else."""
    if value.startswith(("data:", "DATA:", "Data:")):
        match = _DATA_URL.match(value)
        if match is None:
            return None
        value = value[match.end() :]
    if len(value) % 4 or not value.isascii():
        return None
    try:
        return binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except binascii.Error:
        return None


def decoded_json(value: str, source: int, depth: int = 0) -> list[Derived]:
    """A string that is itself a JSON object or array (tool-call `arguments`, ...): its keys and string
    values joined into one text (every value of a repeated key), and JSON inside them once more."""
    if _JSONISH.match(value) is None or value.rstrip()[-1:] not in ("}", "]"):
        return []
    try:
        decoded = json.loads(value, object_pairs_hook=_pairs_list)
    except (ValueError, RecursionError):
        return []
    strings: list[str] = []
    stack: list[object] = [decoded]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, list):
            stack.extend(reversed(item))
    derived = [Derived(" ".join(strings), (), source)] if strings else []
    if depth == 0:
        for string in strings:
            derived.extend(decoded_json(string, source, 1))
    return derived


def _pairs_list(pairs: list[tuple[str, object]]) -> list[object]:
    return [item for pair in pairs for item in pair]


class Collector:
    """One depth-first walk of a JSON document: the strings to scan and where they stand, the member
    count (for the repeated-key check), the conversation's strings, and texts decoded on the way."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.locations: list[Location] = []
        self.conversation: list[int] = []
        self.derived: list[Derived] = []
        self.keys = 0
        self.names: list[str] = []  # keys and identifier values a model may read (tool schemas, roles)

    def add(self, container: object, key: str | int, value: str, conversational: bool) -> None:
        index = len(self.texts)
        self.texts.append(value)
        self.locations.append((container, key))
        if conversational:
            self.conversation.append(index)
        if "{" in value or "[" in value:
            self.derived.extend(decoded_json(value, index))

    def _media(self, container: dict[str, object], parent_key: str, key: str, value: str) -> bool:
        """Skip a media payload where the APIs put media; scan it when it decodes to UTF-8 text."""
        if not binary_slot(container, parent_key, key):
            return False
        payload = media_payload(value)
        if payload is None:
            return False
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return True
        if text:
            self.derived.append(Derived(text))
        return True

    def visit(self, value: object, depth: int, parent_key: str, conversational: bool) -> None:
        deeper = depth + 1
        if isinstance(value, dict):
            self.keys += len(value)
            if value and deeper > MAX_DEPTH:
                raise BodyError(f"JSON nested deeper than {MAX_DEPTH} levels")
            items: Iterable[tuple[str, object]] = value.items()
            if depth == 0 and any(key in value for key in SYSTEM_KEYS):
                items = sorted(items, key=_system_first)
            for key, item in items:
                if key not in API_KEYS:
                    self.names.append(key)  # `{"how_to_make_sarin": ...}` in a tool's parameters
                if isinstance(item, str):
                    if key in IDENTIFIER_KEYS:
                        if key != "model" and item not in STANDARD_VALUES:
                            self.names.append(item)  # a custom role, which chat templates print
                        continue
                    if key in _MEDIA_KEYS and self._media(value, parent_key, key, item):
                        continue
                    self.add(value, key, item, key in CONVERSATION_KEYS)
                elif isinstance(item, (dict, list)):
                    self.visit(item, deeper, key, key in CONVERSATION_KEYS)
        elif isinstance(value, list):
            if value and deeper > MAX_DEPTH:
                raise BodyError(f"JSON nested deeper than {MAX_DEPTH} levels")
            for position, item in enumerate(value):
                if isinstance(item, str):
                    self.add(value, position, item, conversational)
                elif isinstance(item, (dict, list)):
                    self.visit(item, deeper, parent_key, conversational)

    def named(self) -> tuple[Derived, ...]:
        """The keys and identifier values, one text; `; ` between them, so no phrase spans two."""
        return (Derived("; ".join(self.names)),) if self.names else ()

    def joined(self) -> list[Derived]:
        """The conversation as the model reads it: its strings in order, joined."""
        if len(self.conversation) < 2:
            return []
        joined: list[Derived] = []
        # One space apart, and with nothing between for regexes over a word split across two parts
        # (`ignore a` + `ll previous instructions`); literal views drop separators either way.
        for gap in (" ", ""):
            parts: list[str] = []
            segments: list[tuple[int, int, int]] = []
            offset = 0
            for index in self.conversation:
                text = self.texts[index]
                segments.append((offset, offset + len(text), index))
                parts.append(text)
                offset += len(text) + len(gap)
            joined.append(Derived(gap.join(parts), tuple(segments)))
        return joined


def rewrite(
    document: object, locations: tuple[Location, ...], spans: dict[int, list[tuple[int, int]]], replacement: str
) -> object:
    """The document with the spans of each text replaced, in place (a top-level string is returned)."""
    for index, text_spans in spans.items():
        container, key = locations[index]
        if isinstance(container, dict) and isinstance(key, str):
            container[key] = redact_spans(str(container[key]), text_spans, replacement)
        elif isinstance(container, list) and isinstance(key, int):
            container[key] = redact_spans(str(container[key]), text_spans, replacement)
        elif isinstance(document, str):
            document = redact_spans(document, text_spans, replacement)
    return document


_SHAPES: tuple[tuple[str, str, tuple[type, ...]], ...] = (
    ("/chat/completions", "messages", (list,)),
    ("/messages", "messages", (list,)),
    ("/completions", "prompt", (str, list)),
    ("/embeddings", "input", (str, list)),
    ("/responses", "input", (str, list)),
)


def check_shape(path: str, document: object) -> None:
    """Known endpoints get the basic types their APIs require (BodyError → 400 invalid_request), so a
    malformed request is refused here, clearly, rather than half-scanned and refused upstream."""
    for suffix, field, kinds in _SHAPES:
        if not path.endswith(suffix):
            continue
        if not isinstance(document, dict):
            raise BodyError(f"the body of {suffix} must be a JSON object")
        if field in document and not isinstance(document[field], kinds):
            raise BodyError(f"{field}: wrong type for {suffix}")
        if suffix in ("/chat/completions", "/messages") and any(
            not isinstance(message, dict) for message in document.get(field) or []
        ):
            raise BodyError(f"{field}: every message must be an object")
        for name, kind in (("model", str), ("stream", bool)):
            if name in document and document[name] is not None and not isinstance(document[name], kind):
                raise BodyError(f"{name}: must be a {kind.__name__}")
        return
