"""Text an upstream reads out of a non-JSON request body: form fields and backslash escapes.

- `urlencoded_fields`: the names and values of an `application/x-www-form-urlencoded` body, with
  `%XX` escapes and `+` decoded, as every web framework hands them to the application.
- `multipart_fields`: the text fields of a `multipart/form-data` body, read with the standard library's
  MIME parser (the body is already bounded by `--max-body-bytes`). A part without a filename is a form
  field and always text; a file part is text when its Content-Type is textual (`text/*`, JSON, XML,
  urlencoded, YAML, JavaScript) or, without a specific type, when its bytes are valid UTF-8. Binary
  files (images, audio, PDFs) are skipped. A part sent with a Content-Transfer-Encoding is read both
  as sent and decoded, since parsers differ on honouring it; the preamble and epilogue are read too.
  A body whose structure the parser cannot follow raises `FormError` (the caller refuses it).
- `decode_backslash_escapes`: JSON/JavaScript backslash escapes (`\\u0073`, `\\x73`, `\\u{73}`, `\\n`, ...)
  decoded, for text that a lenient reader may still decode (JSON5, a top-level JSON string, ...).
"""

from __future__ import annotations

import email.errors
import email.parser
import email.policy
import re
import urllib.parse
from email.message import Message

_TEXT_SUBTYPES = ("json", "xml", "x-www-form-urlencoded", "yaml", "x-yaml", "javascript", "x-ndjson", "csv")
_STRUCTURAL_DEFECTS = (
    email.errors.StartBoundaryNotFoundDefect,
    email.errors.CloseBoundaryNotFoundDefect,
    email.errors.MultipartInvariantViolationDefect,
    email.errors.NoBoundaryInMultipartDefect,
    email.errors.MissingHeaderBodySeparatorDefect,
    email.errors.FirstHeaderLineIsContinuationDefect,
)
_PARSER = email.parser.BytesParser(policy=email.policy.HTTP)
_ESCAPE = re.compile(r"\\(?:u\{([0-9a-fA-F]{1,6})\}|u([0-9a-fA-F]{4})|x([0-9a-fA-F]{2})|([\"'\\/bfnrt]))")
_SIMPLE = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class FormError(ValueError):
    """A form body the parser cannot follow."""


def urlencoded_fields(text: str) -> list[tuple[str, str]]:
    return urllib.parse.parse_qsl(text, keep_blank_values=True, errors="replace")


def textual_type(media_type: str) -> bool:
    """Whether a media type (lower case, no parameters) names text a model or tool reads as text."""
    if media_type.startswith("text/"):
        return True
    subtype = media_type.partition("/")[2]
    return subtype in _TEXT_SUBTYPES or subtype.endswith(("+json", "+xml", "+yaml"))


def _decode(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset or "utf-8", "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _part_texts(part: Message) -> list[str]:
    media_type = part.get_content_type()
    charset = part.get_content_charset() or ""
    raw = part.get_payload(decode=False)
    sent = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""
    decoded = part.get_payload(decode=True)
    payloads = [sent]
    if isinstance(decoded, bytes) and decoded != sent:
        payloads.append(decoded)
    texts: list[str] = []
    named_file = part.get_filename() is not None
    declared = part.get("Content-Type") is not None
    for payload in payloads:
        if not named_file or textual_type(media_type):
            texts.append(_decode(payload, charset))
        elif not declared or media_type == "application/octet-stream":
            try:
                texts.append(payload.decode(charset or "utf-8"))
            except (UnicodeDecodeError, LookupError):
                continue  # binary: not text any reader would show a model
    return texts


def multipart_fields(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """(field name, text) for every text part of a multipart body, plus its preamble and epilogue."""
    head = b"MIME-Version: 1.0\r\nContent-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = _PARSER.parsebytes(head + body)
    if not message.is_multipart() or not message.get_boundary():
        raise FormError("multipart body could not be parsed (no boundary or no parts)")
    fields: list[tuple[str, str]] = []
    for part in message.walk():
        if any(isinstance(defect, _STRUCTURAL_DEFECTS) for defect in part.defects):
            raise FormError("multipart body is malformed")
        for extra in (part.preamble, part.epilogue):
            if extra and extra.strip():
                fields.append(("", extra))
        if part.is_multipart():
            continue
        name = part.get_param("name", header="Content-Disposition")
        field = name if isinstance(name, str) else ""
        fields.extend((field, text) for text in _part_texts(part))
    return fields


def _unescape(match: re.Match[str]) -> str:
    braced, four, two, simple = match.groups()
    if simple is not None:
        return _SIMPLE.get(simple, simple)
    code = int(braced or four or two, 16)
    return chr(code) if code <= 0x10FFFF else "\ufffd"


def decode_backslash_escapes(text: str) -> str:
    """`text` with backslash escapes decoded, JSON's and JavaScript's (`\\x73`, `\\u{73}`); surrogate pairs
    joined, lone surrogates U+FFFD. (gateway.json_escapes decodes JSON's alone, incrementally, for streamed
    tool arguments.)"""
    decoded = _ESCAPE.sub(_unescape, text)
    return decoded.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
