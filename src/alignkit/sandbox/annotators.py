"""Simulated annotators: noisy, biased rankers of K responses (AlpacaFarm style).

Each annotator ranks K responses by a Plackett-Luce draw on its *utility* for each response:
the gold reward plus its biases (a preference for longer answers, scaled by ``length_bias``
per unit of log length). ``temperature`` sets how noisy the draw is (P(i above j) for two
responses is sigma((u_i - u_j) / temperature); 0 means a deterministic sort). With probability
``flip_prob`` an item is judged backwards: the draw uses negated utilities, so a consistent
annotator's ranking comes out reversed. That is the ranking analogue of AlpacaFarm's label
flips (p = 0.25 on training labels): on any single pair it flips the preference with
probability ``flip_prob``, so a noiseless annotator agrees with gold on 1 - flip_prob of pairs.

Without such noise, simulated feedback misses reward over-optimisation and misranks methods
(ALGORITHMS.md section 11), which is why the default pool is noisy on purpose: its agreement with
the gold ordering lands in the 65-80 % band that human annotators show.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Annotator:
    """One simulated annotator; see the module docstring for what each knob does."""

    id: str
    flip_prob: float = 0.0
    temperature: float = 0.0
    length_bias: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(
                f"annotator {self.id}: flip_prob must be in [0, 1], got {self.flip_prob}"
            )
        if self.temperature < 0.0:
            raise ValueError(
                f"annotator {self.id}: temperature must be >= 0, got {self.temperature}"
            )

    def utilities(self, rewards: Sequence[float], lengths: Sequence[int]) -> list[float]:
        """Gold reward plus biases: what this annotator actually ranks by."""
        return [r + self.length_bias * math.log1p(n) for r, n in zip(rewards, lengths, strict=True)]

    def rank(
        self, rewards: Sequence[float], lengths: Sequence[int], rng: random.Random
    ) -> list[int]:
        """A ranking (indices, best first) of responses with these gold rewards and lengths."""
        u = self.utilities(rewards, lengths)
        # Always consume the same number of random draws, whatever the settings, so that
        # changing one annotator's knobs does not shift every later draw of the stream.
        flipped = rng.random() < self.flip_prob
        gumbels = [_gumbel(rng) for _ in u]
        if flipped:
            u = [-x for x in u]
        if self.temperature > 0.0:
            # Gumbel-max trick: sorting u/T + Gumbel noise is an exact Plackett-Luce draw
            keys = [x / self.temperature + g for x, g in zip(u, gumbels, strict=True)]
        else:
            keys = u
        return sorted(range(len(keys)), key=lambda i: (-keys[i], i))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gumbel(rng: random.Random) -> float:
    u = rng.random()
    while u <= 0.0:
        u = rng.random()
    return -math.log(-math.log(u))


@dataclass(frozen=True)
class AnnotatorPool:
    """Annotators who share the work: each item goes to one of them at random."""

    annotators: tuple[Annotator, ...]

    def __post_init__(self) -> None:
        if not self.annotators:
            raise ValueError("an annotator pool needs at least one annotator")

    @classmethod
    def default(cls) -> AnnotatorPool:
        """Eight annotators with the spread of noise and bias AlpacaFarm's pool had.

        Mean flip probability 0.15, temperatures 0.3-0.8 reward units, half of them with a
        mild preference for longer answers (so verbose answers can beat concise ones).
        """
        spec = [
            (0.10, 0.3, 0.0),
            (0.15, 0.5, 0.2),
            (0.20, 0.4, 0.1),
            (0.25, 0.6, 0.3),
            (0.10, 0.8, 0.0),
            (0.10, 0.3, 0.4),
            (0.15, 0.5, 0.0),
            (0.15, 0.7, 0.1),
        ]
        return cls(
            tuple(
                Annotator(f"sim-{i}", flip_prob=f, temperature=t, length_bias=b)
                for i, (f, t, b) in enumerate(spec)
            )
        )

    @classmethod
    def low_noise(cls) -> AnnotatorPool:
        """A single near-gold annotator, for evaluation rather than training labels."""
        return cls((Annotator("eval", flip_prob=0.0, temperature=0.1, length_bias=0.0),))

    def pick(self, rng: random.Random, exclude: str | None = None) -> Annotator:
        choices = [a for a in self.annotators if a.id != exclude] or list(self.annotators)
        return rng.choice(choices)

    def annotate(
        self, rewards: Sequence[float], lengths: Sequence[int], rng: random.Random
    ) -> tuple[str, list[int]]:
        """(annotator id, ranking) for one item, from a randomly chosen annotator."""
        a = self.pick(rng)
        return a.id, a.rank(rewards, lengths, rng)

    def to_dict(self) -> dict[str, Any]:
        return {"annotators": [a.to_dict() for a in self.annotators]}


# ----------------------------------------------------------------- agreement statistics
def pair_agreement(ranking_a: Sequence[int], ranking_b: Sequence[int]) -> tuple[int, int]:
    """(pairs ordered the same way by both rankings, pairs) over all C(K, 2) pairs."""
    pos_a = {i: k for k, i in enumerate(ranking_a)}
    pos_b = {i: k for k, i in enumerate(ranking_b)}
    items = sorted(pos_a)
    agree = total = 0
    for x in range(len(items)):
        for y in range(x + 1, len(items)):
            i, j = items[x], items[y]
            total += 1
            agree += (pos_a[i] < pos_a[j]) == (pos_b[i] < pos_b[j])
    return agree, total


def gold_agreement(
    ranking: Sequence[int], gold: Sequence[float], eps: float = 1e-9
) -> tuple[int, int]:
    """(pairs ordered as the gold rewards order them, pairs with distinct gold rewards)."""
    pos = {i: k for k, i in enumerate(ranking)}
    agree = total = 0
    for i in range(len(gold)):
        for j in range(i + 1, len(gold)):
            if abs(gold[i] - gold[j]) <= eps:
                continue  # gold has no preference: nothing to agree with
            total += 1
            agree += (pos[i] < pos[j]) == (gold[i] > gold[j])
    return agree, total


def agreement_report(
    items: Sequence[tuple[str, Sequence[int], Sequence[float]]],
    repeats: Sequence[tuple[Sequence[int], Sequence[int]]] = (),
) -> dict[str, Any]:
    """Agreement with gold (overall and per annotator) and inter-annotator agreement.

    ``items`` are (annotator id, ranking, gold rewards); ``repeats`` are pairs of rankings of
    the same item by two different annotators.
    """
    per: dict[str, list[int]] = {}
    agree = total = 0
    for annotator, ranking, gold in items:
        a, t = gold_agreement(ranking, gold)
        agree, total = agree + a, total + t
        acc = per.setdefault(annotator, [0, 0])
        acc[0] += a
        acc[1] += t
    ia = it = 0
    for r1, r2 in repeats:
        a, t = pair_agreement(r1, r2)
        ia, it = ia + a, it + t
    return {
        "gold_agreement": round(agree / total, 4) if total else None,
        "gold_pairs": total,
        "inter_annotator_agreement": round(ia / it, 4) if it else None,
        "inter_annotator_pairs": it,
        "per_annotator_gold_agreement": {
            k: round(v[0] / v[1], 4) if v[1] else None for k, v in sorted(per.items())
        },
    }
