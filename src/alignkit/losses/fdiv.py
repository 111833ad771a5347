"""f-DPG pseudo-rewards (Go et al. 2023, "Aligning language models with preferences through
f-divergence minimization"; ALGORITHMS.md §9).

Target distribution p(y) = P(y)/Z with P = π_ref(y)·exp(r(y)/β). Minimising D_f(π‖p) has the
gradient E_π[f′(π/p)·∇ log π], i.e. a policy gradient with pseudo-reward −f′(u),
u = π·Z/P. Z = E_π[P/π] is estimated on the batch of samples from π by importance sampling;
normalising the same weights is what makes the estimate "self-normalised".

The f′ used (constants do not matter once a baseline is subtracted):

- reverse KL, f(u) = u log u: −f′(u) = −log u − 1 = r/β − log(π/π_ref) − log Z − 1, the
  KL-regularised RLHF reward;
- forward KL, f(u) = −log u: −f′(u) = 1/u = P/(π·Z), DPG's normalised importance weight;
- Jensen–Shannon, f′(u) = log(2u/(1 + u)): −f′(u) = log((1 + u)/(2u)). Like reverse KL it
  grows as −log u where π under-weights a sample (u → 0), but it is bounded below by −log 2
  where π over-weights one (u → ∞): over-represented samples are pushed down less hard.

All inputs are sequence-level ``[B]`` tensors (log-probs summed over the completion); the
returned pseudo-rewards ``[B]`` are detached and feed the usual advantage estimators.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FDPGDivergence", "fdpg_log_partition", "fdpg_pseudo_rewards"]

FDPGDivergence = Literal["reverse_kl", "forward_kl", "js"]


def fdpg_log_partition(
    logprobs: Tensor, ref_logprobs: Tensor, rewards: Tensor, beta: float
) -> Tensor:
    """log Ẑ = log (1/B) Σ_i P(y_i)/π(y_i), the importance-sampling estimate over the batch.

    Computed with logsumexp: P/π spans many orders of magnitude across samples.
    """
    log_weights = ref_logprobs + rewards / beta - logprobs
    return torch.logsumexp(log_weights, dim=-1) - math.log(log_weights.shape[-1])


def fdpg_pseudo_rewards(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    rewards: Tensor,
    beta: float,
    divergence: FDPGDivergence = "reverse_kl",
    clip: float | None = 10.0,
    subtract_baseline: bool = True,
) -> Tensor:
    """Pseudo-rewards −f′(π·Ẑ/P) for f-DPG → ``[B]``, detached.

    ``logprobs``/``ref_logprobs``: log π(y), log π_ref(y) of the sampled responses (π is the
    sampling policy); ``rewards``: r(y); ``beta``: the temperature of the target. ``clip`` clamps
    the pseudo-rewards to ±clip (an importance weight can be huge when π misses a mode of p);
    ``subtract_baseline`` then removes the batch mean, the baseline of the policy gradient.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    with torch.no_grad():
        log_z = fdpg_log_partition(logprobs, ref_logprobs, rewards, beta)
        log_target = ref_logprobs + rewards / beta  # log P, unnormalised
        log_u = logprobs - log_target + log_z  # log(π·Z/P)
        if divergence == "reverse_kl":
            pseudo = -log_u - 1.0
        elif divergence == "forward_kl":
            pseudo = torch.exp(-log_u)
        elif divergence == "js":
            # log((1 + u)/(2u)) = log(1 + 1/u) − log 2 = softplus(−log u) − log 2
            pseudo = F.softplus(-log_u) - math.log(2.0)
        else:
            raise ValueError(
                f"divergence must be 'reverse_kl', 'forward_kl' or 'js', got {divergence!r}"
            )
        if clip is not None:
            pseudo = pseudo.clamp(-clip, clip)
        if subtract_baseline:
            pseudo = pseudo - pseudo.mean(dim=-1, keepdim=True)
    return pseudo
