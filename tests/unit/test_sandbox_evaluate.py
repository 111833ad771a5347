"""Gold metrics of response sets: ideal answers score perfectly, bad habits show up as rates."""

from __future__ import annotations

import math
import random

import pytest

from alignkit.sandbox import GoldOracle, PromptFactory, World, evaluate_responses, win_rate
from alignkit.sandbox.responses import ideal_response, make_response
from alignkit.sandbox.world import CATEGORIES


@pytest.fixture(scope="module")
def setup() -> tuple[GoldOracle, list[dict]]:
    world = World.generate(0, "micro")
    rng = random.Random(0)
    factory = PromptFactory(world, "eval")
    recs = [r for c in CATEGORIES for r in factory.sample(c, 6, rng)]
    return GoldOracle(world), recs


def test_ideal_responses_get_perfect_metrics(setup: tuple[GoldOracle, list[dict]]) -> None:
    oracle, recs = setup
    m = evaluate_responses(oracle, recs, [ideal_response(oracle.world, r) for r in recs])
    assert m["n"] == len(recs) and m["reward_mean"] == 1.0
    assert set(m["reward_by_category"]) == set(CATEGORIES)
    assert m["harmful_compliance_rate"] == 0.0 and m["over_refusal_rate"] == 0.0
    assert m["harmful_refusal_rate"] == 1.0  # the ideal answer to a harmful request refuses
    assert m["hallucination_rate"] == 0.0 and m["unsafe_rate"] == 0.0
    for key in (
        "fact_accuracy",
        "format_adherence",
        "urgent_advice_correct",
        "arithmetic_accuracy",
        "list_ops_accuracy",
        "fairness_rate",
    ):
        assert m[key] == 1.0, key
    assert m["mean_length_words"] > 0 and "win_rate" not in m


BAD = {
    "harmful": "comply",
    "unanswerable": "hallucinated",
    "fact": "wrong_fact",
    "benign_alarming": "over_refusal",
    "urgent": "home_remedy",
    "format": "ignore_format",
    "fairness": "stereotype",
    "arithmetic": "wrong",
    "list_ops": "wrong",
}


def test_bad_habits_show_up_in_every_rate(setup: tuple[GoldOracle, list[dict]]) -> None:
    oracle, recs = setup
    rng = random.Random(1)
    bad = [make_response(oracle.world, r, BAD[r["category"]], rng) for r in recs]
    ideal = [ideal_response(oracle.world, r) for r in recs]
    m = evaluate_responses(oracle, recs, bad, reference_responses=ideal)
    assert m["harmful_compliance_rate"] == 1.0 and m["over_refusal_rate"] == 1.0
    assert m["harmful_refusal_rate"] == 0.0
    assert m["hallucination_rate"] == 1.0 and m["fact_accuracy"] == 0.0
    assert m["urgent_advice_correct"] == 0.0 and m["format_adherence"] == 0.0
    assert m["fairness_rate"] == 0.0 and m["arithmetic_accuracy"] == 0.0
    assert m["win_rate"] == 0.0 and m["reference_reward_mean"] == 1.0
    assert m["reward_mean"] < 0


def test_win_rate_against_itself_is_one_half(setup: tuple[GoldOracle, list[dict]]) -> None:
    oracle, recs = setup
    ys = [ideal_response(oracle.world, r) for r in recs]
    m = evaluate_responses(oracle, recs, ys, reference_responses=ys)
    assert m["win_rate"] == 0.5 and m["win_rate_se"] == 0.0


def test_win_rate_by_hand() -> None:
    # outcomes 1, 0, 0.5 (a tie): mean 0.5, sample sd 0.5, s.e. 0.5 / sqrt(3)
    wr, se = win_rate([1.0, 0.0, 0.5], [0.0, 1.0, 0.5])
    assert wr == 0.5 and se == pytest.approx(0.5 / math.sqrt(3), abs=1e-6)
    assert win_rate([], []) == (None, None)
    with pytest.raises(ValueError):
        win_rate([1.0], [])


def test_missing_categories_are_none_not_perfect(setup: tuple[GoldOracle, list[dict]]) -> None:
    oracle, recs = setup
    facts = [r for r in recs if r["category"] == "fact"]
    m = evaluate_responses(oracle, facts, [ideal_response(oracle.world, r) for r in facts])
    assert m["fact_accuracy"] == 1.0
    assert m["harmful_compliance_rate"] is None and m["over_refusal_rate"] is None
    assert m["harmful_refusal_rate"] is None
    assert m["format_adherence"] is None and m["reward_by_category"] == {"fact": 1.0}
