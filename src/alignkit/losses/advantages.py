"""Rewards and advantage estimators for the one online-RL loop (ALGORITHMS.md §3, §4).

PPO, GRPO, RLOO, REINFORCE++ and ReMax differ only here: each function turns scores (and, for
PPO, values) into advantages that :func:`alignkit.losses.policy.ppo_policy_loss` consumes.

Conventions: per-token tensors are ``[B, T]``, right-padded, with a 0/1 ``mask`` of real
completion tokens. Group estimators take a flat ``[N]`` tensor whose groups are contiguous:
entries ``[g·G, (g+1)·G)`` are the ``G = group_size`` samples of prompt ``g``. Advantages and
returns are training targets, so every function here returns tensors detached from the graph.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alignkit.losses.policy import KLEstimator, kl_estimate, masked_sum, masked_whiten

__all__ = [
    "adaptive_kl_coef",
    "discounted_returns",
    "fraction_uniform_groups",
    "gae",
    "grpo_advantages",
    "kl_penalized_rewards",
    "kl_penalized_scores",
    "last_token_index",
    "reinforce_plus_plus_advantages",
    "remax_advantages",
    "rloo_advantages",
]


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last set position of each row of a ``[B, T]`` mask → ``[B]`` (int64).

    Found from the mask rather than from token ids, which break when pad = eos. A row with no
    set position gets 0 (anything placed there is masked out downstream).
    """
    flipped = mask.flip(-1).to(torch.int64)
    return (mask.shape[-1] - 1 - flipped.argmax(dim=-1)) * flipped.amax(dim=-1)


