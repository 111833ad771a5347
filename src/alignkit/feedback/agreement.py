"""Inter-annotator agreement on rankings: pure functions, no database.

An admin needs two answers: is the task well defined (do people agree at all?) and is any one
annotator an outlier (careless, or reading the guidelines differently)? Both come from
comparing every two annotators who ranked the same item:

* **pairwise agreement**: the fraction of the C(K, 2) response pairs both rankings order the
  same way. Random rankings agree on 0.5 in expectation; human preference data typically lands
  around 0.65-0.80.
* **Kendall's tau**: (concordant - discordant) / C(K, 2), in [-1, 1]. Rankings have no ties, so
  tau = 2 * agreement - 1; it is reported because many readers know it.
* **top-1 agreement**: both put the same response first.
* **safety agreement**: the fraction of responses given the same safe/unsafe label.

Averages are over (item, annotator pair) comparisons, so an item ranked by three people
contributes three comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from statistics import fmean
from typing import Any


@dataclass(frozen=True)
class Judgement:
    """One annotator's submitted ranking of one item (indices best first)."""

    annotator: str
    ranking: Sequence[int]
    safe: Sequence[bool] | None = None


@dataclass(frozen=True)
class AgreementSummary:
    """Agreement over every pair of annotators who ranked the same item."""

    items_compared: int = 0
    comparisons: int = 0
    pairwise_agreement: float | None = None
    kendall_tau: float | None = None
    top1_agreement: float | None = None
    safety_agreement: float | None = None
    per_annotator: dict[str, float] = field(default_factory=dict)
    """Each annotator's mean pairwise agreement with the others on shared items."""


def _positions(ranking: Sequence[int]) -> list[int]:
    k = len(ranking)
    if sorted(ranking) != list(range(k)):
        raise ValueError(f"ranking {list(ranking)} is not a permutation of 0..{k - 1}")
    pos = [0] * k
    for place, index in enumerate(ranking):
        pos[index] = place
    return pos


def pairwise_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Fraction of response pairs that rankings ``a`` and ``b`` order the same way."""
    if len(a) != len(b):
        raise ValueError(f"rankings of different length: {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError("agreement needs at least two responses")
    pa, pb = _positions(a), _positions(b)
    pairs = list(combinations(range(len(a)), 2))
    same = sum((pa[i] < pa[j]) == (pb[i] < pb[j]) for i, j in pairs)
    return same / len(pairs)


def kendall_tau(a: Sequence[int], b: Sequence[int]) -> float:
    """Kendall's tau between two tie-free rankings: 2 * pairwise agreement - 1."""
    return 2.0 * pairwise_agreement(a, b) - 1.0


def safety_agreement(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Fraction of responses that two annotators labelled the same way (safe or unsafe)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"safety labels of different or zero length: {len(a)} and {len(b)}")
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def summarize(by_item: Mapping[Any, Sequence[Judgement]]) -> AgreementSummary:
    """Agreement statistics over items that at least two annotators ranked."""
    agree: list[float] = []
    top1: list[float] = []
    safety: list[float] = []
    per: dict[str, list[float]] = {}
    items = 0
    for judgements in by_item.values():
        if len(judgements) < 2:
            continue
        items += 1
        for x, y in combinations(judgements, 2):
            value = pairwise_agreement(x.ranking, y.ranking)
            agree.append(value)
            top1.append(float(x.ranking[0] == y.ranking[0]))
            per.setdefault(x.annotator, []).append(value)
            per.setdefault(y.annotator, []).append(value)
            if x.safe is not None and y.safe is not None:
                safety.append(safety_agreement(x.safe, y.safe))
    if not agree:
        return AgreementSummary()
    mean_agree = fmean(agree)
    return AgreementSummary(
        items_compared=items,
        comparisons=len(agree),
        pairwise_agreement=mean_agree,
        kendall_tau=2.0 * mean_agree - 1.0,
        top1_agreement=fmean(top1),
        safety_agreement=fmean(safety) if safety else None,
        per_annotator={name: fmean(values) for name, values in sorted(per.items())},
    )
