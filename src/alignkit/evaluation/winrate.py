"""Judge-based win rates: both presentation orders, and the length-controlled win rate.

A judge compares a model's response with a reference response to the same prompt. Two kinds
of judge are accepted, so a reward model, an ensemble, a user's Python function or an LLM
judge are interchangeable:

* a **pointwise scorer** — any ``score(prompts, responses) -> list[float]`` callable or object
  with a ``score`` method (``alignkit.models.scorer.Scorer``). It becomes a pairwise judge
  through ALGORITHMS.md §13: P(first preferred) = σ(s_first − s_second).
* a **pairwise judge** — an object with ``compare(prompts, first, second) -> list[float]``
  giving P(first preferred) for each prompt (an LLM judge that reads both answers).

Pairwise judges prefer whichever answer they read first (or second) surprisingly often, so
every comparison is made in both orders and averaged; the share of "first wins" is reported
as ``first_position_rate`` (0.5 = no position bias). A pointwise scorer has no position, so
for it both orders agree exactly.

Judges also prefer longer answers. The length-controlled win rate (Dubois et al. 2024,
AlpacaEval 2) fits, per model, a logistic GLM of the per-prompt preference on
tanh(standardised length difference) (and, optionally, an instruction-difficulty covariate)
and reports the mean predicted preference with the length difference set to zero: what the
win rate would be if the model answered at the reference's length. Everything here is numpy
(no sklearn / scipy), pure, and tested against ALGORITHMS.md §13.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from alignkit.data.records import Text

TIE_EPS = 1e-9
ScoreFn = Callable[[Sequence[Text], Sequence[Text]], list[float]]


@runtime_checkable
class PairwiseJudge(Protocol):
    """Anything that says, per prompt, how likely ``first`` is preferred over ``second``."""

    def compare(
        self, prompts: Sequence[Text], first: Sequence[Text], second: Sequence[Text]
    ) -> list[float]: ...


class ScoreJudge:
    """A pairwise judge made from a pointwise scorer: P(first) = σ((s_first − s_second) / τ).

    Scores are memoised per (prompt, response), so judging both orders scores each response
    once. ``hard=True`` turns the preference into 1 / 0.5 (tie) / 0, the plain win count.
    """

    def __init__(self, scorer: Any, temperature: float = 1.0, hard: bool = False) -> None:
        fn = getattr(scorer, "score", scorer)
        if not callable(fn):
            raise TypeError(
                "judge must be callable as score(prompts, responses) -> list[float], have a "
                ".score method, or a .compare(prompts, first, second) method"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.fn: ScoreFn = fn
        self.temperature = temperature
        self.hard = hard
        self._cache: dict[str, float] = {}

    def scores(self, prompts: Sequence[Text], responses: Sequence[Text]) -> list[float]:
        keys = [json.dumps([p, r]) for p, r in zip(prompts, responses, strict=True)]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            new = self.fn([prompts[i] for i in todo], [responses[i] for i in todo])
            if len(new) != len(todo):
                raise ValueError(f"the judge returned {len(new)} scores for {len(todo)} responses")
            for i, s in zip(todo, new, strict=True):
                self._cache[keys[i]] = float(s)
        return [self._cache[k] for k in keys]

    def compare(
        self, prompts: Sequence[Text], first: Sequence[Text], second: Sequence[Text]
    ) -> list[float]:
        a = np.asarray(self.scores(prompts, first), dtype=np.float64)
        b = np.asarray(self.scores(prompts, second), dtype=np.float64)
        d = a - b
        if self.hard:
            return np.where(np.abs(d) <= TIE_EPS, 0.5, (d > 0).astype(np.float64)).tolist()
        return (1.0 / (1.0 + np.exp(-d / self.temperature))).tolist()


def as_pairwise_judge(judge: Any) -> PairwiseJudge:
    """A pairwise judge from a pairwise judge, a scorer object, or a score callable."""
    if isinstance(judge, PairwiseJudge):
        return judge
    return ScoreJudge(judge)


@dataclass(frozen=True)
class BothOrders:
    """Per-prompt P(model preferred) with the model shown first and shown second."""

    model_first: np.ndarray
    model_second: np.ndarray

    @property
    def preference(self) -> np.ndarray:
        """The order-averaged preference: what every win rate here is computed from."""
        return (self.model_first + self.model_second) / 2.0

    @property
    def first_position_rate(self) -> float:
        """Mean P(the answer shown first wins); 0.5 means no position bias."""
        return float(np.mean((self.model_first + (1.0 - self.model_second)) / 2.0))

    @property
    def order_agreement(self) -> float:
        """Share of prompts whose winner does not change when the order is swapped."""
        a = np.sign(np.round(self.model_first - 0.5, 9))
        b = np.sign(np.round(self.model_second - 0.5, 9))
        return float(np.mean(a == b))


def judge_both_orders(
    prompts: Sequence[Text],
    responses: Sequence[Text],
    reference_responses: Sequence[Text],
    judge: Any,
) -> BothOrders:
    """Ask the judge (model, reference) and (reference, model) for every prompt."""
    if not (len(prompts) == len(responses) == len(reference_responses)):
        raise ValueError(
            f"{len(prompts)} prompts, {len(responses)} responses and "
            f"{len(reference_responses)} reference responses: they must pair up"
        )
    pj = as_pairwise_judge(judge)
    ab = np.asarray(pj.compare(prompts, responses, reference_responses), dtype=np.float64)
    ba = np.asarray(pj.compare(prompts, reference_responses, responses), dtype=np.float64)
    for name, arr in (("model first", ab), ("model second", ba)):
        if arr.shape != (len(prompts),) or not np.all((arr >= 0) & (arr <= 1)):
            raise ValueError(f"judge ({name}) must return one probability in [0, 1] per prompt")
    return BothOrders(model_first=ab, model_second=1.0 - ba)


def mean_and_se(x: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (sample std with ddof=1 over √n; 0 for n < 2)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("no values")
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0
    return float(arr.mean()), se


def hard_wins(preference: np.ndarray) -> np.ndarray:
    """1 where the model is preferred, 0.5 for a tie (P = 0.5), 0 where the reference is."""
    d = preference - 0.5
    return np.where(np.abs(d) <= TIE_EPS, 0.5, (d > 0).astype(np.float64))


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-3, max_iter: int = 100, tol: float = 1e-10
) -> np.ndarray:
    """L2-regularised logistic regression with soft targets y ∈ [0, 1], by damped Newton.

    Minimises Σ_i BCE(σ(x_i·w), y_i) + (l2/2)·‖w‖². The small ridge keeps the weights finite
    when the data are separable (a model that wins every prompt) without moving them
    noticeably otherwise; the loss is strictly convex, so Newton with step halving converges.
    """
    n, k = x.shape
    w = np.zeros(k)

    def loss(w: np.ndarray) -> float:
        z = x @ w
        # BCE with logits, stable: log(1 + e^z) − y·z.
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w)

    current = loss(w)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(k)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-8 and loss(w - t * step) > current:
            t /= 2
        if t <= 1e-8:  # no descent left at machine precision: converged
            break
        w = w - t * step
        new = loss(w)
        improvement, current = current - new, new
        if float(np.max(np.abs(t * step))) < tol or improvement < tol * max(1.0, abs(current)):
            break
    return w


def _features(
    length_diff: np.ndarray, scale: float, difficulty: np.ndarray | None, zero_length: bool
) -> np.ndarray:
    cols = [np.ones_like(length_diff)]
    if scale > 0:
        cols.append(np.zeros_like(length_diff) if zero_length else np.tanh(length_diff / scale))
    if difficulty is not None:
        cols.append(difficulty)
    return np.stack(cols, axis=1)


def length_controlled_win_rate(
    preference: Sequence[float] | np.ndarray,
    length_diff: Sequence[float] | np.ndarray,
    difficulty: Sequence[float] | np.ndarray | None = None,
    l2: float = 1e-3,
) -> tuple[float, float]:
    """(LC win rate, length coefficient) of one model against the reference.

    preference: per-prompt P(model preferred) (soft or 0/0.5/1).
    length_diff: per-prompt len(model) − len(reference), in any unit (AlpacaEval: characters).
    difficulty: optional per-prompt instruction difficulty (e.g. how often other models beat
        the reference on it); kept at its observed values in the prediction.

    The GLM is logit P = θ + φ·tanh(Δ/sd(Δ)) [+ γ·difficulty]; the LC win rate is the mean of
    σ(θ [+ γ·difficulty]) over prompts, i.e. the prediction at zero length difference. When
    every length difference is equal, length and skill cannot be told apart and the length
    term is left out (φ reported as 0).
    """
    y = np.asarray(preference, dtype=np.float64)
    d = np.asarray(length_diff, dtype=np.float64)
    diff = None if difficulty is None else np.asarray(difficulty, dtype=np.float64)
    if y.shape != d.shape or (diff is not None and diff.shape != y.shape):
        raise ValueError("preference, length_diff and difficulty must have one value per prompt")
    if y.size == 0:
        raise ValueError("no prompts")
    scale = float(d.std(ddof=1)) if d.size > 1 else 0.0
    w = fit_logistic(_features(d, scale, diff, zero_length=False), y, l2=l2)
    z = _features(d, scale, diff, zero_length=True) @ w
    lc = float(np.mean(1.0 / (1.0 + np.exp(-z))))
    return lc, float(w[1]) if scale > 0 else 0.0


@dataclass(frozen=True)
class WinRateResult:
    """Everything a judged comparison reports (see :func:`win_rate_report`)."""

    n: int
    win_rate: float
    win_rate_se: float
    win_rate_hard: float
    lc_win_rate: float
    lc_win_rate_se: float
    length_coef: float
    first_position_rate: float
    order_agreement: float
    mean_length: float
    reference_mean_length: float

    def as_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def win_rate_report(
    prompts: Sequence[Text],
    responses: Sequence[str],
    reference_responses: Sequence[str],
    judge: Any,
    length: Callable[[str], float] = len,
    difficulty: Sequence[float] | None = None,
    n_boot: int = 200,
    seed: int = 0,
) -> WinRateResult:
    """Judge a model against a reference in both orders; raw and length-controlled win rates.

    ``win_rate`` is the mean order-averaged preference (soft for a reward-model judge, as
    ALGORITHMS.md §13 defines it) with its standard error; ``win_rate_hard`` counts wins with
    ties as half. The LC standard error is a bootstrap over prompts (``n_boot`` refits,
    seeded), since the GLM's prediction has no simple closed form.
    """
    both = judge_both_orders(prompts, responses, reference_responses, judge)
    pref = both.preference
    wr, se = mean_and_se(pref)
    lens = np.asarray([length(r) for r in responses], dtype=np.float64)
    ref_lens = np.asarray([length(r) for r in reference_responses], dtype=np.float64)
    diff = None if difficulty is None else np.asarray(difficulty, dtype=np.float64)
    lc, coef = length_controlled_win_rate(pref, lens - ref_lens, diff)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot if pref.size > 1 else 0):
        idx = rng.integers(0, pref.size, pref.size)
        boots.append(
            length_controlled_win_rate(
                pref[idx], (lens - ref_lens)[idx], None if diff is None else diff[idx]
            )[0]
        )
    lc_se = float(np.std(boots, ddof=1)) if len(boots) > 1 else 0.0
    return WinRateResult(
        n=int(pref.size),
        win_rate=wr,
        win_rate_se=se,
        win_rate_hard=float(np.mean(hard_wins(pref))),
        lc_win_rate=lc,
        lc_win_rate_se=lc_se,
        length_coef=coef,
        first_position_rate=both.first_position_rate,
        order_agreement=both.order_agreement,
        mean_length=float(lens.mean()),
        reference_mean_length=float(ref_lens.mean()),
    )
