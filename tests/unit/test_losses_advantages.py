"""Advantage estimators and reward shaping against ALGORITHMS.md §3 and §4."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close

from alignkit.losses.advantages import (
    adaptive_kl_coef,
    discounted_returns,
    fraction_uniform_groups,
    gae,
    grpo_advantages,
    kl_penalized_rewards,
    kl_penalized_scores,
    last_token_index,
    reinforce_plus_plus_advantages,
    remax_advantages,
    rloo_advantages,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------- GAE (§3)


def test_gae_hand_values() -> None:
    rewards = t(0.0, 0.0, 1.0).unsqueeze(0)
    values = t(0.5, 0.5, 0.5).unsqueeze(0)
    advantages, returns = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.95)
    assert_close(advantages, [[0.45125, 0.475, 0.5]])
    assert_close(returns, [[0.95125, 0.975, 1.0]])


def test_gae_right_padded_rows_match_unpadded_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    values = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    lengths = [6, 2, 4]
    mask = torch.arange(6).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    # Garbage on padding must not leak into real positions.
    rewards = torch.where(mask, rewards, 1e3)
    values = torch.where(mask, values, -1e3)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for i, n in enumerate(lengths):
        row_adv, row_ret = gae(
            rewards[i : i + 1, :n], values[i : i + 1, :n], torch.ones(1, n), 0.9, 0.8
        )
        assert_close(adv[i, :n], row_adv[0])
        assert_close(ret[i, :n], row_ret[0])
        assert_close(adv[i, n:], [0.0] * (6 - n))
        assert_close(ret[i, n:], [0.0] * (6 - n))


def test_gae_lambda_one_gamma_one_is_return_to_go_minus_value() -> None:
    gen = torch.Generator().manual_seed(1)
    rewards = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    values = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    rtg = discounted_returns(rewards, mask, gamma=1.0)
    assert_close(adv, torch.where(mask.bool(), rtg - values, 0.0))
    assert_close(ret, rtg)


def test_gae_lambda_zero_is_one_step_td() -> None:
    rewards = t(1.0, 2.0, 3.0).unsqueeze(0)
    values = t(0.5, 0.25, 1.0).unsqueeze(0)
    adv, _ = gae(rewards, values, torch.ones(1, 3), gamma=0.5, lam=0.0)
    assert_close(adv, [[1.0 + 0.125 - 0.5, 2.0 + 0.5 - 0.25, 3.0 - 1.0]])


def test_gae_outputs_are_detached() -> None:
    values = t(0.5, 0.5).unsqueeze(0).requires_grad_()
    adv, ret = gae(t(0.0, 1.0).unsqueeze(0), values, torch.ones(1, 2))
    assert not adv.requires_grad and not ret.requires_grad


# ---------------------------------------------------------------- per-token rewards (§3)


def test_last_token_index() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0]])
    assert last_token_index(mask).tolist() == [2, 0, 0, 1]


def test_kl_penalized_rewards_hand_values() -> None:
    logp = t(-1.0, -2.0, -3.0, -1.0, -1.0, 0.0).reshape(2, 3)
    ref = t(-1.5, -2.0, -2.5, -2.0, -1.0, -9.0).reshape(2, 3)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards, kl = kl_penalized_rewards(t(1.0, -2.0), logp, ref, mask, beta=0.1)
    assert_close(kl, [[0.5, 0.0, -0.5], [1.0, 0.0, 0.0]])
    # −β·k1 on every real token, plus the score on the last real one.
    assert_close(rewards, [[-0.05, 0.0, 0.05 + 1.0], [-0.1, -2.0, 0.0]])


def test_kl_penalized_rewards_clip_and_estimator() -> None:
    logp = torch.zeros(1, 2, dtype=torch.float64)
    ref = t(0.0, math.log(0.8)).unsqueeze(0)
    rewards, kl = kl_penalized_rewards(
        t(50.0), logp, ref, torch.ones(1, 2), 1.0, "k3", score_clip=10.0
    )
    k3 = 0.8 - math.log(0.8) - 1.0
    assert_close(kl, [[0.0, k3]])
    assert_close(rewards, [[0.0, 10.0 - k3]])


def test_sequence_kl_penalized_scores() -> None:
    logp = t(-1.0, -2.0, 5.0).unsqueeze(0)
    ref = t(-1.5, -3.0, 0.0).unsqueeze(0)
    out = kl_penalized_scores(t(2.0), logp, ref, torch.tensor([[1, 1, 0]]), beta=0.05)
    assert_close(out, [2.0 - 0.05 * 1.5])


# ---------------------------------------------------------------- group estimators (§4)


def test_grpo_hand_value() -> None:
    adv = grpo_advantages(t(1.0, 0.0, 0.0, 1.0), group_size=4)
    exact = 0.5 / (math.sqrt(1.0 / 3.0) + 1e-4)  # Bessel std of [1,0,0,1] is √(1/3); ε 1e-4
    assert_close(adv, [exact, -exact, -exact, exact])
    assert_close(adv, [0.86588, -0.86588, -0.86588, 0.86588])


def test_grpo_without_std_scaling_only_centres() -> None:
    adv = grpo_advantages(t(1.0, 0.0, 0.0, 1.0, 3.0, 1.0), group_size=2, scale_by_std=False)
    assert_close(adv, [0.5, -0.5, -0.5, 0.5, 1.0, -1.0])


def test_grpo_groups_are_independent_and_equal_groups_give_zero() -> None:
    adv = grpo_advantages(t(1.0, 0.0, 0.0, 1.0, 7.0, 7.0, 7.0, 7.0), group_size=4)
    assert_close(adv[4:], [0.0] * 4)
    assert_close(adv[:4], grpo_advantages(t(1.0, 0.0, 0.0, 1.0), group_size=4))


def test_rloo_hand_value() -> None:
    assert_close(
        rloo_advantages(t(1.0, 0.0, 0.0, 1.0), group_size=4), [2 / 3, -2 / 3, -2 / 3, 2 / 3]
    )


def test_rloo_baseline_excludes_the_sample_itself() -> None:
    rewards = t(3.0, 1.0, 2.0)
    adv = rloo_advantages(rewards, group_size=3)
    assert_close(adv, [3.0 - 1.5, 1.0 - 2.5, 2.0 - 2.0])
    # Equivalent form k/(k−1)·(r − mean)
    assert_close(adv, 1.5 * (rewards - rewards.mean()))


def test_group_estimators_validate_group_size() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(t(1.0, 2.0), group_size=1)
    with pytest.raises(ValueError, match="multiple of group_size=3"):
        grpo_advantages(t(1.0, 2.0, 3.0, 4.0), group_size=3)


def test_fraction_uniform_groups() -> None:
    rewards = t(1.0, 1.0, 0.0, 1.0, 0.5, 0.5, 2.0, 2.0 + 1e-9)
    assert_close(fraction_uniform_groups(rewards, group_size=2), 0.5)
    assert_close(fraction_uniform_groups(rewards, group_size=2, atol=1e-6), 0.75)


# ---------------------------------------------------------------- REINFORCE++ and ReMax (§4)


def test_discounted_returns() -> None:
    out = discounted_returns(t(1.0, 2.0, 3.0, 4.0).unsqueeze(0), torch.tensor([[1, 1, 1, 0]]), 0.5)
    assert_close(out, [[1.0 + 0.5 * 2.0 + 0.25 * 3.0, 2.0 + 1.5, 3.0, 0.0]])


def test_reinforce_plus_plus_hand_value() -> None:
    rewards = t(0.0, 0.0, 1.0, 0.0, -1.0, 0.0).reshape(2, 3)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # returns-to-go [1, 1, 1] and [−1, −1]: mean 0.2, Bessel var (3·0.64 + 2·1.44)/4 = 1.2
    adv = reinforce_plus_plus_advantages(rewards, mask)
    std = math.sqrt(1.2 + 1e-8)
    assert_close(adv, [[0.8 / std] * 3, [-1.2 / std, -1.2 / std, 0.0]])


def test_remax_hand_value() -> None:
    assert_close(remax_advantages(t(1.0, 0.2), t(0.5, 0.7)), [0.5, -0.5])


# ---------------------------------------------------------------- adaptive KL (§3)


def test_adaptive_kl_hand_value() -> None:
    assert_close(adaptive_kl_coef(0.1, observed_kl=12.0, target_kl=6.0, k_beta=0.1), 0.102)


def test_adaptive_kl_error_is_clipped_both_ways() -> None:
    assert_close(adaptive_kl_coef(0.1, 3.0, 6.0, k_beta=0.1), 0.1 * (1 - 0.1 * 0.2))
    assert_close(adaptive_kl_coef(0.1, 6.6, 6.0, k_beta=0.1), 0.1 * (1 + 0.1 * 0.1))
    with pytest.raises(ValueError, match="target_kl"):
        adaptive_kl_coef(0.1, 1.0, 0.0)
