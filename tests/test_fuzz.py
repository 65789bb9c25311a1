"""Fuzzing the parsers that see hostile bytes: text extraction, normalization, the SSE parser and the
output stream inspector. A committed seed corpus (tests/data/fuzz/seeds.json) runs first as a regression
suite; hypothesis then explores around it. The only acceptable failures are the documented ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.formats import BodyError, extract
from gateway.output_formats import answer_text, classify
from gateway.sse import SSEError, SSEParser
from rules.match import Matcher
from rules.model import RuleSpec, utcnow
from rules.normalize import TextView, compact, compact_detail, light
from rules.stream_scan import StreamScanner

SEEDS = json.loads((Path(__file__).parent / "data" / "fuzz" / "seeds.json").read_text())
MATCHER = Matcher([RuleSpec(pattern="bomb").to_rule(created_by="t", now=utcnow())])


def _extract(raw: bytes) -> None:
    try:
        result = extract("application/json", raw)
    except BodyError:
        return
    for text in result.texts:
        assert isinstance(text, str)
        list(MATCHER.scan(TextView(text)))


def _sse(raw: bytes) -> None:
    parser = SSEParser(max_event_bytes=1 << 16)
    try:
        for event in parser.feed(raw):
            classify(event)
    except SSEError:
        return
    answer_text("text/event-stream", raw)


def _texts(text: str) -> None:
    assert compact_detail(text).text == compact(text)
    light(text)
    scanner = StreamScanner(MATCHER)
    for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
        scanner.feed(piece)
    scanner.finish()


@pytest.mark.parametrize("raw", SEEDS["bodies"])
def test_seed_bodies(raw: str) -> None:
    _extract(raw.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("text", SEEDS["texts"])
def test_seed_texts(text: str) -> None:
    _texts(text)


@pytest.mark.parametrize("raw", SEEDS["sse"])
def test_seed_sse(raw: str) -> None:
    _sse(raw.encode("utf-8", "surrogateescape"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_bodies(raw: bytes) -> None:
    _extract(raw)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=30,
    )
)
def test_fuzz_json_documents(document: object) -> None:
    _extract(json.dumps(document).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_sse(raw: bytes) -> None:
    _sse(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_texts(text: str) -> None:
    _texts(text)
