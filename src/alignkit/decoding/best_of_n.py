"""Best-of-N: draw N responses, keep the one a judge (reward model) scores highest.

The simplest inference-time alignment, and a strong baseline for RLHF: it moves the output
distribution toward high reward with KL(best-of-N ‖ base) ≤ log N − (N − 1)/N
(:func:`alignkit.losses.decoding.best_of_n_kl_bound`), with no training. With the reward
model as judge, the chosen response beats one random draw about N/(N + 1) of the time by the
judge's own measure; whether it is *really* better depends on how well the reward model
tracks the true goal, which is what the sandbox's gold oracle measures (reward over-
optimisation, ALGORITHMS.md §12).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alignkit.data.records import Text
from alignkit.losses.decoding import best_of_n_kl_bound
from alignkit.rollout.judges import Judge, Record


@dataclass
class BestOfN:
    """Which of the N draws was kept, every draw's score, and the analytic KL bound."""

    chosen: int
    scores: list[float]

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def kl_bound(self) -> float:
        return best_of_n_kl_bound(self.n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "chosen": self.chosen,
            "scores": [round(s, 6) for s in self.scores],
            "kl_bound": round(self.kl_bound, 6),
        }


def argmax_first(scores: Sequence[float]) -> int:
    """Index of the highest score; the earliest on ties (deterministic, and draw 0 is an
    unbiased sample, so ties never favour a later draw)."""
    if not scores:
        raise ValueError("best-of-N needs at least one score")
    best = 0
    for i, s in enumerate(scores):
        if s > scores[best]:
            best = i
    return best


class ScorerJudge:
    """Adapt a two-argument scorer (``RewardScorer``, ``RewardEnsemble``) to the Judge protocol."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer

    def score(
        self, prompts: Sequence[Text], responses: Sequence[str], records: Sequence[Record]
    ) -> list[float]:
        return [float(s) for s in self.scorer.score(list(prompts), list(responses))]


def as_judge(obj: Any) -> Judge:
    """A Judge from a judge, or from anything with ``score(prompts, responses)``."""
    import inspect

    params = inspect.signature(obj.score).parameters
    return obj if len(params) >= 3 else ScorerJudge(obj)


def select_best_of_n(
    judge: Judge,
    prompts: Sequence[Text],
    draws: Sequence[Sequence[str]],
    records: Sequence[Record] | None = None,
) -> list[BestOfN]:
    """For each prompt, score its N drawn responses (all prompts in one judge call) and keep the
    argmax. ``draws[i]`` are the responses to ``prompts[i]``."""
    recs = list(records) if records is not None else [{} for _ in prompts]
    flat_p = [p for p, ds in zip(prompts, draws, strict=True) for _ in ds]
    flat_r = [d for ds in draws for d in ds]
    flat_rec = [rec for rec, ds in zip(recs, draws, strict=True) for _ in ds]
    scores = judge.score(flat_p, flat_r, flat_rec)
    out = []
    at = 0
    for ds in draws:
        s = [float(x) for x in scores[at : at + len(ds)]]
        at += len(ds)
        out.append(BestOfN(argmax_first(s), s))
    return out
