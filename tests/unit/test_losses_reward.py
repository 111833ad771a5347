"""Reward-model losses against ALGORITHMS.md §2 hand values, plus properties that can fail."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import assert_close

from alignkit.losses.reward import (
    bradley_terry_loss,
    ensemble_rewards,
    kwise_ranking_loss,
    pad_rankings,
    plackett_luce_loss,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------- hand values (§2)


def test_bradley_terry_hand_value() -> None:
    assert_close(bradley_terry_loss(t(2.0), t(1.0)), [0.31326])
    assert_close(bradley_terry_loss(t(2.0), t(1.0)), [softplus(-1.0)])


def test_bradley_terry_margin_one_gives_log_two() -> None:
    assert_close(bradley_terry_loss(t(2.0), t(1.0), margin=1.0), [0.69315])
    assert_close(bradley_terry_loss(t(2.0), t(1.0), margin=t(1.0)), [math.log(2.0)])


def test_bradley_terry_centering_adds_eta_sum_squared() -> None:
    plain = bradley_terry_loss(t(2.0), t(1.0))
    centred = bradley_terry_loss(t(2.0), t(1.0), center_coef=0.01)
    assert_close(centred - plain, [0.09])
    assert_close(centred, [softplus(-1.0) + 0.09])


def test_kwise_hand_value() -> None:
    # pairs (3,2), (3,1), (2,1): [softplus(-1)·2 + softplus(-2)] / 3
    expected = (2 * softplus(-1.0) + softplus(-2.0)) / 3
    assert_close(kwise_ranking_loss(t(3.0, 2.0, 1.0).unsqueeze(0)), [expected])
    assert_close(kwise_ranking_loss(t(3.0, 2.0, 1.0).unsqueeze(0)), [0.25115])


def test_plackett_luce_hand_value() -> None:
    expected = -(3 - math.log(math.exp(3) + math.exp(2) + math.exp(1))) - (
        2 - math.log(math.exp(2) + math.exp(1))
    )
    scores = t(3.0, 2.0, 1.0).unsqueeze(0)
    assert_close(plackett_luce_loss(scores), [expected])
    assert_close(plackett_luce_loss(scores), [0.72087])


# ---------------------------------------------------------------- properties


def test_bradley_terry_is_symmetric_and_ordered() -> None:
    # Preferring the better-scored response costs less than preferring the worse one.
    better = bradley_terry_loss(t(2.0), t(1.0))
    worse = bradley_terry_loss(t(1.0), t(2.0))
    assert bool(better < worse)
    # softplus(-d) - softplus(d) = -d
    assert_close(better - worse, [-1.0])


def test_plackett_luce_with_two_items_equals_bradley_terry() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    assert_close(plackett_luce_loss(scores), bradley_terry_loss(scores[:, 0], scores[:, 1]))


def test_kwise_equals_mean_of_bradley_terry_over_all_pairs() -> None:
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    expected = []
    for row in scores:
        pair_losses = [
            bradley_terry_loss(row[i], row[j]) for i, j in itertools.combinations(range(4), 2)
        ]
        expected.append(torch.stack(pair_losses).mean())
    assert_close(kwise_ranking_loss(scores), torch.stack(expected))


def test_kwise_with_two_items_equals_bradley_terry() -> None:
    scores = t(0.3, -1.2).unsqueeze(0)
    assert_close(kwise_ranking_loss(scores), bradley_terry_loss(t(0.3), t(-1.2)))


def test_pad_rankings_layout_and_gradient() -> None:
    flat = t(3.0, 2.0, 1.0, 5.0, 4.0).requires_grad_()
    padded, mask = pad_rankings(flat, [3, 2])
    assert_close(padded, [[3.0, 2.0, 1.0], [5.0, 4.0, 0.0]])
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    kwise_ranking_loss(padded, mask).sum().backward()
    assert flat.grad is not None
    # Row 2 is plain BT on (5, 4): d/dr_w softplus(-(r_w - r_l)) = -σ(-1); the pad gets nothing.
    sig = 1.0 / (1.0 + math.e)
    assert_close(flat.grad[3:], [-sig, sig])
    # Row 1: r_w=3 is in pairs with margins 1 and 2, each weighted 1/3.
    assert_close(flat.grad[0], -(sig + 1.0 / (1.0 + math.exp(2.0))) / 3)


def test_pad_rankings_rejects_wrong_sizes() -> None:
    with pytest.raises(ValueError, match="sizes sum to 4"):
        pad_rankings(t(1.0, 2.0, 3.0), [2, 2])


@pytest.mark.parametrize("loss_fn", [kwise_ranking_loss, plackett_luce_loss])
def test_padded_rankings_equal_unpadded_rows(loss_fn) -> None:  # type: ignore[no-untyped-def]
    rankings = [t(3.0, 2.0, 1.0), t(0.5, 1.5), t(2.0, -1.0, 0.0, 4.0)]
    flat = torch.cat(rankings)
    padded, mask = pad_rankings(flat, [len(r) for r in rankings], pad_value=123.0)
    batched = loss_fn(padded, mask)
    for i, row in enumerate(rankings):
        assert_close(batched[i], loss_fn(row.unsqueeze(0))[0])


def test_plackett_luce_padding_gives_finite_zero_gradients() -> None:
    scores = t(1.0, 0.0, 0.0, 0.0).unsqueeze(0).requires_grad_()
    mask = torch.tensor([[True, True, False, False]])
    plackett_luce_loss(scores, mask).sum().backward()
    assert scores.grad is not None
    assert bool(torch.isfinite(scores.grad).all())
    assert_close(scores.grad[0, 2:], [0.0, 0.0])
    # d/ds_0 of softplus(-(s0 - s1)) = -σ(s1 - s0)
    assert_close(scores.grad[0, 0], -1.0 / (1.0 + math.exp(1.0)))


def test_ranking_with_single_response_contributes_nothing() -> None:
    scores = t(2.0, 0.0).unsqueeze(0)
    mask = torch.tensor([[True, False]])
    assert_close(kwise_ranking_loss(scores, mask), [0.0])
    assert_close(plackett_luce_loss(scores, mask), [0.0])


def test_plackett_luce_prefers_the_true_order() -> None:
    right = plackett_luce_loss(t(3.0, 2.0, 1.0).unsqueeze(0))
    wrong = plackett_luce_loss(t(1.0, 2.0, 3.0).unsqueeze(0))
    assert bool(right < wrong)


def test_ensemble_modes() -> None:
    members = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]], dtype=torch.float64)  # [M=3, B=2]
    assert_close(ensemble_rewards(members, "mean"), [2.0, 0.0])
    assert_close(ensemble_rewards(members, "min"), [1.0, 0.0])
    # population std of (1, 2, 3) = sqrt(2/3)
    assert_close(
        ensemble_rewards(members, "mean_minus_std", std_coef=0.5),
        [2.0 - 0.5 * math.sqrt(2.0 / 3.0), 0.0],
    )


def test_ensemble_single_member_has_zero_std() -> None:
    assert_close(ensemble_rewards(t(1.5, -2.0).unsqueeze(0), "mean_minus_std"), [1.5, -2.0])


def test_ensemble_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="ensemble mode"):
        ensemble_rewards(t(1.0).unsqueeze(0), "max")  # type: ignore[arg-type]
