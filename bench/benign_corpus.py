"""Build the benign corpus the push-time safety net scans (rules/benign.py; how it is used: docs/api.md,
"Push-time safety net"): rules/data/benign/xstest_safe.csv and rules/data/benign/ordinary.txt.

    .venv/bin/python bench/benign_corpus.py            # rewrites both files
    .venv/bin/python bench/benign_corpus.py --check    # exits 1 if a shipped file differs

xstest_safe.csv: the 250 rows labelled `safe` of tests/data/xstest_prompts.csv (XSTest, CC-BY-4.0,
licence copied beside it as XSTEST_LICENSE), unchanged; the `unsafe` contrast prompts are not shipped.

ordinary.txt, source: the English prose that ships with CPython itself, so nothing is downloaded and the licence is
clear (PSF License v2, copied beside the data as PSF_LICENSE.txt): the paragraphs of the reference
manual and tutorial topics in `pydoc_data.topics`, and the docstrings of the standard library's modules,
classes and functions (read with `ast`, never imported). Paragraphs are kept when they read as prose
(mostly letters and spaces, no code, no doctest, 60-1000 characters), whitespace is collapsed, exact
duplicates are dropped, and a seeded sample of DOCUMENTS is written one per line, sorted. The output
depends only on the Python version (3.11.7 made the shipped file).
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import random
import re
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "rules" / "data" / "benign"
XSTEST = ROOT / "tests" / "data" / "xstest_prompts.csv"
DOCUMENTS = 2500
SEED = 15
MIN_CHARS, MAX_CHARS = 60, 1000
_CODE = re.compile(r">>>|\.\.\.\s|::|[{}\[\]=<>]|\b(def|import|lambda)\b|\w\(|_\w|\w_")
# Docs words that are benign in context (os.kill, "abort", "execute") but would make a reader of the
# corpus wonder: the corpus is meant to be unmistakably ordinary, so such paragraphs are left out.
_LOADED = re.compile(r"\b(kill\w*|attack\w*|weapon\w*|bomb\w*|explo\w*|poison\w*|exploit\w*|abuse\w*)\b", re.I)


def _paragraphs(text: str) -> Iterator[str]:
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        if not lines or any(line.startswith(("   ", "\t")) for line in lines[1:]):
            continue  # an indented block: code, a grammar production or a table
        yield " ".join(line.strip() for line in lines)


def _prose(paragraph: str) -> bool:
    if not MIN_CHARS <= len(paragraph) <= MAX_CHARS or _CODE.search(paragraph) or _LOADED.search(paragraph):
        return False
    letters = sum(c.isalpha() or c == " " for c in paragraph)
    return letters / len(paragraph) >= 0.9 and paragraph[0].isupper() and paragraph.endswith(".")


def _topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield from _paragraphs(topics[name])


def _docstrings() -> Iterator[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        relative = path.relative_to(stdlib).parts
        if relative[0] in ("site-packages", "test", "idlelib", "lib2to3", "turtledemo") or "tests" in relative:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                docstring = ast.get_docstring(node)
                if docstring:
                    yield from _paragraphs(docstring)


def build() -> list[str]:
    seen: set[str] = set()
    kept: list[str] = []
    for paragraph in (*_topics(), *_docstrings()):
        paragraph = re.sub(r"\s+", " ", paragraph).strip()
        if _prose(paragraph) and paragraph.lower() not in seen:
            seen.add(paragraph.lower())
            kept.append(paragraph)
    chosen = random.Random(SEED).sample(kept, min(DOCUMENTS, len(kept)))
    return sorted(chosen)


def xstest_safe() -> str:
    with XSTEST.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(reader.fieldnames or ()), lineterminator="\n")
        writer.writeheader()
        writer.writerows(row for row in reader if row["label"] == "safe")
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    args = parser.parse_args()
    files = {"ordinary.txt": "".join(document + "\n" for document in build()), "xstest_safe.csv": xstest_safe()}
    different = 0
    for name, text in files.items():
        path = DATA / name
        if args.check:
            same = path.exists() and path.read_text(encoding="utf-8") == text
            different += not same
            print(f"{name} is " + ("up to date" if same else "different from what this Python builds"))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines, {len(text.encode()):,} bytes")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
