"""Issue 15's goals on our own adversarial table (tests/rules/evasion_table.py): re-renderings of pushed
incident phrases caught on input and on streamed output, nothing of a blocked phrase delivered before a
cut, no benign near misses, XSTest safe prompts or ordinary documents blocked.

The measures run once per session on a fixed subsample (all transforms and phrases, chunk sizes 1, 2, 3
and 7); `bench/evasion.py` runs the whole table (chunk sizes 1-7) and prints every miss with an example.
A failing goal names the transforms that miss it, so the message is the to-do list.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import defaultdict

import pytest

from tests.rules.evasion_table import (
    GOALS,
    OUTPUT_CARRIER,
    PHRASES,
    TRANSFORMS,
    Results,
    blocked_by,
    cases,
    matchers,
    near_misses,
    run,
    split_cases,
    stream,
    visible,
)

TEST_CHUNK_SIZES = (1, 2, 3, 7)


@pytest.fixture(scope="module")
def results() -> Results:
    return run(TRANSFORMS, TEST_CHUNK_SIZES)


def _misses(results: Results, measure: str, limit: int = 25) -> str:
    grouped: dict[str, list[str]] = defaultdict(list)
    examples: dict[str, str] = {}
    for miss in results.misses:
        if miss.measure == measure:
            grouped[miss.transform].append(miss.phrase + (f" {miss.detail}" if miss.detail else ""))
            examples.setdefault(miss.transform, miss.rendering)
    lines = [
        f"  {name}: {', '.join(phrases)}  e.g. {visible(examples[name], 70)!r}"
        for name, phrases in sorted(grouped.items(), key=lambda item: -len(item[1]))
    ]
    more = f"\n  ... and {len(lines) - limit} more transforms" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


# ------------------------------------------------------------------------------- the table itself


def test_the_table_is_big_enough_and_deterministic() -> None:
    assert len(PHRASES) >= 15 and sum(p.kind == "regex" for p in PHRASES) >= 1
    assert len(TRANSFORMS) >= 80
    assert len({t.name for t in TRANSFORMS}) == len(TRANSFORMS)
    first = [(c.phrase.id, c.transform.name, c.rendering) for c in cases()]
    assert first == [(c.phrase.id, c.transform.name, c.rendering) for c in cases()]
    assert len(near_misses()) >= 200
    assert len({s for _, s in near_misses()}) == len(near_misses())


def test_renderings_change_the_text_but_keep_it_non_empty() -> None:
    for case in cases():
        assert case.rendering.strip()
        if case.transform.name != "plain":
            assert case.rendering != case.phrase.text, (case.transform.name, case.phrase.id)


def test_a_near_miss_never_holds_its_phrase_as_whole_words() -> None:
    for _, sentence in near_misses():
        for phrase in PHRASES:
            if phrase.kind == "literal":
                found = re.search(rf"\b{re.escape(phrase.text)}\b", sentence, re.IGNORECASE)
                assert found is None, (phrase.id, sentence)


def test_plain_phrases_are_caught_everywhere() -> None:
    """Sanity: the harness itself works (each phrase blocks in a prompt and in a stream)."""
    input_matcher, output_matcher = matchers()
    before, _, _ = OUTPUT_CARRIER.partition("{}")
    for phrase in PHRASES:
        assert blocked_by(input_matcher, f"Please explain how to {phrase.text} in detail.") == phrase.id
        text = OUTPUT_CARRIER.format(phrase.text)
        assert stream(output_matcher, text, (len(before), len(before) + len(phrase.text)), 3).blocked, phrase.id


def test_splits_are_real_splits() -> None:
    for split in split_cases():
        joined = (split.first + " " + split.second) if split.cut == "word-gap" else split.first + split.second
        assert split.phrase.text in joined
        assert split.phrase.text not in split.first and split.phrase.text not in split.second


def test_every_class_the_issue_names_is_in_the_table() -> None:
    classes = {t.cls for t in TRANSFORMS}
    for cls in (
        "case",
        "width",
        "math",
        "enclosed",
        "letter-like",
        "homoglyph",
        "invisible",
        "marks",
        "strokes",
        "leet",
        "leet-separator",
        "separator",
        "word-gaps",
        "random-split",
        "own-punctuation",
    ):
        assert cls in classes
    names = {t.name for t in TRANSFORMS}
    for char in ("\u3164", "\u115f", "\u1160", "\uffa0", "\u2800", "\u034f", "\u180e", "\u00ad", "\ufeff"):
        assert any(char in c.rendering for c in cases() if c.transform.name in names), unicodedata.name(char)


# ----------------------------------------------------------------------------------------- the goals


def test_input_catch_rate(results: Results) -> None:
    rate = results.rate("input")
    assert rate >= GOALS["input_rate"], f"input catch rate {rate:.1%}; misses:\n{_misses(results, 'input')}"


def test_splits_across_fields_are_caught(results: Results) -> None:
    rate = results.rate("split")
    assert rate >= GOALS["split_rate"], f"split catch rate {rate:.1%}; misses:\n{_misses(results, 'split', 6)}"


def test_stream_catch_rate(results: Results) -> None:
    rate = results.rate("stream")
    assert rate >= GOALS["stream_rate"], f"stream catch rate {rate:.1%}; misses:\n{_misses(results, 'stream')}"


def test_a_cut_stream_delivers_little_of_the_phrase(results: Results) -> None:
    median = results.values["received_share_median"]
    assert median <= GOALS["received_share_median"], f"median share received before the cut: {median:.1%}"


def test_a_cut_stream_at_chunk_size_1_delivers_none_of_the_phrase() -> None:
    """The plain phrases, one character at a time: the client holds none of the phrase's letters."""
    _, output_matcher = matchers()
    before, _, _ = OUTPUT_CARRIER.partition("{}")
    shares = {}
    for phrase in PHRASES:
        text = OUTPUT_CARRIER.format(phrase.text)
        result = stream(output_matcher, text, (len(before), len(before) + len(phrase.text)), 1)
        assert result.blocked, phrase.id
        shares[phrase.id] = result.share
    received = {phrase_id: f"{share:.0%}" for phrase_id, share in shares.items() if share}
    assert not received, f"share of the phrase received before the cut: {received}"


