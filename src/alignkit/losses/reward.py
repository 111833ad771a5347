"""Reward-model losses: pairwise, K-wise, Plackett–Luce, and ensembles (ALGORITHMS.md §2).

Losses return one value per batch element (shape ``[B]``) so a recipe can weight, mask or
all-reduce before taking the mean.

Rankings (K responses to one prompt) are one batch element each, as InstructGPT prescribes: the
recipe scores all responses of the batch in one forward pass (flat ``[ΣK]``), then
:func:`pad_rankings` lays them out as ``scores [B, K_max]`` best-first plus a ``mask``
``[B, K_max]``, so rankings of different sizes share one vectorised loss call. If the data
gives a ranking as indices into ``responses``, order the scores with it before padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "EnsembleMode",
    "bradley_terry_loss",
    "ensemble_rewards",
    "kwise_ranking_loss",
    "pad_rankings",
    "plackett_luce_loss",
]

EnsembleMode = Literal["mean", "min", "mean_minus_std"]


def bradley_terry_loss(
    chosen_scores: Tensor,
    rejected_scores: Tensor,
    margin: Tensor | float | None = None,
    center_coef: float = 0.0,
) -> Tensor:
    """−log σ(r_w − r_l − m) + η·(r_w + r_l)² per pair → ``[B]`` (§2).

    ``margin`` m: Llama-2's preference-strength margin (scalar or ``[B]``); 0 by default.
    ``center_coef`` η (Eisenstein et al. use 0.01): the loss only sees differences, so without it
    the scores drift; the penalty pins the pair's sum near 0 (the batch mean of the per-pair
    term is η·E[(r_w + r_l)²]). −log σ(z) is computed as softplus(−z), stable for any z.
    Example: (2, 1) → 0.31326; m 1 → 0.69315; η 0.01 adds 0.09.
    """
    diff = chosen_scores - rejected_scores
    if margin is not None:
        diff = diff - margin
    loss = F.softplus(-diff)
    if center_coef:
        loss = loss + center_coef * (chosen_scores + rejected_scores) ** 2
    return loss


def pad_rankings(
    flat_scores: Tensor, sizes: Sequence[int], pad_value: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Split ``[ΣK]`` scores into rankings of the given sizes → (``[B, K_max]``, bool mask).

    Each ranking's scores must already be best-first; its entries fill a row from the left.
    Differentiable (index copies), so gradients reach the reward model.
    """
    if sum(sizes) != flat_scores.shape[0]:
        raise ValueError(f"sizes sum to {sum(sizes)} but there are {flat_scores.shape[0]} scores")
    width = max(sizes, default=0)
    sizes_t = torch.as_tensor(list(sizes), device=flat_scores.device)
    mask = torch.arange(width, device=flat_scores.device).unsqueeze(0) < sizes_t.unsqueeze(1)
    padded = flat_scores.new_full((len(sizes), width), pad_value)
    padded = padded.masked_scatter(mask, flat_scores)
    return padded, mask


def kwise_ranking_loss(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """InstructGPT K-wise loss: −(1/C(K,2)) Σ_{i ranked above j} log σ(r_i − r_j) → ``[B]`` (§2).

    ``scores`` ``[B, K]`` best-first; ``mask`` ``[B, K]`` marks real responses (rankings may have
    different K). All C(K,2) pairs of a prompt stay in one element: shuffled into independent
    pairs, each response would be seen K−1 times per epoch and the model overfits. A row with
    fewer than two responses has no pair and gives 0. Example: [3, 2, 1] → 0.25115.
    """
    k = scores.shape[-1]
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    mask = mask.bool()
    # diff[b, i, j] = r_i − r_j; pairs i < j in best-first order mean "i preferred to j".
    diff = scores.unsqueeze(-1) - scores.unsqueeze(-2)
    upper = torch.ones(k, k, dtype=torch.bool, device=scores.device).triu(diagonal=1)
    pairs = upper & mask.unsqueeze(-1) & mask.unsqueeze(-2)
    per_pair = torch.where(pairs, F.softplus(-diff), torch.zeros_like(diff))
    num_pairs = pairs.sum(dim=(-1, -2)).to(scores.dtype)
    return per_pair.sum(dim=(-1, -2)) / num_pairs.clamp(min=1.0)


def plackett_luce_loss(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """−Σ_{k=1}^{K−1} [r_σ(k) − log Σ_{j≥k} exp r_σ(j)] → ``[B]`` (§2).

    ``scores`` ``[B, K]`` in ranked order (best first), ``mask`` as in :func:`kwise_ranking_loss`.
    The negative log-likelihood of the whole ranking under the Plackett–Luce model; K = 2 is
    Bradley–Terry. The k = K term is r − r = 0, so summing over every real position is the same
    sum. Example: [3, 2, 1] → 0.72087.
    """
    work = scores.to(torch.promote_types(scores.dtype, torch.float32))
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    mask = mask.bool()
    # Padding must vanish from every log-sum-exp: the most negative finite number underflows
    # to exactly 0 in exp(). (−inf would too, but gives NaN gradients when a suffix is all
    # padding.)
    filled = torch.where(mask, work, torch.finfo(work.dtype).min)
    suffix_lse = torch.logcumsumexp(filled.flip(-1), dim=-1).flip(-1)
    terms = torch.where(mask, filled - suffix_lse, torch.zeros_like(work))
    return (-terms.sum(dim=-1)).to(scores.dtype)


def ensemble_rewards(
    member_scores: Tensor,
    mode: EnsembleMode = "mean",
    std_coef: float = 1.0,
    dim: int = 0,
) -> Tensor:
    """Combine reward-model ensemble scores along ``dim`` (members; ``[M, B]`` by default) → ``[B]``.

    "mean"; "min" (worst-case, conservative against over-optimisation); "mean_minus_std":
    mean − λ·std (uncertainty-weighted), with the population std over the M members so that a
    single member gives std 0 rather than NaN.
    """
    if mode == "mean":
        return member_scores.mean(dim=dim)
    if mode == "min":
        return member_scores.amin(dim=dim)
    if mode == "mean_minus_std":
        mean = member_scores.mean(dim=dim)
        return mean - std_coef * member_scores.std(dim=dim, correction=0)
    raise ValueError(f"ensemble mode must be 'mean', 'min' or 'mean_minus_std', got {mode!r}")
