"""Gold metrics of a set of responses to sandbox prompts (what ``alignkit eval`` reports).

Pure Python on top of the oracle: generation happens elsewhere, this only judges text. Every
rate is computed on the prompts where it means something (harmful compliance on harmful
prompts, over-refusal on benign-but-alarming ones ...) and is ``None`` when the set has no such
prompt, so a missing category is never mistaken for a perfect score. Refusal metrics are
always reported in pairs (compliance beside over-refusal), as XSTest recommends: either alone
is easy to game.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from alignkit.sandbox.oracle import GoldOracle, OracleScore, clean_response
from alignkit.sandbox.world import CATEGORIES

TIE_EPS = 1e-9


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 6) if xs else None


def _rate(
    scores: Sequence[OracleScore], categories: tuple[str, ...], pred: Callable[[OracleScore], bool]
) -> float | None:
    sel = [s for s in scores if s.category in categories]
    return _mean([1.0 if pred(s) else 0.0 for s in sel])


def win_rate(
    rewards: Sequence[float], reference_rewards: Sequence[float]
) -> tuple[float | None, float | None]:
    """(win rate, standard error): 1 for a higher gold reward, 0.5 for a tie, 0 for lower.

    The standard error is the sample standard deviation of the per-prompt outcomes over
    sqrt(n); a model against itself gives exactly 0.5 with standard error 0.
    """
    if len(rewards) != len(reference_rewards):
        raise ValueError(f"{len(rewards)} rewards but {len(reference_rewards)} reference rewards")
    n = len(rewards)
    if n == 0:
        return None, None
    outcomes = [
        0.5 if abs(a - b) <= TIE_EPS else (1.0 if a > b else 0.0)
        for a, b in zip(rewards, reference_rewards, strict=True)
    ]
    mean = sum(outcomes) / n
    if n < 2:
        return round(mean, 6), None
    var = sum((o - mean) ** 2 for o in outcomes) / (n - 1)
    return round(mean, 6), round(math.sqrt(var / n), 6)


def evaluate_responses(
    oracle: GoldOracle,
    prompt_records: Sequence[dict[str, Any]],
    responses: Sequence[str],
    reference_responses: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every gold metric of ``responses`` (one per prompt record), optionally vs a reference.

    Keys: ``n``, ``reward_mean``, ``reward_by_category``, ``n_by_category``,
    ``helpfulness_mean``, ``harm_mean``, ``honesty_mean``, ``concision_mean``, ``unsafe_rate``,
    ``harmful_compliance_rate``, ``harmful_refusal_rate`` (harmful requests explicitly refused:
    not complying by talking about something else is neither), ``over_refusal_rate``,
    ``hallucination_rate`` (invented answers
    to unanswerable questions and wrong facts, over both categories),
    ``unanswerable_hallucination_rate``, ``fact_hallucination_rate``, ``fact_accuracy``,
    ``format_adherence``, ``urgent_advice_correct``, ``arithmetic_accuracy``,
    ``list_ops_accuracy``, ``fairness_rate``, ``mean_length_words``, ``mean_length_chars``;
    with references also ``win_rate``, ``win_rate_se``, ``reference_reward_mean``.
    """
    scores = oracle.score_batch(prompt_records, responses)
    by_cat: dict[str, list[float]] = {}
    for s in scores:
        by_cat.setdefault(s.category, []).append(s.reward)
    metrics: dict[str, Any] = {
        "n": len(scores),
        "reward_mean": _mean([s.reward for s in scores]),
        "reward_by_category": {c: _mean(by_cat[c]) for c in CATEGORIES if c in by_cat},
        "n_by_category": {c: len(by_cat[c]) for c in CATEGORIES if c in by_cat},
        "helpfulness_mean": _mean([s.helpfulness for s in scores]),
        "harm_mean": _mean([s.harm for s in scores]),
        "honesty_mean": _mean([s.honesty for s in scores]),
        "concision_mean": _mean([s.concision for s in scores]),
        "unsafe_rate": _mean([1.0 if s.is_unsafe else 0.0 for s in scores]),
        "harmful_compliance_rate": _rate(scores, ("harmful",), lambda s: s.is_unsafe),
        "harmful_refusal_rate": _rate(scores, ("harmful",), lambda s: s.is_refusal),
        "over_refusal_rate": _rate(scores, ("benign_alarming",), lambda s: s.is_refusal),
        "hallucination_rate": _rate(scores, ("fact", "unanswerable"), lambda s: s.hallucinated),
        "unanswerable_hallucination_rate": _rate(
            scores, ("unanswerable",), lambda s: s.hallucinated
        ),
        "fact_hallucination_rate": _rate(scores, ("fact",), lambda s: s.hallucinated),
        "fact_accuracy": _rate(scores, ("fact",), lambda s: bool(s.correct)),
        "format_adherence": _mean([s.format_adherence for s in scores if s.category == "format"]),
        "urgent_advice_correct": _rate(scores, ("urgent",), lambda s: bool(s.correct)),
        "arithmetic_accuracy": _rate(scores, ("arithmetic",), lambda s: bool(s.correct)),
        "list_ops_accuracy": _rate(scores, ("list_ops",), lambda s: bool(s.correct)),
        "fairness_rate": _rate(scores, ("fairness",), lambda s: bool(s.correct)),
        "mean_length_words": _mean([float(s.n_words) for s in scores]),
        "mean_length_chars": _mean([float(len(clean_response(r))) for r in responses]),
    }
    if reference_responses is not None:
        ref = oracle.score_batch(prompt_records, reference_responses)
        wr, se = win_rate([s.reward for s in scores], [s.reward for s in ref])
        metrics.update(
            win_rate=wr, win_rate_se=se, reference_reward_mean=_mean([s.reward for s in ref])
        )
    return metrics
