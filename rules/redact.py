"""Replace matched spans of a text, mapped back from the matching views to the original."""

from __future__ import annotations

from collections.abc import Iterable

from rules.match import Hit
from rules.normalize import TextView

REDACTION = "[REDACTED]"


def merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping spans become one; spans that only touch stay apart."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def redact_spans(text: str, spans: Iterable[tuple[int, int]], replacement: str = REDACTION) -> str:
    """`text` with the spans replaced; overlapping spans become one."""
    out: list[str] = []
    cursor = 0
    for start, end in merge(spans):
        out.append(text[cursor:start])
        out.append(replacement)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)


def redact(view: TextView, hits: Iterable[Hit], replacement: str = REDACTION) -> str:
    return redact_spans(view.text, (hit.original_span(view) for hit in hits), replacement)
