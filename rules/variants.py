"""Stage-2 variant analysis: from sampled traffic, find what slipped past the first-hour rules and
propose the rules that would catch it — with the evidence to check before pushing them.

1. Samples are split into *blocked* (a block rule matched) and *unblocked*. Texts become sets of word
   tokens folded like the compact view (so `z0rblax` and `zorblax` are one token).
2. *Signal* words are those far more common in blocked samples than in unblocked ones (in at least
   30% of blocked samples, at most 20% of unblocked ones, and 3× as frequent). An unblocked sample is
   *near* a blocked one when it has at least `threshold` of that sample's signal words (IDF-weighted).
   Near samples are grouped by their nearest blocked one.
3. Candidates are word n-grams (1–3 words) that at least two near samples share, that contain a signal
   word, and that hit no more than `max_benign_share` of the *background* (the unblocked samples that
   are not near). A greedy cover picks the candidates that catch the most near samples; n-grams with a
   common first word and different second words also become one regex alternation.
4. Each proposal carries its evidence: near samples it catches, blocked samples it also matches,
   background samples it would hit (benign traffic), and examples.

Nothing here changes policy: proposals are meant to be pushed as `shadow`, watched, then promoted.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import regex

from rules.normalize import compact
from rules.regex_safety import regex_problem
from rules.samples import Sample

_WORD = regex.compile(r"[\p{L}\p{N}@$!|+]+")
STOPWORDS = frozenset(
    compact(word)
    for word in """a about all an and any are as at be but by can could detail detailed did do does each every for
    from full get give go had has have help how i if in into is it its just let like make me more most my need no
    not now of on one or our please really should show so some step steps tell than that the their them then
    there these they this to up us use using very want was way we what when where which who why will with
    would write you your""".split()
)
MIN_PATTERN_CHARS = 5


@dataclass(frozen=True, slots=True)
class Proposal:
    kind: str  # literal | regex
    pattern: str
    word_boundary: bool
    category: str
    catches_unblocked: int
    catches_blocked: int
    benign_hits: int
    example_sample_ids: tuple[str, ...]
    group: int

    def as_rule(self, *, action: str = "shadow", stage: int = 2) -> dict[str, object]:
        rule: dict[str, object] = {
            "pattern": self.pattern,
            "kind": self.kind,
            "category": self.category,
            "action": action,
            "stage": stage,
            "note": f"variant analysis: catches {self.catches_unblocked} unblocked near samples",
        }
        if self.kind == "literal":
            rule["word_boundary"] = self.word_boundary
        return rule


@dataclass
class Analysis:
    samples_scanned: int
    blocked: int
    near: int
    background: int
    proposals: list[Proposal] = field(default_factory=list)
    groups: list[list[str]] = field(default_factory=list)  # sample ids of near samples, per group


def tokens(text: str) -> list[tuple[str, str]]:
    """(folded, surface) word tokens."""
    out = []
    for found in _WORD.finditer(text):
        surface = found.group().lower()
        folded = compact(surface)
        if folded:
            out.append((folded, surface))
    return out


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _blocked(sample: Sample) -> bool:
    return any(m.action == "block" for m in sample.matches)


def analyse(
    samples: Sequence[Sample],
    *,
    threshold: float = 0.3,
    max_benign_share: float = 0.01,
    max_proposals: int = 10,
) -> Analysis:
    texts = {s.id: tokens(f"{s.input_text}\n{s.output_text}") for s in samples}
    words = {sid: [f for f, _ in toks] for sid, toks in texts.items()}
    sets = {sid: set(w) - STOPWORDS for sid, w in words.items()}
    df: Counter[str] = Counter(t for tokset in sets.values() for t in tokset)
    n = max(1, len(samples))
    idf = {t: math.log((n + 1) / (count + 1)) + 1 for t, count in df.items()}

    blocked = [s for s in samples if _blocked(s)]
    unblocked = [s for s in samples if not _blocked(s)]
    analysis = Analysis(len(samples), len(blocked), 0, 0)
    if not blocked or not unblocked:
        analysis.background = len(unblocked)
        return analysis

    df_blocked: Counter[str] = Counter(t for b in blocked for t in sets[b.id])
    df_unblocked: Counter[str] = Counter(t for u in unblocked for t in sets[u.id])
    signal = {
        t
        for t, count in df_blocked.items()
        if count / len(blocked) >= 0.3
        and df_unblocked[t] / len(unblocked) <= 0.2
        and count / len(blocked) >= 3 * df_unblocked[t] / len(unblocked)
    }

    def similarity(a: set[str], b: set[str]) -> float:
        """The share (IDF-weighted) of the blocked sample's signal words that the other sample has."""
        wanted = b & signal
        mass = sum(idf[t] for t in wanted)
        return sum(idf[t] for t in a & wanted) / mass if mass else 0.0

    groups: dict[int, list[Sample]] = defaultdict(list)
    for sample in unblocked:
        scores = [(similarity(sets[sample.id], sets[b.id]), index) for index, b in enumerate(blocked)]
        best, index = max(scores)
        if best >= threshold:
            groups[index].append(sample)
    near = [s for members in groups.values() for s in members]
    near_ids = {s.id for s in near}
    background = [s for s in unblocked if s.id not in near_ids]
    analysis.near, analysis.background = len(near), len(background)
    ordered = sorted(groups)
    analysis.groups = [[s.id for s in groups[index]] for index in ordered]
    position = {index: place for place, index in enumerate(ordered)}
    if not near:
        return analysis

    gram_sets = {sid: set().union(*(_ngrams(w, k) for k in (1, 2, 3))) for sid, w in words.items()}
    surfaces: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
    for toks in texts.values():
        folded = [f for f, _ in toks]
        surface = [s for _, s in toks]
        for k in (1, 2, 3):
            for i in range(len(folded) - k + 1):
                surfaces[tuple(folded[i : i + k])][" ".join(surface[i : i + k])] += 1
    allowed_benign = math.floor(max_benign_share * len(background))
    category_of = {index: _category(blocked[index]) for index in groups}

    candidates: dict[tuple[str, ...], set[str]] = {}
    for gram in {g for s in near for g in gram_sets[s.id]}:
        if not signal.intersection(gram) or len("".join(gram)) < MIN_PATTERN_CHARS:
            continue
        caught = {s.id for s in near if gram in gram_sets[s.id]}
        if len(caught) < 2:
            continue
        benign = sum(1 for s in background if gram in gram_sets[s.id])
        if benign > allowed_benign:
            continue
        candidates[gram] = caught

    group_of = {s.id: index for index, members in groups.items() for s in members}
    uncovered = set(near_ids)
    for _ in range(max_proposals):
        best_gram = max(
            candidates,
            key=lambda g: (len(candidates[g] & uncovered), len(g), -len(" ".join(g))),
            default=None,
        )
        if best_gram is None or not candidates[best_gram] & uncovered:
            break
        caught = candidates.pop(best_gram)
        uncovered -= caught
        group = Counter(group_of[sid] for sid in caught).most_common(1)[0][0]
        analysis.proposals.append(
            Proposal(
                kind="literal",
                pattern=surfaces[best_gram].most_common(1)[0][0],
                word_boundary=True,
                category=category_of[group],
                catches_unblocked=len(caught),
                catches_blocked=sum(1 for b in blocked if best_gram in gram_sets[b.id]),
                benign_hits=sum(1 for s in background if best_gram in gram_sets[s.id]),
                example_sample_ids=tuple(sorted(caught))[:3],
                group=position[group],
            )
        )
    alternations = _alternations(
        candidates, blocked, background, gram_sets, surfaces, category_of, group_of, allowed_benign
    )
    analysis.proposals.extend(replace(p, group=position[p.group]) for p in alternations)
    return analysis


