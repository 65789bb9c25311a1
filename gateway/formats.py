"""Pull the text to scan out of a request body.

A body that looks like JSON is parsed whatever its Content-Type says, so a wrong header cannot hide a
prompt from the scan, and JSON escapes (`\\u0062omb`) are decoded before matching. Every string value is
scanned — message contents, system prompts, tool descriptions and arguments alike, for OpenAI chat,
completions, responses and embeddings, Anthropic messages and any other JSON — except values of
identifier keys (`model`, `role`, `type`, ...) and inline base64 `data:` URLs. text/* and form bodies
are scanned as raw text; other binary types (audio, images, multipart uploads) are proxied unscanned.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson

MAX_DEPTH = 64
IDENTIFIER_KEYS = frozenset({"model", "role", "type", "object", "id", "tool_call_id", "encoding_format"})
_TEXT_TYPES = ("text/", "application/x-www-form-urlencoded")


class BodyError(ValueError):
    """The body cannot be read as what it claims to be."""


@dataclass(frozen=True, slots=True)
class ExtractedBody:
    """The model named, the texts to scan, and what they came from: a parsed JSON `document`, or the
    whole body as text (`raw_text`), so that a redaction can be written back."""

    model: str | None
    texts: tuple[str, ...]
    document: object | None = None
    raw_text: bool = False
    stream: bool = False


def _is_json_type(content_type: str) -> bool:
    return content_type.startswith("application/json") or content_type.endswith("+json")


def extract(content_type: str, body: bytes) -> ExtractedBody:
    if not body:
        return ExtractedBody(None, ())
    content_type = content_type.lower()
    if _is_json_type(content_type) or body.lstrip()[:1] in (b"{", b"["):
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if _is_json_type(content_type):
                raise BodyError(f"body is not valid JSON: {exc}") from None
            return ExtractedBody(None, (body.decode("utf-8", "replace"),), raw_text=True)
        model = document.get("model") if isinstance(document, dict) else None
        stream = isinstance(document, dict) and document.get("stream") is True
        texts = tuple(scan_strings(document))
        return ExtractedBody(model if isinstance(model, str) else None, texts, document, stream=stream)
    if not content_type or content_type.startswith(_TEXT_TYPES):
        return ExtractedBody(None, (body.decode("utf-8", "replace"),), raw_text=True)
    return ExtractedBody(None, ())


def _scannable(value: str) -> bool:
    return not (value.startswith("data:") and ";base64," in value[:100])


def scan_strings(value: object) -> list[str]:
    """Every string value of a JSON document worth scanning, depth-first."""
    found: list[str] = []
    _collect(value, found, 0)
    return found


def _collect(value: object, found: list[str], depth: int) -> None:
    """Strings are taken where they stand (no call per leaf); every value below `depth` counts as one
    level deeper, as MAX_DEPTH means."""
    if isinstance(value, str):
        if _scannable(value):
            found.append(value)
        return
    if isinstance(value, dict):
        items: Iterable[object] = (
            item for key, item in value.items() if key not in IDENTIFIER_KEYS or not isinstance(item, str)
        )
    elif isinstance(value, list):
        items = value
    else:
        return
    deeper = depth + 1
    for item in items:
        if deeper > MAX_DEPTH:
            raise BodyError(f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            if _scannable(item):
                found.append(item)
        elif isinstance(item, (dict, list)):
            _collect(item, found, deeper)


def rewrite_strings(value: object, replacements: dict[int, str]) -> object:
    """A copy of a JSON document with the n-th scanned string (in `scan_strings` order) replaced."""
    counter = iter(range(1 << 62))

    def walk(item: object, scanned: bool) -> object:
        if isinstance(item, str):
            if scanned and _scannable(item):
                return replacements.get(next(counter), item)
            return item
        if isinstance(item, dict):
            return {k: walk(v, k not in IDENTIFIER_KEYS or not isinstance(v, str)) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v, True) for v in item]
        return item

    return walk(value, True)


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
