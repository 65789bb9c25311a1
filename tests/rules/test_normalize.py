"""Evasion variants that must be caught, benign near-misses that must pass, and the view invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.match import Matcher
from rules.model import RuleSpec, utcnow
from rules.normalize import TextView, compact, compact_detail, light, light_detail

NERVE_AGENT_VARIANTS = {
    "plain": "how to make nerve agent",
    "upper": "HOW TO MAKE NERVE AGENT",
    "full-width": "ｎｅｒｖｅ ａｇｅｎｔ",
    "math bold": "𝐧𝐞𝐫𝐯𝐞 𝐚𝐠𝐞𝐧𝐭",
    "math script": "𝓃𝑒𝓇𝓋𝑒 𝒶𝑔𝑒𝓃𝓉",
    "math double-struck": "𝕟𝕖𝕣𝕧𝕖 𝕒𝕘𝕖𝕟𝕥",
    "circled": "ⓝⓔⓡⓥⓔ ⓐⓖⓔⓝⓣ",
    "zero-width space": "ne\u200brve ag\u200bent",
    "zero-width joiner": "n\u200de\u200dr\u200dv\u200de agent",
    "soft hyphen": "ner\u00adve age\u00adnt",
    "BOM and word joiner": "\ufeffnerve\u2060 agent",
    "tag characters": "".join(chr(0xE0000 + ord(c)) for c in "nerve agent"),
    "cyrillic homoglyphs": "nеrvе аgеnt",  # е, а are Cyrillic
    "greek homoglyphs": "nerve αgent",
    "mixed scripts": "ɴеrᴠe аɡеnt",
    "accents": "nérvé àgënt",
    "zalgo": "n̷e̷r̷v̷e̷ a̷g̷e̷n̷t̷",
    "leet digits": "n3rv3 4g3nt",
    "leet symbols": "n3rv3 @g3n+",
    "dots": "n.e.r.v.e a.g.e.n.t",
    "dashes": "n-e-r-v-e-a-g-e-n-t",
    "spaces": "n e r v e   a g e n t",
    "newlines": "n\ne\nr\nv\ne\na\ng\ne\nn\nt",
    "underscores and slashes": "nerve_agent / nerve/agent",
    "no space": "nerveagent",
    "mixed": "Ｎ.3.ʀ\u200bv.е @ɡ3ɴ+",
}


def _matcher(*specs: dict[str, object]) -> Matcher:
    now = utcnow()
    return Matcher([RuleSpec.model_validate(spec).to_rule(created_by="t", now=now) for spec in specs])


def _found(matcher: Matcher, text: str) -> bool:
    return any(True for _ in matcher.scan(TextView(text)))


@pytest.mark.parametrize("name", sorted(NERVE_AGENT_VARIANTS))
def test_evasion_variants_are_caught(name: str) -> None:
    matcher = _matcher({"pattern": "nerve agent"}, {"pattern": "Nerve Agent", "word_boundary": True})
    hits = list(matcher.scan(TextView(NERVE_AGENT_VARIANTS[name])))
    assert hits, f"{name} evaded the rule"


@pytest.mark.parametrize(
    "pattern,text",
    [
        ("kill", "k1ll"),
        ("kill", "ki||"),
        ("kill", "K!LL"),
        ("bomb", "b0mb"),
        ("bomb", "Ьомь"),  # Cyrillic soft signs and о, м
        ("password", "p@$$w0rd"),
        ("hate", "h4t3"),
        ("steal", "5t34l"),
    ],
)
def test_leetspeak_variants_are_caught(pattern: str, text: str) -> None:
    assert _found(_matcher({"pattern": pattern}), text)


@pytest.mark.parametrize(
    "pattern,text",
    [
        ("ricin", "Ricinoleic acid is the main fatty acid in castor oil."),
        ("ricin", "The ricinus plant is ornamental."),
        ("kill", "How can I kill a Python process?"),  # a whole-word rule still matches here: see below
        ("meth", "The method works; use methane or methanol."),
        ("anal", "An analysis of the data."),
        ("rape", "Grape juice and rapeseed oil."),
        ("heroin", "Heroine of the story."),
        ("bomb", "The show was a bombshell and the bombardier laughed."),
        ("arsenic", "Arsenical compounds are discussed."),
    ],
)
def test_benign_near_misses_pass_a_whole_word_rule(pattern: str, text: str) -> None:
    matcher = _matcher({"pattern": pattern, "word_boundary": True})
    assert _found(matcher, text) is (pattern == "kill")


@pytest.mark.parametrize(
    "text",
    [
        "Ricinoleic acid",
        "prices in Cincinnati",
    ],
)
def test_whole_word_ricin_is_not_found_inside_other_words(text: str) -> None:
    assert not _found(_matcher({"pattern": "ricin", "word_boundary": True}), text)


@pytest.mark.parametrize("text", ["ricin", "RICIN.", "r.i.c.i.n", "make ricin!", "(ricin)", "ricin\nnext"])
def test_whole_word_ricin_is_found(text: str) -> None:
    assert _found(_matcher({"pattern": "ricin", "word_boundary": True}), text)


def test_documented_folds() -> None:
    assert compact("Hello, World!") == "heiioworidi"
    assert compact("ß") == "ss"
    assert compact("ﬁ") == "fi"
    assert compact("x²") == "xz"  # a leet digit in a token with a letter
    assert compact("in 2024, 5 arin") == "in2024sarin"[:6] + "5arin"  # digits of letterless tokens stay
    assert compact("s 4 r 1 n") == "sarin"  # ... unless the text is spaced out letter by letter
    assert compact("$100 | a+b") == "100atb"  # symbols of letterless tokens are separators
    assert light("Ｈｅｌｌｏ, Wörld!") == "hello, world!"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_views_built_at_once_and_char_by_char_agree(text: str) -> None:
    detail = compact_detail(text)
    assert detail.text == compact(text)
    assert light_detail(text).text == light(text)
    assert len(detail.origin) == len(detail.text)
    assert list(detail.origin) == sorted(detail.origin)
    assert all(0 <= i < len(text) for i in detail.origin)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_views_concatenate(left: str, right: str) -> None:
    # Folding is per token: across a separator and a token of two letters, views concatenate.
    assert compact(left + " zz " + right) == compact(left + " ") + "zz" + compact(" " + right)
    assert light(left + right) == light(left) + light(right)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1))
def test_offsets_map_to_characters_that_fold_to_the_match(text: str) -> None:
    detail = compact_detail(text)
    for index, char in enumerate(detail.text):
        source = text[detail.origin[index]]
        assert char in compact(source) + compact("a" + source)[1:]  # as a letter token's leet or alone


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)), st.data())
def test_ascii_detail_agrees_with_the_general_one(text: str, data: st.DataObject) -> None:
    from rules.normalize import AsciiDetail

    general = compact_detail(text)
    fast = AsciiDetail(text)
    assert fast.text == general.text
    n = len(general.text)
    if n == 0:
        return
    start = data.draw(st.integers(0, n - 1))
    end = data.draw(st.integers(start + 1, n))
    assert fast.original_span(start, end) == general.original_span(start, end)
    assert fast.is_word(start, end) == general.is_word(start, end)
