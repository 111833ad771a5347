"""Safe RLHF: cost-model loss, Lagrange multiplier update, combined advantage (ALGORITHMS.md §6).

Cost sign convention: a safe response should get a negative cost, an unsafe one a positive
cost, so that the constraint E[C] ≤ d with d = 0 means "on average safe".
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

__all__ = ["cost_model_loss", "lagrange_update", "safe_rlhf_advantage"]


def cost_model_loss(
    safer_costs: Tensor,
    unsafer_costs: Tensor,
    safer_is_safe: Tensor,
    unsafer_is_safe: Tensor,
    reg_coef: float = 0.001,
) -> Tensor:
    """Safe RLHF cost-model loss per pair → ``[B]``.

    L = −log σ(C(y_unsafer) − C(y_safer)) − log σ(c_safer·C(y_safer)) − log σ(c_unsafer·C(y_unsafer))
        + reg·mean(C²),
    with c = −s and s = +1 for a safe response, −1 for an unsafe one (``*_is_safe`` are bool
    ``[B]``). The pairwise term only orders costs; the sign terms anchor their zero so the
    threshold d = 0 separates safe from unsafe. The regulariser is a mean over all 2B scored
    responses, as ALGORITHMS.md writes it: each pair carries reg·(C_safer² + C_unsafer²)/2, so the
    batch mean of this loss equals reg·mean(C²). (safe-rlhf's code adds the two per-side means,
    i.e. twice this; pass reg_coef=0.002 to match it.)
    """
    safer_sign = 1.0 - 2.0 * safer_is_safe.to(safer_costs.dtype)  # c = −s: safe → −1
    unsafer_sign = 1.0 - 2.0 * unsafer_is_safe.to(unsafer_costs.dtype)
    loss = (
        F.softplus(-(unsafer_costs - safer_costs))
        + F.softplus(-safer_sign * safer_costs)
        + F.softplus(-unsafer_sign * unsafer_costs)
    )
    return loss + reg_coef * 0.5 * (safer_costs**2 + unsafer_costs**2)


def lagrange_update(
    log_lambda: float,
    mean_cost: float,
    threshold: float,
    lr: float,
    lambda_max: float | None = None,
) -> float:
    """One SGD step on log λ for loss_λ = −(Ĵ_C − d)·λ, λ = exp(log λ) → the new log λ.

    ∂loss_λ/∂log λ = −(Ĵ_C − d)·λ, so log λ ← log λ + lr·(Ĵ_C − d)·λ: λ grows while the
    windowed mean cost Ĵ_C (``mean_cost``, over the last ~128 episodes) exceeds the threshold
    d and shrinks otherwise. Working on log λ keeps λ > 0 without a projection. ``lambda_max``
    caps λ (safe-rlhf uses 5). Example: log λ 0, Ĵ_C − d 0.5, lr 0.1 → λ = e^0.05 = 1.05127.
    """
    new_log_lambda = log_lambda + lr * (mean_cost - threshold) * math.exp(log_lambda)
    if lambda_max is not None:
        if lambda_max <= 0:
            raise ValueError(f"lambda_max must be > 0, got {lambda_max}")
        new_log_lambda = min(new_log_lambda, math.log(lambda_max))
    return new_log_lambda


def safe_rlhf_advantage(
    reward_advantages: Tensor, cost_advantages: Tensor, lagrange_multiplier: float | Tensor
) -> Tensor:
    """Combined advantage (A_R − λ·A_C)/(1 + λ). Example: A_R 1, A_C 2, λ 1 → −0.5.

    Dividing by 1 + λ keeps the advantage's scale (and so the effective step size) bounded as λ
    grows; the policy then trades reward for safety instead of taking larger steps.
    """
    return (reward_advantages - lagrange_multiplier * cost_advantages) / (1.0 + lagrange_multiplier)
