from __future__ import annotations

import pytest
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


LF_STREAM = STREAM.replace(b"\r\n", b"\n") + b'data: {"b": 2}\n\n\ndata: x\n\n: c\n\ndata: end'


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, len(LF_STREAM)), max_size=20))
def test_any_chunking_of_a_stream_without_cr_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(LF_STREAM)]
    chunks = [LF_STREAM[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    whole = _parse([LF_STREAM])
    assert _parse(chunks) == whole
    assert b"".join(raw for _, _, raw in whole) == LF_STREAM
    assert [data for _, data, _ in whole][-3:] == ["x", "", "end"]


def test_unterminated_final_event_is_returned_on_close() -> None:
    assert _parse([b"data: tail"]) == [("", "tail", b"data: tail")]


def test_an_endless_event_is_an_error() -> None:
    parser = SSEParser(max_event_bytes=100)
    try:
        parser.feed(b"data: " + b"x" * 200)
    except SSEError:
        return
    raise AssertionError("no SSEError")


def test_one_event_per_chunk_reads_like_one_whole_stream() -> None:
    events = [
        b'data: {"a": 1}\n\n',
        b"data:  two spaces\n\n",
        b"data: \xe2\x98\x83 snow\n\n",
        b"data: \n\n",
        b"data: x\r\n\r\n",
        b"data: a\ndata: b\n\n",
        b"data: [DONE]\n\n",
    ]
    assert _parse(events) == _parse([b"".join(events)])
    assert [data for _, data, _ in _parse(events)][:4] == ['{"a": 1}', " two spaces", "☃ snow", ""]


@pytest.mark.parametrize(
    "raw",
    [
        b"data: a\r\n\rdata: b\r\n\r\n",  # CRLF then CR
        b"data: a\n\rdata: b\n\n",  # LF then CR
        b"data: a\r\r\ndata: b\r\r",  # CR then CRLF
        b"\xef\xbb\xbfdata: a\n\ndata: b\n\n",  # a BOM before the first event
    ],
    ids=["crlf-cr", "lf-cr", "cr-crlf", "bom"],
)
@pytest.mark.parametrize("size", [1, 2, 3, 64])
def test_every_blank_line_ends_an_event_and_a_bom_hides_none(raw: bytes, size: int) -> None:
    parser = SSEParser()
    events = []
    for start in range(0, len(raw), size):
        events += parser.feed(raw[start : start + size])
    last = parser.close()
    events += [last] if last is not None else []
    assert [event.data for event in events] == ["a", "b"]
