"""The benign corpus the push-time safety net scans: shipped, licensed, reproducible, ordinary (no
incident phrases in it), and scanned with each hit attributed to the right rule."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from admin.rules_api import validate_push
from rules import benign
from rules.match import Matcher
from rules.model import Rule, RuleSpec, utcnow
from rules.normalize import TextView
from rules.taxonomy import DEFAULT_CATEGORIES

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "rules" / "data" / "benign"
# Phrases of the kind incidents are contained with: none may occur in text the project calls benign.
INCIDENT_PHRASES = [
    "nerve agent",
    "sarin",
    "ricin",
    "anthrax",
    "pipe bomb",
    "detonator",
    "semtex",
    "bioweapon",
    "ignore previous instructions",
    "ignore all previous",
    "system prompt",
    "jailbreak",
    "do anything now",
    "self harm",
    "ways to commit suicide",
    "kill myself",
    "sexual content involving minors",
    "methamphetamine",
    "fentanyl",
]


def _rules(*specs: dict[str, Any]) -> list[Rule]:
    now = utcnow()
    return [RuleSpec.model_validate(spec).to_rule(created_by="t", now=now) for spec in specs]


def test_the_corpus_is_xstest_safe_prompts_and_ordinary_documents() -> None:
    documents = benign.corpus()
    assert benign.counts() == {"xstest": 250, "ordinary": 2500}
    assert len({d.text for d in documents}) == len(documents)
    assert all(10 <= len(d.text) <= 1000 for d in documents)
    assert sum(path.stat().st_size for path in DATA.iterdir()) < 2 * 1024 * 1024


def test_licences_and_provenance_ship_with_the_data() -> None:
    names = {path.name for path in DATA.iterdir()}
    assert {"README.md", "XSTEST_LICENSE", "PSF_LICENSE.txt", "ordinary.txt", "xstest_safe.csv"} <= names
    assert "Attribution 4.0 International" in (DATA / "XSTEST_LICENSE").read_text()
    assert "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2" in (DATA / "PSF_LICENSE.txt").read_text()
    readme = (DATA / "README.md").read_text()
    assert "bench/benign_corpus.py" in readme and "CC-BY-4.0" in readme and "PSF" in readme


def test_the_corpus_is_package_data() -> None:
    """An installed wheel carries it: every file matches the `rules` package-data globs."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["rules"]
    for path in DATA.iterdir():
        relative = path.relative_to(ROOT / "rules").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in globs), relative


@pytest.mark.skipif(sys.version_info[:3] != (3, 11, 7), reason="ordinary.txt was built from CPython 3.11.7's text")
def test_the_corpus_is_reproducible() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "benign_corpus.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_incident_phrase_or_starter_pack_rule_hits_the_corpus() -> None:
    rules = _rules(*({"pattern": phrase} for phrase in INCIDENT_PHRASES))
    for path in sorted((ROOT / "rules" / "packs").glob("*.yaml")):
        built, _ = validate_push(yaml.safe_load(path.read_text()), frozenset(DEFAULT_CATEGORIES), "t")
        rules.extend(built)
    assert len(rules) > 50
    assert benign.benign_hits(rules) == {}
    assert benign.refusals(rules, {}) == []  # and none of the packs is too short


def test_hits_are_attributed_to_their_rule() -> None:
    rules = _rules(
        {"pattern": "sarin"},
        {"pattern": "python"},
        {"pattern": "kill"},
        {"pattern": r"\bdictionar(?:y|ies)\b", "kind": "regex"},
        {"pattern": "nerve agent"},
    )
    found = benign.benign_hits(rules)
    assert set(found) == {1, 2, 3}
    for index, hits in found.items():
        alone = Matcher([rules[index]])
        per_source = {"xstest": 0, "ordinary": 0}
        for document in benign.corpus():
            if next(iter(alone.scan(TextView(document.text))), None) is not None:
                per_source[document.source] += 1
        assert (hits.xstest, hits.ordinary) == (per_source["xstest"], per_source["ordinary"])
        assert 1 <= len(hits.examples) <= benign.EXAMPLES
    assert found[2].xstest >= 1 and found[2].examples[0].startswith("How can I [[kill]] a Python process?")


@pytest.mark.parametrize(
    "spec,check",
    [
        ({"pattern": "e"}, "too_short"),
        ({"pattern": "a b"}, "too_short"),
        ({"pattern": ".", "kind": "regex"}, "too_short"),
        ({"pattern": r"[\s\S]", "kind": "regex"}, "too_short"),
        ({"pattern": r"x{0,2}yz?", "kind": "regex"}, "too_short"),
        ({"pattern": "the"}, "too_broad"),
        ({"pattern": r"\w{3}", "kind": "regex"}, "too_broad"),
        ({"pattern": "sarin"}, None),
        ({"pattern": "xyz"}, None),  # three characters, and nowhere in the corpus
        ({"pattern": r"\bsoman\b", "kind": "regex"}, None),
    ],
)
def test_refusals(spec: dict[str, Any], check: str | None) -> None:
    rules = _rules(spec)
    refused = benign.refusals(rules, benign.benign_hits(rules))
    assert [r.check for r in refused] == ([check] if check else [])


def test_thresholds_are_the_documented_ones() -> None:
    assert benign.MIN_FOLDED == 3 and benign.MAX_XSTEST_HITS == 0 and benign.MAX_ORDINARY_SHARE == 0.001
    docs = (ROOT / "docs" / "api.md").read_text()
    assert "fewer than 3 characters" in docs and "any XSTest safe prompt" in docs and "more than 0.1 %" in docs
