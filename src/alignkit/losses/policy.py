"""Policy-gradient losses, token aggregation, masked statistics and KL estimators (ALGORITHMS.md §3, §4).

Shapes: ``B`` sequences, ``T`` completion positions (right-padded). Every per-token tensor is
``[B, T]`` and comes with a 0/1 (or bool) ``mask`` of the same shape marking real completion
tokens. Functions return per-token values where a recipe still has to add terms (a KL penalty,
an entropy bonus) before reducing; :func:`aggregate_tokens` does the one reduction.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "KLEstimator",
    "PolicyLossOutput",
    "TokenAggregation",
    "ValueLossOutput",
    "aggregate_tokens",
    "aggregation_normalizer",
    "clipped_value_loss",
    "kl_estimate",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "ppo_policy_loss",
]

KLEstimator = Literal["k1", "k2", "k3"]


# --------------------------------------------------------------------------- masked statistics


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ values over positions where ``mask`` is set (all positions, or along ``dim``).

    ``torch.where`` instead of ``values * mask``: padded positions may hold ``-inf`` log-probs,
    and ``-inf * 0`` is NaN.
    """
    zeroed = torch.where(mask.bool(), values, torch.zeros_like(values))
    return zeroed.sum() if dim is None else zeroed.sum(dim=dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ m·x / Σ m; an empty mask (or empty row along ``dim``) gives 0, never NaN."""
    count = mask.to(values.dtype).sum() if dim is None else mask.to(values.dtype).sum(dim=dim)
    # The mask is 0/1, so a count below 1 means "no tokens": clamping only changes 0/0.
    return masked_sum(values, mask, dim) / count.clamp(min=1.0)


def masked_var(values: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of the masked entries (scalar). Bessel-corrected by default, as TRL/OpenRLHF do.

    With fewer than two active entries the Bessel factor n/(n−1) is undefined; the biased
    variance (0 for one entry) is returned instead of inf.
    """
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.to(values.dtype).sum()
        # torch.where rather than an `if`: no host-device sync on every call.
        bessel = torch.where(count > 1, count / (count - 1).clamp(min=1.0), torch.ones_like(count))
        var = var * bessel
    return var


def masked_whiten(
    values: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> Tensor:
    """(x − mean)/sqrt(var + eps) with masked statistics; masked positions are returned as 0.

    Used to whiten PPO advantages over the rollout batch (§3; never the returns, whose scale the
    critic must learn). ``shift_mean=False`` rescales without centring (the mean is added back).
    """
    mean = masked_mean(values, mask)
    var = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))


# --------------------------------------------------------------------------- token aggregation


class TokenAggregation(str, Enum):
    """How per-token losses become one scalar (§4). The normaliser is global (see below).

    - ``TOKEN`` (DAPO): Σ_{i,t} m·ℓ / (active tokens in the global batch). Every token weighs the
      same, so long answers are not down-weighted.
    - ``SEQUENCE`` (original GRPO): mean over sequences of each sequence's token mean. Length
      biased: a token of a short answer weighs more than one of a long answer.
    - ``DR_GRPO`` (Dr. GRPO): Σ_{i,t} m·ℓ / (sequences × max completion length), a constant
      normaliser that neither depends on lengths nor on how many tokens were active.
    """

    TOKEN = "token"
    SEQUENCE = "sequence"
    DR_GRPO = "dr_grpo"


def aggregation_normalizer(
    mask: Tensor,
    mode: TokenAggregation | str,
    max_length: int | None = None,
) -> Tensor:
    """This micro-batch's share of the global normaliser for :func:`aggregate_tokens`.

    TOKEN: active tokens; SEQUENCE: number of sequences; DR_GRPO: sequences × ``max_length``
    (the generation budget; defaults to the padded width ``T``). The engine sums these over the
    accumulation window and all ranks, then passes the total to every micro-batch, so that
    accumulated gradients equal one large-batch gradient exactly.
    """
    mode = TokenAggregation(mode)
    if mode is TokenAggregation.TOKEN:
        return mask.to(torch.float32).sum()
    num_sequences = torch.tensor(float(mask.shape[0]), device=mask.device)
    if mode is TokenAggregation.SEQUENCE:
        return num_sequences
    width = mask.shape[-1] if max_length is None else max_length
    return num_sequences * float(width)