def test_benign_near_misses(results: Results) -> None:
    hits = results.near_miss_hits
    listing = "\n".join(f"  [{cls}] {sentence!r} -> {rule}" for cls, sentence, rule in hits[:40])
    assert len(hits) <= GOALS["near_miss_blocked"], f"{len(hits)} near misses blocked:\n{listing}"


def test_xstest_and_ordinary_documents_are_not_blocked(results: Results) -> None:
    assert results.benign_hits == []
    assert results.values["xstest_total"] >= 250 and results.values["documents_total"] >= 100


def test_random_chunkings_agree_with_the_whole_text() -> None:
    """A rendering blocked as a whole answer is blocked however the stream is chunked (random cuts)."""
    input_matcher, output_matcher = matchers()
    rng = random.Random(15)
    sample = rng.sample(list(cases()), 120)
    disagreements = []
    for case in sample:
        text = OUTPUT_CARRIER.format(case.rendering)
        if blocked_by(output_matcher, text) is None:
            continue
        from rules.stream_scan import StreamScanner

        scanner = StreamScanner(output_matcher)
        position, blocked = 0, False
        while position < len(text) and not blocked:
            size = rng.randint(1, 9)
            blocked = scanner.feed(text[position : position + size]).blocked is not None
            position += size
        blocked = blocked or scanner.finish().blocked is not None
        if not blocked:
            disagreements.append((case.transform.name, case.phrase.id, visible(case.rendering, 60)))
    assert not disagreements, disagreements


"""Status when this file was written (pure-Python run, `bench/evasion.py` for the numbers):

- On committed HEAD (bf0e79a) six goal tests fail: test_input_catch_rate (83 %),
  test_splits_across_fields_are_caught (0 %), test_stream_catch_rate (82 %),
  test_a_cut_stream_delivers_little_of_the_phrase (median 86 % received),
  test_a_cut_stream_at_chunk_size_1_delivers_none_of_the_phrase, test_benign_near_misses (190 / 226).
- On the working tree being rewritten for issue 15, three still fail:
  test_splits_across_fields_are_caught (0 / 243: `extract()` hands each part and message over separately),
  test_a_cut_stream_at_chunk_size_1_delivers_none_of_the_phrase (`semtex + detonator` and the regex rule:
  ~93 % received before the cut), test_benign_near_misses (14 / 226). Input (99.5 %) and stream (99.4 %)
  pass, with regex-rule misses left (Cyrillic palochka `ӏ`, small capitals, negative circled/squared
  letters, Braille blank U+2800, whole-tag text on streams).

These are the goals the lead is working to, not bugs in the tests.
"""
