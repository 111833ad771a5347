"""Simulated annotators: flip rate, Plackett-Luce noise, length bias and agreement statistics."""

from __future__ import annotations

import math
import random

import pytest

from alignkit.sandbox.annotators import (
    Annotator,
    AnnotatorPool,
    agreement_report,
    gold_agreement,
    pair_agreement,
)


def _agreement_with_gold(annotator: Annotator, n: int, k: int, seed: int) -> float:
    rng = random.Random(seed)
    agree = total = 0
    for _ in range(n):
        gold = [rng.uniform(-3, 1) for _ in range(k)]
        ranking = annotator.rank(gold, [5] * k, rng)
        a, t = gold_agreement(ranking, gold)
        agree, total = agree + a, total + t
    return agree / total


def test_consistent_annotator_with_quarter_flips_agrees_three_quarters() -> None:
    # ALGORITHMS.md section 11: a perfectly consistent annotator with p = 0.25 flips agrees with gold
    # on 0.75 of items (binomial s.e. over 10k items is 0.0043, so +-0.02 is > 4 s.e.)
    annotator = Annotator("consistent", flip_prob=0.25, temperature=0.0)
    assert _agreement_with_gold(annotator, 10_000, 2, seed=0) == pytest.approx(0.75, abs=0.02)
    # the same holds pair by pair for K = 4 rankings, since a flip reverses the whole ranking
    assert _agreement_with_gold(annotator, 3_000, 4, seed=1) == pytest.approx(0.75, abs=0.02)


def test_noiseless_annotator_reproduces_gold_exactly() -> None:
    assert _agreement_with_gold(Annotator("gold"), 500, 4, seed=2) == 1.0


def test_plackett_luce_pair_probability_is_logistic() -> None:
    # P(i above j) = sigma((u_i - u_j) / T): with a gap of 1 and T = 1 that is 0.7311
    annotator = Annotator("pl", temperature=1.0)
    rng = random.Random(3)
    wins = sum(annotator.rank([1.0, 0.0], [1, 1], rng)[0] == 0 for _ in range(20_000))
    expected = 1 / (1 + math.exp(-1.0))
    assert wins / 20_000 == pytest.approx(expected, abs=0.015)


def test_length_bias_prefers_longer_answers() -> None:
    rng = random.Random(4)
    neutral = Annotator("n")
    biased = Annotator("b", length_bias=0.5)
    # gold prefers the short answer by 0.2; log1p(40) - log1p(5) = 1.92, times 0.5 = 0.96
    assert neutral.rank([1.0, 0.8], [5, 40], rng) == [0, 1]
    assert biased.rank([1.0, 0.8], [5, 40], rng) == [1, 0]


def test_rank_consumes_the_same_draws_whatever_the_settings() -> None:
    # changing one annotator's knobs must not shift the random stream of later items
    for a in (Annotator("x"), Annotator("y", flip_prob=0.5, temperature=0.7)):
        rng = random.Random(5)
        a.rank([0.1, 0.2, 0.3], [1, 2, 3], rng)
        assert rng.random() == pytest.approx(_after_three_draws_plus_one())


def _after_three_draws_plus_one() -> float:
    rng = random.Random(5)
    for _ in range(4):  # one flip coin + three Gumbel draws
        rng.random()
    return rng.random()


def test_agreement_helpers_by_hand() -> None:
    assert pair_agreement([0, 1, 2], [0, 1, 2]) == (3, 3)
    assert pair_agreement([0, 1, 2], [2, 1, 0]) == (0, 3)
    assert pair_agreement([0, 1, 2], [1, 0, 2]) == (2, 3)
    assert gold_agreement([0, 1, 2], [3.0, 2.0, 1.0]) == (3, 3)
    assert gold_agreement([2, 1, 0], [3.0, 2.0, 1.0]) == (0, 3)
    # a gold tie is no preference: that pair is not counted
    assert gold_agreement([0, 1, 2], [1.0, 1.0, 0.0]) == (2, 2)
    report = agreement_report(
        [("a", [0, 1], [1.0, 0.0]), ("b", [1, 0], [1.0, 0.0])], repeats=[([0, 1], [0, 1])]
    )
    assert report["gold_agreement"] == 0.5 and report["gold_pairs"] == 2
    assert report["per_annotator_gold_agreement"] == {"a": 1.0, "b": 0.0}
    assert report["inter_annotator_agreement"] == 1.0


def test_default_pool_is_noisy_like_people() -> None:
    pool = AnnotatorPool.default()
    assert len({a.id for a in pool.annotators}) == len(pool.annotators) == 8
    mean_flip = sum(a.flip_prob for a in pool.annotators) / len(pool.annotators)
    assert 0.1 <= mean_flip <= 0.25
    rng = random.Random(6)
    assert pool.pick(rng, exclude="sim-0").id != "sim-0"


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="flip_prob"):
        Annotator("x", flip_prob=1.5)
    with pytest.raises(ValueError, match="temperature"):
        Annotator("x", temperature=-1.0)
    with pytest.raises(ValueError):
        AnnotatorPool(())
