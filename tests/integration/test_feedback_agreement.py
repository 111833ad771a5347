"""Inter-annotator agreement maths, checked against values computed by hand."""

from __future__ import annotations

import pytest

from alignkit.feedback.agreement import (
    Judgement,
    kendall_tau,
    pairwise_agreement,
    safety_agreement,
    summarize,
)


def test_identical_reversed_and_one_swap() -> None:
    # K=3 has pairs (0,1), (0,2), (1,2).
    assert pairwise_agreement([0, 1, 2], [0, 1, 2]) == 1.0
    assert kendall_tau([0, 1, 2], [0, 1, 2]) == 1.0
    assert pairwise_agreement([0, 1, 2], [2, 1, 0]) == 0.0
    assert kendall_tau([0, 1, 2], [2, 1, 0]) == -1.0
    # Swapping the top two flips only the pair (0, 1): 2 of 3 pairs agree, tau = 1/3.
    assert pairwise_agreement([0, 1, 2], [1, 0, 2]) == pytest.approx(2 / 3, abs=1e-12)
    assert kendall_tau([0, 1, 2], [1, 0, 2]) == pytest.approx(1 / 3, abs=1e-12)


def test_k4_hand_example() -> None:
    # a = [3, 0, 2, 1]: positions 3->0, 0->1, 2->2, 1->3.  b = [0, 3, 1, 2]: 0->0, 3->1, 1->2, 2->3.
    # Pairs (i, j) and "i before j?" in a / b:
    # (0,1) T/T  (0,2) T/T  (0,3) F/T  (1,2) F/T  (1,3) F/F  (2,3) F/F  -> 4 of 6 agree.
    assert pairwise_agreement([3, 0, 2, 1], [0, 3, 1, 2]) == pytest.approx(4 / 6, abs=1e-12)
    assert kendall_tau([3, 0, 2, 1], [0, 3, 1, 2]) == pytest.approx(1 / 3, abs=1e-12)


def test_agreement_is_symmetric_and_relabelling_invariant() -> None:
    a, b = [2, 0, 3, 1], [0, 2, 1, 3]
    assert pairwise_agreement(a, b) == pairwise_agreement(b, a)
    relabel = {0: 3, 1: 2, 2: 0, 3: 1}
    assert pairwise_agreement([relabel[i] for i in a], [relabel[i] for i in b]) == (
        pairwise_agreement(a, b)
    )


@pytest.mark.parametrize(
    ("a", "b"), [([0, 1], [0, 1, 2]), ([0, 0, 1], [0, 1, 2]), ([0, 1, 3], [0, 1, 2]), ([0], [0])]
)
def test_invalid_rankings_are_refused(a: list[int], b: list[int]) -> None:
    with pytest.raises(ValueError):
        pairwise_agreement(a, b)


def test_safety_agreement() -> None:
    assert safety_agreement([True, False, True], [True, True, True]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        safety_agreement([True], [True, False])


def test_summary_over_items_and_annotators() -> None:
    by_item = {
        # Three annotators: pairs (a,b)=1.0, (a,c)=0.0, (b,c)=0.0 (c reversed the others).
        1: [
            Judgement("a", [0, 1, 2], [True, True, False]),
            Judgement("b", [0, 1, 2], [True, True, True]),
            Judgement("c", [2, 1, 0], None),
        ],
        # Two annotators: one swap -> 2/3, same best response.
        2: [Judgement("a", [0, 1, 2]), Judgement("b", [0, 2, 1])],
        # A single ranking contributes nothing.
        3: [Judgement("a", [1, 0])],
    }
    s = summarize(by_item)
    assert s.items_compared == 2 and s.comparisons == 4
    mean = (1.0 + 0.0 + 0.0 + 2 / 3) / 4
    assert s.pairwise_agreement == pytest.approx(mean, abs=1e-12)
    assert s.kendall_tau == pytest.approx(2 * mean - 1, abs=1e-12)
    # top-1: (a,b) same, (a,c) no, (b,c) no, item 2 same -> 2/4.
    assert s.top1_agreement == pytest.approx(0.5, abs=1e-12)
    # Only item 1's (a, b) pair has labels from both: 2 of 3 agree.
    assert s.safety_agreement == pytest.approx(2 / 3, abs=1e-12)
    assert s.per_annotator["a"] == pytest.approx((1.0 + 0.0 + 2 / 3) / 3, abs=1e-12)
    assert s.per_annotator["c"] == pytest.approx(0.0, abs=1e-12)


def test_summary_of_nothing_is_empty() -> None:
    s = summarize({1: [Judgement("a", [0, 1])]})
    assert s.comparisons == 0 and s.pairwise_agreement is None and s.per_annotator == {}
