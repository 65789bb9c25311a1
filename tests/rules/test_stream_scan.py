"""Any chunking of a text gives the same verdict as the whole text, and no complete blocked phrase is
ever released; redaction in a stream gives the same text as redacting the whole."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.match import Matcher
from rules.model import RuleSpec, utcnow
from rules.normalize import TextView
from rules.redact import redact
from rules.stream_scan import StreamScanner

PIECES = [
    "nerve",
    " agent",
    "ricin",
    "oleic",
    " ",
    ".",
    "a",
    "n",
    "é",
    "\u200b",
    "x",
    "!",
    "secret",
    "ﬁ",
    "\n",
    "r",
    "i",
    "c",
    "Ｎ",
    "3",
]


def _matcher(*specs: dict[str, object]) -> Matcher:
    now = utcnow()
    return Matcher([RuleSpec.model_validate(spec).to_rule(created_by="t", now=now) for spec in specs])


BLOCKING = _matcher(
    {"pattern": "nerve agent", "id": "na"},
    {"pattern": "ricin", "word_boundary": True, "id": "ricin"},
    {"pattern": "rx", "kind": "regex", "id": "rx"},
)
REDACTING = _matcher(
    {"pattern": "secret", "action": "redact", "id": "s"},
    {"pattern": "ricin", "action": "redact", "word_boundary": True, "id": "r"},
    {"pattern": "xan", "action": "redact", "id": "x"},
)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = "".join(draw(st.lists(st.sampled_from(PIECES), max_size=30)))
    cuts = sorted(set(draw(st.lists(st.integers(0, len(text)), max_size=12))))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def _stream(matcher: Matcher, pieces: list[str]) -> tuple[bool, str]:
    scanner = StreamScanner(matcher)
    sent: list[str] = []
    for piece in pieces:
        emission = scanner.feed(piece)
        if emission.blocked is not None:
            return True, "".join(sent)
        sent.append(emission.text)
    emission = scanner.finish()
    if emission.blocked is not None:
        return True, "".join(sent)
    sent.append(emission.text)
    return False, "".join(sent)


def _blocked(matcher: Matcher, text: str) -> bool:
    return any(hit.rule.action == "block" for hit in matcher.scan(TextView(text)))


@settings(max_examples=400, deadline=None)
@given(chunked())
def test_any_chunking_gives_the_whole_text_verdict(case: tuple[str, list[str]]) -> None:
    text, pieces = case
    blocked, sent = _stream(BLOCKING, pieces)
    assert blocked == _blocked(BLOCKING, text)
    # No blocked match of the whole text lies within what was released. (The released prefix alone may
    # look like one: `ricin` cut from `ricinrx` is not a whole word in the text.)
    view = TextView(text)
    released = [hit for hit in BLOCKING.scan(view) if hit.original_span(view)[1] <= len(sent)]
    assert not released, f"released a blocked phrase: {sent!r}"
    if not blocked:
        assert sent == text


@settings(max_examples=400, deadline=None)
@given(chunked())
def test_stream_redaction_equals_whole_text_redaction(case: tuple[str, list[str]]) -> None:
    text, pieces = case
    blocked, sent = _stream(REDACTING, pieces)
    view = TextView(text)
    assert not blocked
    assert sent == redact(view, list(REDACTING.scan(view)))


def test_a_match_split_across_pieces_is_caught_before_the_completing_piece() -> None:
    scanner = StreamScanner(BLOCKING)
    assert scanner.feed("how to make ner").text == "how to make "  # "ner" could begin "nerve agent": held
    assert scanner.feed("ve ag").text == ""
    emission = scanner.feed("ent now")
    assert emission.blocked is not None and emission.text == ""  # the client never saw any of the phrase


def test_held_text_is_released_once_it_cannot_begin_a_match() -> None:
    scanner = StreamScanner(BLOCKING)
    assert scanner.feed("the nerv").text == "the "
    assert scanner.feed("es of steel").text == "nerves of steel"
    assert scanner.finish().text == ""


def test_a_multibyte_homoglyph_split_match_is_caught() -> None:
    scanner = StreamScanner(BLOCKING)
    scanner.feed("nеrvе")  # Cyrillic е
    held = scanner.feed(" аg\u200bent")  # the phrase's end: held until it is known to end a word
    assert held.blocked is None and held.text == ""
    assert scanner.feed("s are").blocked is not None


def test_a_whole_word_match_at_a_piece_end_waits_for_the_next_piece() -> None:
    scanner = StreamScanner(BLOCKING)
    assert scanner.feed("a ricin").text == "a "  # undecided: "ricinoleic" would be fine
    assert scanner.feed("oleic acid").text == "ricinoleic acid"
    scanner = StreamScanner(BLOCKING)
    assert scanner.feed("a ricin").text == "a "
    assert scanner.feed(" plant").blocked is not None


def test_redaction_holds_back_only_the_longest_pattern() -> None:
    scanner = StreamScanner(REDACTING)
    first = scanner.feed("the launch code is sec")
    assert first.text == "the launch code is "  # only "sec", which could begin "secret", is held
    second = scanner.feed("ret and more words")
    assert second.text == "[REDACTED] and more word"  # "s" could begin "secret"
    assert scanner.finish().text == "s"


def test_regex_block_rules_do_not_make_redaction_hold_more() -> None:
    matcher = _matcher(
        {"pattern": "hunter2", "action": "redact", "id": "h"},
        {"pattern": r"ignore (all )?previous instructions", "kind": "regex", "id": "inj"},
    )
    scanner = StreamScanner(matcher)
    assert scanner.feed("my password is ").text == "my password is "  # nothing here could begin "hunter2"
    assert scanner.feed("hunt").text == ""


def test_regex_redaction_in_a_stream() -> None:
    matcher = _matcher({"pattern": r"\bsk-[a-z0-9]{8,}\b", "kind": "regex", "action": "redact", "id": "k"})
    scanner = StreamScanner(matcher)
    sent = [scanner.feed(piece).text for piece in ["key: sk-abc", "def12345 and", " more text follows"]]
    sent.append(scanner.finish().text)
    assert "".join(sent) == "key: [REDACTED] and more text follows"