def aggregate_tokens(
    per_token: Tensor,
    mask: Tensor,
    mode: TokenAggregation | str = TokenAggregation.TOKEN,
    normalizer: Tensor | float | None = None,
    max_length: int | None = None,
) -> Tensor:
    """Reduce a ``[B, T]`` per-token loss to a scalar by ``mode`` (see :class:`TokenAggregation`).

    ``normalizer`` is the global total of :func:`aggregation_normalizer` (active tokens,
    sequences, or sequences × max length); ``None`` uses this micro-batch's own value, which is
    right only without gradient accumulation or data parallelism.
    """
    mode = TokenAggregation(mode)
    if normalizer is None:
        normalizer = aggregation_normalizer(mask, mode, max_length)
    if mode is TokenAggregation.SEQUENCE:
        per_sequence = masked_mean(per_token, mask, dim=-1)
        return per_sequence.sum() / normalizer
    return masked_sum(per_token, mask) / normalizer


# --------------------------------------------------------------------------- PPO losses


class PolicyLossOutput(NamedTuple):
    """``per_token``: [B, T] clipped-surrogate loss (0 on padding); the rest are detached scalars."""

    per_token: Tensor
    clip_fraction: Tensor
    approx_kl: Tensor
    ratio_mean: Tensor


def ppo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
) -> PolicyLossOutput:
    """PPO clipped surrogate, per token: −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)·A) (§3).

    ρ = exp(log π_new − log π_old). ``advantages`` is ``[B, T]`` or ``[B]`` (one value per
    sequence, broadcast over its tokens as GRPO/RLOO do). ``clip_eps_high`` > ``clip_eps`` is
    DAPO's clip-higher; ``None`` means symmetric clipping.

    Metrics (masked means over this micro-batch): ``clip_fraction`` is the share of tokens whose
    clipped branch is active (their gradient is zero); ``approx_kl`` is the k3 estimate of
    KL(π_old‖π_new) = E[(ρ − 1) − log ρ], non-negative by construction.
    """
    high = clip_eps if clip_eps_high is None else clip_eps_high
    if advantages.dim() == logprobs.dim() - 1:
        advantages = advantages.unsqueeze(-1)
    active = mask.bool()
    # Zero the log-ratio (ρ = 1) and the advantage on padding *before* exp: a padded −inf
    # log-prob would make ρ NaN there, and even a masked-out NaN turns into a NaN gradient
    # (0 · NaN) on the way back through exp.
    log_ratio = torch.where(active, logprobs - old_logprobs, torch.zeros_like(logprobs))
    advantages = torch.where(active, advantages, torch.zeros_like(log_ratio))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high)
    per_token = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).to(per_token.dtype), mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
        ratio_mean = masked_mean(ratio, mask)
    return PolicyLossOutput(per_token, clip_fraction, approx_kl, ratio_mean)


class ValueLossOutput(NamedTuple):
    """``per_token``: [B, T] clipped value loss (0 on padding); ``clip_fraction`` detached scalar."""

    per_token: Tensor
    clip_fraction: Tensor


def clipped_value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
) -> ValueLossOutput:
    """½·max((V − G)², (clip(V, V_old − ε_v, V_old + ε_v) − G)²) per token (§3).

    The max (not the clipped term alone) keeps the update pessimistic: clipping may only remove
    gradient, never add it. ``clip_fraction``: share of tokens where the clipped term wins.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    unclipped_sq = (values - returns) ** 2
    clipped_sq = (clipped_values - returns) ** 2
    per_token = 0.5 * torch.maximum(unclipped_sq, clipped_sq)
    per_token = torch.where(mask.bool(), per_token, torch.zeros_like(per_token))
    with torch.no_grad():
        clip_fraction = masked_mean((clipped_sq > unclipped_sq).to(per_token.dtype), mask)
    return ValueLossOutput(per_token, clip_fraction)


# --------------------------------------------------------------------------- KL estimators
# Schulman's estimators of KL(π‖π_ref) from samples of π, per token, in terms of log-probs.
# k1 is unbiased but can be negative (it belongs in the reward, §4); k3 is unbiased and
# non-negative with low variance (it belongs in the loss, as GRPO uses it).


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k1 = log π − log π_ref = log(π/π_ref). Example: π 0.5, π_ref 0.4 → 0.22314."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k2 = ½ (log π − log π_ref)² (biased, low variance; its gradient is the k1 score function)."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 = π_ref/π − log(π_ref/π) − 1. Example: π 0.5, π_ref 0.4 → 0.023144.

    Written as expm1(d) − d with d = log π_ref − log π: for π ≈ π_ref both terms are tiny and
    exp(d) − 1 would lose every significant digit to cancellation.
    """
    d = ref_logprobs - logprobs
    return torch.expm1(d) - d


_KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator = "k1") -> Tensor:
    """Per-token KL(π‖π_ref) estimate by name ("k1", "k2" or "k3"); same shape as the inputs."""
    try:
        fn = _KL_ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(
            f"kl estimator must be one of {sorted(_KL_ESTIMATORS)}, got {estimator!r}"
        ) from None
    return fn(logprobs, ref_logprobs)
