from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sse import SSEError, SSEParser

STREAM = (
    'event: message_start\ndata: {"a": 1}\n\n'
    ": a comment\n\n"
    "data: first line\ndata: second línea ☃\n\n"
    "data:no-space\r\n\r\n"
    "data: [DONE]\n\n"
).encode()


def _parse(chunks: list[bytes]) -> list[tuple[str, str, bytes]]:
    parser = SSEParser()
    events = [e for chunk in chunks for e in parser.feed(chunk)]
    last = parser.close()
    if last is not None:
        events.append(last)
    return [(e.event, e.data, e.raw) for e in events]


def test_fields_and_raw_bytes() -> None:
    events = _parse([STREAM])
    assert [(name, data) for name, data, _ in events] == [
        ("message_start", '{"a": 1}'),
        ("", ""),
        ("", "first line\nsecond línea ☃"),
        ("", "no-space"),
        ("", "[DONE]"),
    ]
    assert b"".join(raw for _, _, raw in events) == STREAM


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_any_byte_chunking_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    assert _parse(chunks) == _parse([STREAM])


def test_unterminated_final_event_is_returned_on_close() -> None:
    assert _parse([b"data: tail"]) == [("", "tail", b"data: tail")]


def test_an_endless_event_is_an_error() -> None:
    parser = SSEParser(max_event_bytes=100)
    try:
        parser.feed(b"data: " + b"x" * 200)
    except SSEError:
        return
    raise AssertionError("no SSEError")
