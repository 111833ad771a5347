"""PPO losses, token aggregation, masked statistics and KL estimators (ALGORITHMS.md §3, §4)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close

from alignkit.losses.policy import (
    TokenAggregation,
    aggregate_tokens,
    aggregation_normalizer,
    clipped_value_loss,
    kl_estimate,
    kl_k1,
    kl_k2,
    kl_k3,
    masked_mean,
    masked_var,
    masked_whiten,
    ppo_policy_loss,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def logs(*probs: float) -> torch.Tensor:
    return torch.tensor([math.log(p) for p in probs], dtype=torch.float64)


# ---------------------------------------------------------------- KL estimators (§4)


# ALGORITHMS.md quotes 0.023144 and 0.22314: rounded values. Compare with the exact expression
# at full tolerance, and check the quoted digits by rounding.


def test_k3_hand_value() -> None:
    k3 = kl_k3(logs(0.5), logs(0.4))
    assert_close(k3, [0.8 - math.log(0.8) - 1.0])
    assert round(float(k3), 6) == 0.023144


def test_k1_hand_value() -> None:
    k1 = kl_k1(logs(0.5), logs(0.4))
    assert_close(k1, [math.log(1.25)])
    assert round(float(k1), 5) == 0.22314


def test_k2_hand_value() -> None:
    assert_close(kl_k2(logs(0.5), logs(0.4)), [0.5 * math.log(1.25) ** 2])


def test_k3_is_nonnegative_and_accurate_for_tiny_differences() -> None:
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(1000, generator=gen, dtype=torch.float64)
    ref = logp + torch.randn(1000, generator=gen, dtype=torch.float64)
    assert bool((kl_k3(logp, ref) >= 0).all())
    # d = 1e-6: k3 = d²/2 + d³/6 + … ≈ 5e-13. In float64 expm1(d) − d is exact to 1e-5.
    d = 1e-6
    tiny = kl_k3(torch.zeros(1, dtype=torch.float64), torch.full((1,), d, dtype=torch.float64))
    assert_close(tiny, [d**2 / 2 + d**3 / 6], atol=0.0)
    # In float32 the error stays at the resolution of d itself (~1e-13); exp(d) − 1 − d would be
    # off by float32's resolution of 1 (~6e-8), five orders of magnitude more than k3.
    tiny32 = kl_k3(torch.zeros(1), torch.full((1,), d))
    assert abs(float(tiny32) - d**2 / 2) < 2e-13


def test_kl_estimate_dispatch_and_unbiasedness() -> None:
    # Under samples from π, E[k1] = E[k3] = KL(π‖π_ref) exactly for a finite distribution.
    pi = t(0.5, 0.3, 0.2)
    ref = t(0.4, 0.4, 0.2)
    exact = float((pi * (pi / ref).log()).sum())
    for name in ("k1", "k3"):
        per_outcome = kl_estimate(pi.log(), ref.log(), name)  # type: ignore[arg-type]
        assert_close((pi * per_outcome).sum(), exact)
    with pytest.raises(ValueError, match="k1"):
        kl_estimate(pi.log(), ref.log(), "k4")  # type: ignore[arg-type]


# ---------------------------------------------------------------- masked statistics


MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])
VALUES = t(1.0, 2.0, float("-inf"), 4.0, float("nan"), 7.0).reshape(2, 3)


def test_masked_mean_ignores_padding_even_if_not_finite() -> None:
    assert_close(masked_mean(VALUES, MASK), 7.0 / 3.0)
    assert_close(masked_mean(VALUES, MASK, dim=-1), [1.5, 4.0])
    assert_close(masked_mean(VALUES, torch.zeros_like(MASK)), 0.0)


def test_masked_var_is_bessel_corrected() -> None:
    # values 1, 2, 4: mean 7/3, Σ(x − m)² = 42/9, unbiased var = 7/3
    assert_close(masked_var(VALUES, MASK), 7.0 / 3.0)
    assert_close(masked_var(VALUES, MASK, unbiased=False), 14.0 / 9.0)
    assert_close(masked_var(t(5.0), torch.ones(1)), 0.0)


def test_masked_whiten() -> None:
    out = masked_whiten(VALUES, MASK)
    std = math.sqrt(7.0 / 3.0 + 1e-8)
    expected = [[(1 - 7 / 3) / std, (2 - 7 / 3) / std, 0.0], [(4 - 7 / 3) / std, 0.0, 0.0]]
    assert_close(out, expected)
    assert_close(masked_mean(out, MASK), 0.0)
    kept_mean = masked_whiten(VALUES, MASK, shift_mean=False)
    assert_close(kept_mean[0, 0], (1 - 7 / 3) / std + 7 / 3)


# ---------------------------------------------------------------- aggregation


PER_TOKEN = t(1.0, 3.0, 0.0, 0.0, 6.0, 99.0).reshape(2, 3)
AGG_MASK = torch.tensor([[1, 1, 0], [0, 1, 0]])  # 2 + 1 active tokens


def test_token_aggregation_is_global_token_mean() -> None:
    assert_close(aggregate_tokens(PER_TOKEN, AGG_MASK, "token"), 10.0 / 3.0)


def test_sequence_aggregation_is_mean_of_sequence_means() -> None:
    assert_close(aggregate_tokens(PER_TOKEN, AGG_MASK, "sequence"), (2.0 + 6.0) / 2.0)


def test_dr_grpo_aggregation_uses_constant_normaliser() -> None:
    assert_close(aggregate_tokens(PER_TOKEN, AGG_MASK, "dr_grpo"), 10.0 / 6.0)
    assert_close(aggregate_tokens(PER_TOKEN, AGG_MASK, "dr_grpo", max_length=5), 10.0 / 10.0)


@pytest.mark.parametrize("mode", list(TokenAggregation))
def test_accumulated_micro_batches_equal_the_full_batch(mode: TokenAggregation) -> None:
    gen = torch.Generator().manual_seed(3)
    values = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([5, 1, 3, 2, 4, 1])
    mask = torch.arange(5).unsqueeze(0) < lengths.unsqueeze(1)
    full = aggregate_tokens(values, mask, mode, max_length=7)
    parts = [(values[:2], mask[:2]), (values[2:], mask[2:])]
    normalizer = sum(aggregation_normalizer(m, mode, max_length=7) for _, m in parts)
    accumulated = sum(aggregate_tokens(v, m, mode, normalizer) for v, m in parts)
    assert_close(accumulated, full)
    if mode is TokenAggregation.TOKEN:
        # The naive mean of per-micro-batch means is not the same thing: that is the bug avoided.
        naive = sum(aggregate_tokens(v, m, mode) for v, m in parts) / 2
        assert abs(float(naive) - float(full)) > 1e-3


# ---------------------------------------------------------------- PPO policy loss (§3)


def test_ppo_ratio_one_gives_minus_advantage() -> None:
    logp = t(-1.0, -2.0, -0.5).reshape(1, 3)
    adv = t(0.5, -1.0, 2.0).reshape(1, 3)
    out = ppo_policy_loss(logp, logp.clone(), adv, torch.ones(1, 3))
    assert_close(out.per_token, -adv)
    assert_close(out.clip_fraction, 0.0)
    assert_close(out.approx_kl, 0.0)
    assert_close(out.ratio_mean, 1.0)


def test_ppo_clipping_hand_values() -> None:
    # ρ = 1.5 on every token; A = +1 → clipped at 1.2; A = −1 → unclipped (pessimistic max).
    old = t(0.0, 0.0, 0.0).reshape(1, 3).log1p() - 1.0
    new = old + math.log(1.5)
    adv = t(1.0, -1.0, 1.0).reshape(1, 3)
    mask = torch.tensor([[1, 1, 0]])
    out = ppo_policy_loss(new, old, adv, mask, clip_eps=0.2)
    assert_close(out.per_token, [[-1.2, 1.5, 0.0]])
    assert_close(out.clip_fraction, 0.5)
    assert_close(out.approx_kl, 0.5 - math.log(1.5))


def test_ppo_clip_higher_widens_the_upper_bound() -> None:
    old = torch.zeros(1, 1, dtype=torch.float64)
    new = old + math.log(1.5)
    out = ppo_policy_loss(new, old, t(1.0).reshape(1, 1), torch.ones(1, 1), 0.2, clip_eps_high=0.28)
    assert_close(out.per_token, [[-1.28]])


def test_ppo_clipped_tokens_have_no_gradient_and_others_do() -> None:
    old = torch.zeros(1, 2, dtype=torch.float64)
    new = (old + t(math.log(1.5), math.log(1.1))).requires_grad_()
    out = ppo_policy_loss(new, old, t(1.0, 1.0).reshape(1, 2), torch.ones(1, 2))
    out.per_token.sum().backward()
    assert new.grad is not None
    assert_close(new.grad, [[0.0, -1.1]])  # d(−ρA)/dlogπ = −ρA


def test_ppo_padding_with_infinite_logprobs_gives_zero_finite_gradients() -> None:
    logp = t(-1.0, float("-inf")).reshape(1, 2).requires_grad_()
    old = t(-1.1, float("-inf")).reshape(1, 2)  # ρ = e^0.1, inside the clip range
    adv = t(1.0, float("nan")).reshape(1, 2)
    out = ppo_policy_loss(logp, old, adv, torch.tensor([[1, 0]]))
    out.per_token.sum().backward()
    assert logp.grad is not None
    assert_close(out.per_token, [[-math.exp(0.1), 0.0]])
    assert_close(logp.grad, [[-math.exp(0.1), 0.0]])


def test_ppo_sequence_advantages_broadcast_over_tokens() -> None:
    logp = torch.zeros(2, 3, dtype=torch.float64)
    out = ppo_policy_loss(logp, logp, t(1.0, -2.0), torch.ones(2, 3))
    assert_close(out.per_token, [[-1.0] * 3, [2.0] * 3])


# ---------------------------------------------------------------- value loss (§3)


def test_clipped_value_loss_hand_values() -> None:
    values = t(1.0, 0.6, 0.0).reshape(1, 3)
    old = t(0.5, 0.5, 0.0).reshape(1, 3)
    returns = t(2.0, 0.0, 5.0).reshape(1, 3)
    mask = torch.tensor([[1, 1, 0]])
    out = clipped_value_loss(values, old, returns, mask, clip_eps=0.2)
    # token 0: max(1, (0.7 − 2)² = 1.69)/2; token 1: within the clip range, 0.36/2
    assert_close(out.per_token, [[0.845, 0.18, 0.0]])
    assert_close(out.clip_fraction, 0.5)


def test_value_loss_never_exceeds_pessimism_gradient_check() -> None:
    # Clipped branch wins → no gradient to V (V is pulled only through the clip bound).
    values = t(1.0).reshape(1, 1).requires_grad_()
    out = clipped_value_loss(values, t(0.5).reshape(1, 1), t(2.0).reshape(1, 1), torch.ones(1, 1))
    out.per_token.sum().backward()
    assert values.grad is not None
    assert_close(values.grad, [[0.0]])