def _category(sample: Sample) -> str:
    for match in sample.matches:
        if match.action == "block":
            return match.category
    return "other"


def _alternations(
    candidates: dict[tuple[str, ...], set[str]],
    blocked: Sequence[Sample],
    background: Sequence[Sample],
    gram_sets: dict[str, set[tuple[str, ...]]],
    surfaces: dict[tuple[str, ...], Counter[str]],
    category_of: dict[int, str],
    group_of: dict[str, int],
    allowed_benign: int,
) -> list[Proposal]:
    """`first (second|other)` for two-word candidates that share a first word."""
    by_first: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for gram in candidates:
        if len(gram) == 2 and gram[0] not in STOPWORDS and gram[1] not in STOPWORDS:
            by_first[gram[0]].append(gram)
    proposals = []
    for grams in by_first.values():
        if len(grams) < 2:
            continue
        first = surfaces[grams[0][:1]].most_common(1)[0][0] if surfaces.get(grams[0][:1]) else grams[0][0]
        seconds = sorted({surfaces[g].most_common(1)[0][0].split(" ", 1)[1] for g in grams})
        pattern = rf"\b{regex.escape(first)}\s+({'|'.join(regex.escape(s) for s in seconds)})\b"
        if regex_problem(pattern) is not None:
            continue
        caught = set().union(*(candidates[g] for g in grams))
        benign = sum(1 for s in background if any(g in gram_sets[s.id] for g in grams))
        if benign > allowed_benign:
            continue
        group = Counter(group_of[sid] for sid in caught).most_common(1)[0][0]
        proposals.append(
            Proposal(
                kind="regex",
                pattern=pattern,
                word_boundary=False,
                category=category_of[group],
                catches_unblocked=len(caught),
                catches_blocked=sum(1 for b in blocked if any(g in gram_sets[b.id] for g in grams)),
                benign_hits=benign,
                example_sample_ids=tuple(sorted(caught))[:3],
                group=group,
            )
        )
    return proposals[:3]
