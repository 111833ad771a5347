"""f-DPG pseudo-rewards against ALGORITHMS.md §9."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close

from alignkit.losses.fdiv import fdpg_log_partition, fdpg_pseudo_rewards


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def batch(seed: int = 0, n: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logp = -torch.rand(n, generator=gen, dtype=torch.float64) * 5
    ref = -torch.rand(n, generator=gen, dtype=torch.float64) * 5
    rewards = torch.randn(n, generator=gen, dtype=torch.float64)
    return logp, ref, rewards


def test_reverse_kl_pseudo_reward_is_kl_regularised_reward_plus_constant() -> None:
    logp, ref, rewards = batch()
    beta = 0.5
    pseudo = fdpg_pseudo_rewards(
        logp, ref, rewards, beta, "reverse_kl", clip=None, subtract_baseline=False
    )
    rlhf_reward = rewards / beta - (logp - ref)
    offset = pseudo - rlhf_reward
    # the constant is −log Ẑ − 1, the same for every sample
    log_z = fdpg_log_partition(logp, ref, rewards, beta)
    assert_close(offset, torch.full_like(offset, float(-log_z - 1.0)))
    # with the baseline the constant becomes the batch mean
    centred = fdpg_pseudo_rewards(logp, ref, rewards, beta, "reverse_kl", clip=None)
    assert_close(centred, rlhf_reward - rlhf_reward.mean())


def test_hand_values_two_samples() -> None:
    # π = (0.5, 0.25), π_ref = (0.25, 0.25), r = 0, β = 1: P/π = (0.5, 1) → Ẑ 0.75, u = (1.5, 0.75)
    logp, ref, rewards = (
        t(math.log(0.5), math.log(0.25)),
        t(math.log(0.25), math.log(0.25)),
        t(0.0, 0.0),
    )
    assert_close(fdpg_log_partition(logp, ref, rewards, 1.0), math.log(0.75))

    def pseudo(div: str) -> torch.Tensor:
        return fdpg_pseudo_rewards(logp, ref, rewards, 1.0, div, clip=None, subtract_baseline=False)  # type: ignore[arg-type]

    assert_close(pseudo("reverse_kl"), [-math.log(1.5) - 1.0, -math.log(0.75) - 1.0])
    assert_close(pseudo("forward_kl"), [2 / 3, 4 / 3])
    assert_close(pseudo("js"), [math.log(2.5 / 3.0), math.log(1.75 / 1.5)])


def test_forward_kl_pseudo_rewards_are_self_normalised_weights() -> None:
    logp, ref, rewards = batch(1)
    pseudo = fdpg_pseudo_rewards(
        logp, ref, rewards, 0.3, "forward_kl", clip=None, subtract_baseline=False
    )
    assert_close(pseudo.mean(), 1.0)
    weights = torch.exp(ref + rewards / 0.3 - logp)
    assert_close(pseudo, weights / weights.mean())


def test_on_target_samples_get_equal_pseudo_rewards() -> None:
    # π already equals p (π ∝ π_ref·e^{r/β}): every u is 1, so no sample is preferred.
    logp, ref, rewards = batch(2)
    beta = 2.0
    on_target = ref + rewards / beta - 0.37  # any constant log-normaliser
    for div in ("reverse_kl", "forward_kl", "js"):
        pseudo = fdpg_pseudo_rewards(on_target, ref, rewards, beta, div, clip=None)  # type: ignore[arg-type]
        assert_close(pseudo, torch.zeros_like(pseudo))


def test_clipping_and_detaching() -> None:
    logp = t(-1.0, -30.0).requires_grad_()
    pseudo = fdpg_pseudo_rewards(
        logp, t(-1.0, -1.0), t(0.0, 0.0), 1.0, "reverse_kl", clip=5.0, subtract_baseline=False
    )
    assert not pseudo.requires_grad
    # P/π = (1, e^29): Ẑ = (1 + e^29)/2. Sample 0 is heavily over-weighted by π relative to p,
    # −log u_0 − 1 ≈ −29.3, clipped to −5; sample 1 keeps log(2/(1 + e^−29)) − 1.
    assert_close(pseudo, [-5.0, math.log(2.0 / (1.0 + math.exp(-29.0))) - 1.0])
    with pytest.raises(ValueError, match="divergence"):
        fdpg_pseudo_rewards(logp, logp, logp, 1.0, "tv")  # type: ignore[arg-type]
