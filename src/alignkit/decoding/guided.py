"""Reward-guided decoding: π*(t | s) ∝ π(t | s)·exp(w·V(s ⊕ t)) over a candidate set
(ALGORITHMS.md §10).

The KL-regularised optimum of a reward r against the policy π is π·exp(r/β); applied token by
token with a prefix scorer V standing in for the value of each continuation, it gives the
rule above with w = 1/β. Only the top-k candidates by π are rescored (V costs a model call
per candidate); everything else gets probability 0, as in top-k sampling. A reward model
trained on whole responses is used as V on partial ones, which is an approximation: it works
as far as partial answers already show whether the answer will be good (the reason w should
stay moderate). With the CBF filter on, the candidate set is the filter's allowed set, so
guidance can reorder safe tokens but never re-admit an unsafe one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import Field
from torch import Tensor

from alignkit.config import Section
from alignkit.data.records import Text
from alignkit.decoding.prefix import CachedPrefixScorer, PrefixFn, as_cached


class GuideConfig(Section):
    weight: float = Field(1.0, ge=0.0, description="w in π·exp(w·V): 0 leaves π unchanged.")
    top_k: int = Field(
        10,
        ge=1,
        description="Candidates rescored per step (the CBF allowed set when the filter is on).",
    )
    batch_size: int = Field(256, ge=1, description="Texts per call of the reward model.")


def guided_distribution(probs: Tensor, values: Tensor, weight: float) -> Tensor:
    """π·exp(w·V) renormalised over the last dim, computed in log space (no overflow).

    P [0.5, 0.3, 0.2], V [0, 1, 2], w 1 → [0.179001, 0.291944, 0.529055]. Candidates with
    P = 0 stay at 0 (a filtered-out token is never re-admitted by a high value).
    """
    logits = torch.log(probs.double()) + weight * values.double()
    logits = torch.where(probs > 0, logits, torch.full_like(logits, float("-inf")))
    return torch.softmax(logits, dim=-1)


class RewardGuide:
    """Rescore candidate continuations with a prefix value V (a reward model or a function)."""

    def __init__(
        self, value: PrefixFn | CachedPrefixScorer, config: GuideConfig | None = None
    ) -> None:
        self.config = config or GuideConfig()
        self.value = as_cached(value, self.config.batch_size)

    def rescore(
        self, prompts: Sequence[Text], texts: Sequence[list[str]], probs: Sequence[Tensor]
    ) -> tuple[list[Tensor], list[list[float]]]:
        """For each row, the guided distribution over its candidates and their values.

        All rows' candidate texts go to V in one batched (cached) call.
        """
        flat_p = [p for p, ts in zip(prompts, texts, strict=True) for _ in ts]
        flat_t = [t for ts in texts for t in ts]
        flat_v = self.value(flat_p, flat_t)
        out: list[Tensor] = []
        vals: list[list[float]] = []
        at = 0
        for ts, p in zip(texts, probs, strict=True):
            v = flat_v[at : at + len(ts)]
            at += len(ts)
            out.append(
                guided_distribution(p, torch.tensor(v, dtype=torch.float64), self.config.weight)
            )
            vals.append(v)
        return out, vals


def reward_value(scorer: object) -> PrefixFn:
    """V from anything with ``score(prompts, responses)`` (a reward model)."""

    def v(prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        return [float(x) for x in scorer.score(list(prompts), list(responses))]  # type: ignore[attr-defined]

    return v
