"""A stream cannot make the scanner's work grow with everything it has sent: undecided runs of digits,
invisible padding and tag characters keep the window bounded (the cost of a piece stays flat), and a
whole word followed by a separator is decided at once."""

from __future__ import annotations

import time

import pytest

from rules.stream_scan import MAX_CONTEXT, MAX_HOLD, StreamScanner
from tests.rules.test_stream_scan import BLOCKING


def _feed_all(text: str, size: int = 7) -> tuple[float, StreamScanner, str]:
    scanner = StreamScanner(BLOCKING)
    sent = []
    started = time.perf_counter()
    for start in range(0, len(text), size):
        emission = scanner.feed(text[start : start + size])
        assert emission.blocked is None
        sent.append(emission.text)
    sent.append(scanner.finish().text)
    return time.perf_counter() - started, scanner, "".join(sent)


@pytest.mark.parametrize(
    "unit",
    ["7", "$", "\U000e0061", "\u200b", "a\u200b"],
    ids=["digits", "symbols", "tag characters", "zero-width spaces", "letters padded with zero-width"],
)
def test_the_cost_of_a_piece_does_not_grow_with_the_stream(unit: str) -> None:
    short, _, _ = _feed_all(unit * 3000)
    long, scanner, sent = _feed_all(unit * 12000)
    assert sent == unit * 12000  # nothing lost
    # Four times the text: linear work takes about four times as long, work that grows with what was
    # sent sixteen. The bound between leaves room for a noisy machine.
    assert long < 9 * short + 0.05, (short, long)
    assert len(scanner._window) <= MAX_CONTEXT + MAX_HOLD + 64


def test_a_long_undecided_run_is_released_in_bounded_pieces() -> None:
    scanner = StreamScanner(BLOCKING)
    released = scanner.feed("7" * 10_000).text
    assert len(released) >= 10_000 - BLOCKING.longest_literal  # only what could still fold into a phrase waits


def test_a_whole_word_followed_by_a_separator_is_decided_at_once() -> None:
    scanner = StreamScanner(BLOCKING)
    assert scanner.feed("the agent is ricin\n").blocked is not None
    scanner = StreamScanner(BLOCKING)
    assert scanner.feed("the agent is ricin").blocked is None  # "ricinoleic" could follow
    assert scanner.feed(".").blocked is not None
