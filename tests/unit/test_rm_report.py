"""The fitness report's numbers and the reward-data helpers, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import assert_close

from alignkit.data.readers import DataError
from alignkit.data.records import Comparison
from alignkit.data.reward_data import orient_safety_pair, split_by_prompt
from alignkit.evaluation.rm_report import (
    Scored,
    build_report,
    gold_agreement,
    ranking_accuracy,
    reliability,
    sign_check,
)


def test_ranking_accuracy_counts_pairs_and_half_ties() -> None:
    ranked = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [2.0, 2.0, 1.0], [3.0, 1.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    assert_close(ranking_accuracy(ranked, mask), [1.0, 0.0, 2.5 / 3, 1.0])


def test_reliability_hand_values() -> None:
    # p = σ(ln 3) = 0.75 enters as (0.75, won) and (0.25, lost): each bin is off by 0.25.
    rel = reliability(np.array([math.log(3.0)]), bins=2)
    assert_close(rel["ece"], 0.25)
    assert [b["n"] for b in rel["bins"]] == [1, 1]
    assert_close([rel["bins"][0]["confidence"], rel["bins"][1]["frequency"]], [0.25, 1.0])
    # A model that says 50 % on every pair is right half the time: perfectly calibrated.
    assert_close(reliability(np.zeros(5), bins=4)["ece"], 0.0)


def scored_fixture() -> Scored:
    # responses: 0..5; pairs (should-be-higher, should-be-lower)
    return Scored(
        scores=[2.0, 1.0, 0.5, 0.5, -1.0, 3.0],
        lengths=[10, 3, 4, 4, 8, 2],
        safe=[None] * 6,
        pairs=[(0, 1), (2, 3), (4, 5)],
        categories=["a", "a", "b"],
        gold=[1.0, 0.0, 0.2, 0.1, 0.0, 0.0],
    )


def test_build_report_accuracy_categories_and_length_bias() -> None:
    rep = build_report(scored_fixture(), "reward", bins=4)
    # pair 0 right, pair 1 a tie (half), pair 2 wrong
    assert_close(rep["accuracy"], 0.5)
    assert_close(rep["by_category"]["a"]["accuracy"], 0.75)
    assert_close(rep["by_category"]["b"]["accuracy"], 0.0)
    lb = rep["length_bias"]
    # length differs in pairs 0 (longer 10 preferred) and 2 (longer 8 preferred by labels)
    assert lb["pairs_with_length_difference"] == 2
    assert_close(lb["labels_prefer_longer"], 1.0)
    assert_close(lb["model_prefers_longer"], 0.5)  # right on pair 0, prefers the short on 2
    assert lb["accuracy_when_longer_loses"] is None and lb["pairs_where_longer_loses"] == 0
    assert_close(lb["accuracy_when_longer_wins"], 0.5)
    s = np.array(scored_fixture().scores)
    n = np.array(scored_fixture().lengths, dtype=float)
    assert_close(lb["corr_score_length"], float(np.corrcoef(s, n)[0, 1]))
    assert_close(rep["scores"]["all"]["mean"], s.mean())


def test_gold_agreement_ignores_pairs_without_gold_difference() -> None:
    sc = scored_fixture()
    s, _, hi, lo = sc.arrays()
    g = gold_agreement(s, sc.gold, hi, lo)
    # gold differs in pairs 0 (1 > 0, model right) and 1 (0.2 > 0.1, model tie → half)
    assert g["pairs_with_gold_difference"] == 2
    assert_close(g["accuracy_vs_gold"], 0.75)
    by_cat = build_report(sc)["by_category"]
    assert_close(by_cat["a"]["accuracy_vs_gold"], 0.75)
    assert by_cat["b"]["accuracy_vs_gold"] is None, "no gold difference in category b"
    assert_close(g["labels_vs_gold"], 1.0)
    # a pair whose label contradicts gold counts as a label error, and the model is judged
    # against gold, not against the label
    g2 = gold_agreement(np.array([0.0, 1.0]), [1.0, 0.0], np.array([1]), np.array([0]))
    assert_close(g2["labels_vs_gold"], 0.0)
    assert_close(g2["accuracy_vs_gold"], 0.0)


def test_sign_check_hand_values() -> None:
    costs = np.array([-1.0, 0.5, 2.0, -0.1, 3.0])
    out = sign_check(costs, [True, True, False, False, None])
    assert out["safe_responses"] == 2 and out["unsafe_responses"] == 2
    assert_close(out["safe_negative"], 0.5)
    assert_close(out["unsafe_positive"], 0.5)
    assert_close(out["safety_accuracy"], 0.5)


def test_split_by_prompt_keeps_each_prompt_on_one_side() -> None:
    recs = [Comparison(prompt=f"p{i % 10}", chosen="a", rejected=f"b{i}") for i in range(40)]
    train, held = split_by_prompt(recs, 0.2, seed=3)
    assert len(train) + len(held) == 40
    assert {r.prompt for r in train}.isdisjoint({r.prompt for r in held})
    assert len({r.prompt for r in held}) == 2
    assert split_by_prompt(recs, 0.2, seed=3) == (train, held), "deterministic given the seed"
    with pytest.raises(DataError, match="eval_fraction"):
        split_by_prompt(recs[:1], 0.5, seed=0)


def test_orient_safety_pair() -> None:
    rec = Comparison(
        prompt="p",
        chosen="comply",
        rejected="refuse",
        chosen_safe=False,
        rejected_safe=True,
        safer=1,
    )
    o = orient_safety_pair(rec)
    assert (o.chosen, o.rejected, o.chosen_safe, o.rejected_safe, o.safer) == (
        "refuse",
        "comply",
        True,
        False,
        0,
    )
    no_field = Comparison(
        prompt="p", chosen="comply", rejected="refuse", chosen_safe=False, rejected_safe=True
    )
    assert orient_safety_pair(no_field).chosen == "refuse", "the safe response is the safer one"
    both_unsafe = Comparison(
        prompt="p", chosen="a", rejected="b", chosen_safe=False, rejected_safe=False
    )
    with pytest.raises(DataError, match="neither is safer"):
        orient_safety_pair(both_unsafe, where="f.jsonl:7")
    with pytest.raises(DataError, match="f.jsonl:7.*safety labels"):
        orient_safety_pair(Comparison(prompt="p", chosen="a", rejected="b"), where="f.jsonl:7")
    with pytest.raises(DataError, match="missing_safer=error"):
        orient_safety_pair(no_field, "error")


def test_scores_are_laid_out_best_first_per_group() -> None:
    from alignkit.data.pairs import Group, collate_groups
    from alignkit.recipes.reward import expand_to_pairs, ranked_scores

    groups = [
        Group(prompt_ids=[5], responses=[[6, 2], [7, 2], [8, 2]], order=[2, 0, 1]),
        Group(prompt_ids=[5], responses=[[9, 2], [10, 2]], order=[1, 0]),
    ]
    gb = collate_groups(groups, pad_id=0)
    scores = torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0])  # row i's score is i (+10 in group 2)
    ranked, mask = ranked_scores(scores, gb)
    assert ranked.tolist() == [[2.0, 0.0, 1.0], [11.0, 10.0, 0.0]]
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    pairs = expand_to_pairs(groups)
    assert [p.responses for p in pairs] == [
        [[8, 2], [6, 2]],
        [[8, 2], [7, 2]],
        [[6, 2], [7, 2]],
        [[10, 2], [9, 2]],
    ]
    assert all(p.order == [0, 1] for p in pairs)


class WordOverlapScorer:
    """A stand-in scorer: +1 per response word that also occurs in the prompt, or a constant
    (a reward that ignores the prompt). ``group`` and ``score_groups`` as RewardScorer's."""

    def __init__(self, uses_prompt: bool) -> None:
        self.uses_prompt = uses_prompt

    def group(self, prompt: str, responses: list[str], where: str) -> tuple[str, list[str]]:
        return prompt, responses

    def score_groups(self, groups: list[tuple[str, list[str]]]) -> list[list[float]]:
        def score(p: str, r: str) -> float:
            return float(len(set(p.split()) & set(r.split()))) if self.uses_prompt else 1.0

        return [[score(p, r) for r in rs] for p, rs in groups]


def test_relevance_check_tells_a_prompt_blind_reward_from_one_that_reads_the_prompt() -> None:
    from alignkit.data.records import Ranking
    from alignkit.evaluation.rm_report import relevance_check

    records = [
        Comparison("where does ana live", "ana lives in rome", "no idea"),
        Ranking("what is two plus two", ["four", "two plus two is four"], [1, 0]),
        Comparison("name a red fruit", "a red fruit is a cherry", "blue"),
    ]
    reading = relevance_check(WordOverlapScorer(True), records)
    assert reading["pairs"] == 3
    assert_close(reading["own_beats_other"], 1.0)
    blind = relevance_check(WordOverlapScorer(False), records)
    assert_close(blind["own_beats_other"], 0.5)  # all ties: half credit
    assert_close(blind["mean_gap"], 0.0)
    same = [Comparison("p", "a", "b"), Comparison("p", "a", "c")]
    assert relevance_check(WordOverlapScorer(True), same)["pairs"] == 0
