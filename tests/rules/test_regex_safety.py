"""ReDoS probes: catastrophic or useless regexes are refused at push time with the reason."""

from __future__ import annotations

import time

import pytest

from rules.regex_safety import regex_problem


@pytest.mark.parametrize(
    "pattern,reason",
    [
        ("(a+)+$", "nested quantifiers"),
        ("(a*)*b", "nested quantifiers"),
        (r"(\w+\s?)+$", "nested quantifiers"),
        ("(x+x+)+y", "nested quantifiers"),
        (r"^(([a-z])+.)+[A-Z]([a-z])+$", ""),
        ("(a|aa)+$", "time budget"),
        ("(.*a){12}$", ""),
        ("[unclosed", "does not compile"),
        ("*abc", "does not compile"),
        ("a*", "empty string"),
        # Adversarial probes (issue 16): literal factors repeated without completing a match.
        ("ignore.*previous.*instructions", "bound the gaps"),
        ("you are .* now .* mode", "bound the gaps"),
        ("(?s)begin.*?middle.*?end", "bound the gaps"),
        ("(ab+)+c", "time budget"),  # quadratic with a large constant: 0.3 s on 4 KB of "ab"
        ("x?|y?", "empty string"),
    ],
)
def test_dangerous_patterns_are_refused(pattern: str, reason: str) -> None:
    started = time.monotonic()
    problem = regex_problem(pattern)
    assert problem is not None and reason in problem
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "pattern",
    [
        r"\bsk-[a-z0-9]{20,}\b",
        r"ignore (all )?previous instructions",
        r"ignore.{0,80}previous.{0,80}instructions",  # what the refusal suggests
        r"\bpassword\s*[:=]\s*\S+",
        r"\d{3}-\d{2}-\d{4}",
        r"(?i)how (do|can) i (make|build) a \w+ bomb",
        r"\p{Han}{4,}",
        r"(?:\d{4}[ -]?){3}\d{4}",
    ],
)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert regex_problem(pattern) is None