def kl_penalized_rewards(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    beta: float,
    estimator: KLEstimator = "k1",
    score_clip: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-token rewards r_t = −β·KL_t + 1[t = last real token]·R (§3) → (rewards, kl), ``[B, T]``.

    ``scores`` ``[B]`` is the sequence reward R, placed on the last real token; ``logprobs`` are
    log π_old of the sampled tokens. ``estimator`` defaults to k1, the one that belongs in the
    reward (§4). ``score_clip`` clamps R to ±clip first (OpenRLHF uses 10). Padding is 0.
    """
    with torch.no_grad():
        if score_clip is not None:
            scores = scores.clamp(-score_clip, score_clip)
        active = mask.bool()
        kl = torch.where(active, kl_estimate(logprobs, ref_logprobs, estimator), 0.0)
        rewards = -beta * kl
        last = last_token_index(mask).unsqueeze(-1)
        rewards = rewards.scatter_add(-1, last, scores.to(rewards.dtype).unsqueeze(-1))
        rewards = torch.where(active, rewards, 0.0)
    return rewards, kl


def kl_penalized_scores(
    scores: Tensor, logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, beta: float
) -> Tensor:
    """Sequence-level penalty R − β·Σ_t (log π − log π_ref) → ``[B]`` (RLOO's reward, §4)."""
    with torch.no_grad():
        return scores - beta * masked_sum(logprobs - ref_logprobs, mask, dim=-1)


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (§3) → (advantages, returns), both ``[B, T]``.

    δ_t = r_t + γV_{t+1} − V_t, A_t = δ_t + γλA_{t+1}, G_t = A_t + V_t. The value after the last
    real token is 0 (the episode ends there). Rewards and values on padding are zeroed first,
    so a right-padded row gives exactly what the unpadded row would; padding comes back as 0.
    Example: r [0, 0, 1], V [0.5]·3, γ 1, λ 0.95 → A [0.45125, 0.475, 0.5].
    Not whitened: call :func:`alignkit.losses.policy.masked_whiten` on the advantages (never the
    returns) over the rollout batch.
    """
    with torch.no_grad():
        active = mask.bool()
        weight = mask.to(values.dtype)
        r = torch.where(active, rewards, 0.0)
        v = torch.where(active, values, 0.0)
        horizon = r.shape[-1]
        running = torch.zeros_like(v[..., 0])
        reversed_advantages = []
        for t in reversed(range(horizon)):
            next_value = v[..., t + 1] if t + 1 < horizon else torch.zeros_like(running)
            delta = r[..., t] + gamma * next_value - v[..., t]
            running = (delta + gamma * lam * running) * weight[..., t]
            reversed_advantages.append(running)
        advantages = torch.stack(reversed_advantages[::-1], dim=-1)
        returns = torch.where(active, advantages + v, 0.0)
    return advantages, returns


def discounted_returns(token_rewards: Tensor, mask: Tensor, gamma: float = 1.0) -> Tensor:
    """Return-to-go G_t = Σ_{s≥t} γ^{s−t} r_s over real tokens → ``[B, T]`` (0 on padding)."""
    with torch.no_grad():
        r = torch.where(mask.bool(), token_rewards, 0.0)
        running = torch.zeros_like(r[..., 0])
        reversed_returns = []
        for t in reversed(range(r.shape[-1])):
            running = r[..., t] + gamma * running
            reversed_returns.append(running)
        returns = torch.stack(reversed_returns[::-1], dim=-1)
        return torch.where(mask.bool(), returns, 0.0)


def reinforce_plus_plus_advantages(
    token_rewards: Tensor, mask: Tensor, gamma: float = 1.0, eps: float = 1e-8
) -> Tensor:
    """REINFORCE++ (§4): discounted return-to-go, then whitened over all real tokens → ``[B, T]``.

    ``token_rewards`` come from :func:`kl_penalized_rewards`. The normalisation is over the whole
    tensor passed in, so pass the whole (gathered) rollout batch, not a micro-batch: the batch
    statistics are REINFORCE++'s only baseline.
    """
    with torch.no_grad():
        return masked_whiten(discounted_returns(token_rewards, mask, gamma), mask, eps=eps)


def _grouped(rewards: Tensor, group_size: int, minimum: int) -> Tensor:
    if group_size < minimum:
        raise ValueError(
            f"group_size must be at least {minimum} (samples per prompt), got {group_size}; "
            "GRPO and RLOO compare samples of the same prompt, so they need two or more"
        )
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards must be a flat tensor whose length is a multiple of group_size={group_size}, "
            f"got shape {tuple(rewards.shape)}"
        )
    return rewards.detach().reshape(-1, group_size)


def grpo_advantages(
    rewards: Tensor, group_size: int, scale_by_std: bool = True, eps: float = 1e-4
) -> Tensor:
    """GRPO group normalisation Â_i = (r_i − mean_g r)/(std_g r + ε) → ``[N]`` (§4).

    std is Bessel-corrected (n − 1), as TRL computes it; ε = 1e-4 is TRL's value and keeps an
    all-equal group at exactly 0 instead of 0/0. ``scale_by_std=False`` is Dr. GRPO (centre
    only: dividing by std up-weights prompts that are nearly solved or nearly hopeless).
    Example: [1, 0, 0, 1] → ±0.5/(√(1/3) + 1e-4) = ±0.86588.
    """
    grouped = _grouped(rewards, group_size, minimum=2)
    centred = grouped - grouped.mean(dim=-1, keepdim=True)
    if scale_by_std:
        centred = centred / (grouped.std(dim=-1, keepdim=True) + eps)
    return centred.reshape(-1)


def rloo_advantages(rewards: Tensor, group_size: int) -> Tensor:
    """RLOO: A_i = r_i − (1/(k−1)) Σ_{j≠i} r_j → ``[N]`` (§4). [1, 0, 0, 1] → ±2/3.

    The leave-one-out baseline does not depend on r_i, so the estimator stays unbiased.
    """
    grouped = _grouped(rewards, group_size, minimum=2)
    others_mean = (grouped.sum(dim=-1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others_mean).reshape(-1)


def remax_advantages(sample_rewards: Tensor, greedy_rewards: Tensor) -> Tensor:
    """ReMax: A = R(sampled response) − R(greedy response of the same prompt) → ``[B]`` (§4)."""
    return (sample_rewards - greedy_rewards).detach()


def fraction_uniform_groups(rewards: Tensor, group_size: int, atol: float = 0.0) -> Tensor:
    """Share of groups whose rewards are all equal (within ``atol``): they get zero advantage
    under GRPO/RLOO and so carry no learning signal; log it (§4 pitfalls). Scalar tensor."""
    grouped = _grouped(rewards, group_size, minimum=1)
    spread = grouped.amax(dim=-1) - grouped.amin(dim=-1)
    return (spread <= atol).to(torch.float32).mean()


def adaptive_kl_coef(
    beta: float,
    observed_kl: float,
    target_kl: float,
    k_beta: float = 0.1,
    error_clip: float = 0.2,
) -> float:
    """Ziegler et al.'s adaptive KL controller, one step (§3): the new β.

    e = clip(KL/KL_target − 1, −0.2, 0.2); β ← β(1 + K_β·e). The clip bounds the change per
    step to ±K_β·20 %, so one noisy KL estimate cannot swing β. Example: β 0.1, KL 12,
    target 6, K_β 0.1 → 0.102.
    """
    if target_kl <= 0:
        raise ValueError(f"target_kl must be > 0, got {target_kl}")
    error = min(max(observed_kl / target_kl - 1.0, -error_clip), error_clip)
    return beta * (1.0 + k_beta * error)
