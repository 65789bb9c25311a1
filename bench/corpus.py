"""Deterministic synthetic rules and texts for the benchmarks (seeded; no data is downloaded)."""

from __future__ import annotations

import random
from typing import Any

from rules.model import Policy, RuleSpec, utcnow

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "tre",
    "von",
    "sha",
    "qui",
    "zar",
    "pel",
    "dro",
    "nix",
    "bra",
    "gol",
    "fen",
    "tus",
    "vir",
    "ome",
    "pax",
    "rud",
    "sel",
    "tor",
    "ulm",
    "wex",
    "yon",
    "zed",
    "cra",
    "dun",
    "fli",
    "gre",
    "hoj",
]
WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part model answer question process system network energy chemical history research"
).split()


def literal_patterns(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < count:
        words = rng.randint(1, 3)
        seen.add(" ".join("".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))) for _ in range(words)))
    return sorted(seen)


def regex_patterns(count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    shapes = [
        lambda a, b: rf"\b{a}\w{{0,8}}\s+{b}\b",
        lambda a, b: rf"{a}(?:ing|ed|s)?\s+(?:the\s+)?{b}",
        lambda a, b: rf"\b{a}[-_ ]?\d{{2,6}}\b",
        lambda a, b: rf"(?:{a}|{b})\s+(?:now|today)",
    ]
    out = []
    for index in range(count):
        a = "".join(rng.choices(SYLLABLES, k=3))
        b = "".join(rng.choices(SYLLABLES, k=2))
        out.append(shapes[index % len(shapes)](a, b))
    return out


def rules(literals: int, regexes: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"pattern": p, "category": "other", "word_boundary": i % 3 == 0}
        for i, p in enumerate(literal_patterns(literals))
    ]
    out += [{"pattern": p, "kind": "regex", "category": "other"} for p in regex_patterns(regexes)]
    return out


def policy(literals: int, regexes: int) -> Policy:
    """`rules(literals, regexes)` validated and made into one policy version, as a push would."""
    now = utcnow()
    specs = [RuleSpec.model_validate(rule) for rule in rules(literals, regexes)]
    return Policy(version=1, rules=tuple(spec.to_rule(created_by="bench", now=now) for spec in specs))


def text(size: int, seed: int = 3) -> str:
    """Benign English-like text of about `size` characters."""
    rng = random.Random(seed)
    parts: list[str] = []
    length = 0
    while length < size:
        sentence = " ".join(rng.choices(WORDS, k=rng.randint(6, 16))).capitalize() + ". "
        parts.append(sentence)
        length += len(sentence)
    return "".join(parts)[:size]
