"""Evasion benchmark (issue 15): how many re-renderings of pushed incident phrases the engine catches on
input and on streamed output, how much of a blocked phrase a client already holds when a stream is cut,
and how many benign near misses, XSTest safe prompts and ordinary documents it blocks.

    CONTAINMENT_PURE_PYTHON=1 .venv/bin/python bench/evasion.py             # everything, chunk sizes 1-7
    CONTAINMENT_PURE_PYTHON=1 .venv/bin/python bench/evasion.py --quick     # chunk sizes 1, 3, 7
    CONTAINMENT_PURE_PYTHON=1 .venv/bin/python bench/evasion.py --json      # the measures as JSON too

The data (phrases, ~120 transforms, near misses) lives in tests/rules/evasion_table.py, shared with
tests/rules/test_evasion.py. Prints a Markdown table, then every failing transform with an example.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules._build import compiled  # noqa: E402
from tests.rules.evasion_table import (  # noqa: E402
    CHUNK_SIZES,
    GOALS,
    OUT_OF_SCOPE,
    PHRASES,
    TRANSFORMS,
    Miss,
    Results,
    run,
    visible,
)


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def table(results: Results) -> list[str]:
    values = results.as_dict()
    rows = [
        ("renderings caught on input (carrier prompt)", "input", GOALS["input_rate"]),
        ("splits across fields caught on input (real extract path)", "split", GOALS["split_rate"]),
        ("input overall (renderings + splits)", "input_all", GOALS["input_rate"]),
        ("renderings caught on streamed output (all chunk sizes)", "stream", GOALS["stream_rate"]),
    ]
    lines = ["| measure | today | goal |", "|---|---|---|"]
    for label, key, goal in rows:
        hits, total = results.counts[key]
        lines.append(f"| {label} | {_pct(results.rate(key))} ({hits}/{total}) | >= {_pct(goal)} |")
    lines.append(
        f"| share of the blocked phrase received when a stream is cut (median; mean "
        f"{_pct(values['received_share_mean'])}; cut with none received {_pct(values['cut_with_none_received'])}) "
        f"| {_pct(values['received_share_median'])} | <= {_pct(GOALS['received_share_median'])} |"
    )
    lines.append(
        f"| benign near-miss sentences blocked | {int(values['near_miss_blocked'])} / {int(values['near_miss_total'])}"
        f" | <= {GOALS['near_miss_blocked']} |"
    )
    lines.append(
        f"| XSTest safe prompts / documents ({results.documents_source}) blocked | "
        f"{int(values['xstest_blocked'])} / {int(values['xstest_total'])} ; "
        f"{int(values['documents_blocked'])} / {int(values['documents_total'])} | 0 / 0 |"
    )
    hits, total = results.counts["input_regex_literal_only"]
    lines.append(
        "| (info, not in the rates) regex rule under leet/separator transforms | "
        f"{_pct(results.rate('input_regex_literal_only'))} ({hits}/{total}) | - |"
    )
    return lines


def breakdown(results: Results) -> list[str]:
    lines: list[str] = []
    by_measure: dict[str, list[Miss]] = defaultdict(list)
    for miss in results.misses:
        by_measure[miss.measure].append(miss)
    titles = {
        "input": "Input misses (rendering in a carrier prompt)",
        "stream": "Streamed-output misses (chunk sizes that let it through)",
        "split": "Splits across fields that get through (first field | second field)",
    }
    for measure in ("input", "stream", "split"):
        misses = by_measure.get(measure, [])
        lines += ["", f"### {titles[measure]}: {len(misses)}"]
        if not misses:
            continue
        by_class: dict[str, dict[str, list[Miss]]] = defaultdict(lambda: defaultdict(list))
        for miss in misses:
            by_class[miss.cls][miss.transform].append(miss)
        lines += ["", "| class | transform | phrases missed | example |", "|---|---|---|---|"]
        for cls in sorted(by_class, key=lambda c: -sum(len(v) for v in by_class[c].values())):
            for name, group in sorted(by_class[cls].items(), key=lambda item: -len(item[1])):
                phrases = ", ".join(
                    f"{m.phrase} ({m.detail.removeprefix('chunks ')})" if m.detail else m.phrase for m in group
                )
                example = visible(group[0].rendering, 90).replace("|", "\\|")
                lines.append(f"| {cls} | {name} | {len(group)}: {phrases} | `{example}` |")
    lines += ["", f"### Benign near misses blocked: {len(results.near_miss_hits)}", ""]
    per_class: dict[str, int] = defaultdict(int)
    for cls, _, _ in results.near_miss_hits:
        per_class[cls] += 1
    lines.append("by class: " + ", ".join(f"{cls} {count}" for cls, count in sorted(per_class.items())))
    for cls, sentence, rule in results.near_miss_hits:
        lines.append(f"- [{cls}] `{visible(sentence, 110)}` → {rule}")
    if results.benign_hits:
        lines += ["", f"### XSTest / documents blocked: {len(results.benign_hits)}", ""]
        for source, text, rule in results.benign_hits:
            lines.append(f"- [{source}] `{visible(text, 110)}` → {rule}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="chunk sizes 1, 3 and 7 only")
    parser.add_argument("--json", action="store_true", help="also print the measures as JSON")
    args = parser.parse_args()
    sizes = (1, 3, 7) if args.quick else CHUNK_SIZES
    started = time.perf_counter()
    results = run(TRANSFORMS, sizes)
    seconds = time.perf_counter() - started
    print(
        f"## Evasion table: {len(PHRASES)} phrases ({sum(p.kind == 'regex' for p in PHRASES)} regex), "
        f"{len(TRANSFORMS)} transforms, chunk sizes {list(sizes)}, "
        f"{'compiled' if compiled() else 'pure Python'} engine, {seconds:.1f} s"
    )
    print()
    print("\n".join(table(results)))
    print("\n".join(breakdown(results)))
    print()
    print("Out of scope for literal rules: " + "; ".join(f"{k} ({v})" for k, v in OUT_OF_SCOPE.items()))
    if args.json:
        print()
        print(json.dumps(results.as_dict(), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
