"""Decoding-time maths: the CBF safety filter's projection and best-of-N's KL bound
(ALGORITHMS.md §7, §10).

CBF-LLM (Miyaoka & Inoue 2024): with a safety function h (safe set {h ≥ 0}), a candidate next
token t is allowed iff h(x ⊕ t) ≥ (1 − α)·h(x), the discrete-time control-barrier condition:
h may decrease by at most a fraction α per step, so it can approach the boundary but never
cross it from inside. The filtered distribution is the KL(Q‖P)-minimising projection of P
onto the allowed set, i.e. P renormalised there. Evaluating h (a model call per candidate)
lives in ``alignkit.decoding``; here is only the arithmetic on its results.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["CBFProjection", "best_of_n_kl_bound", "cbf_allowed", "cbf_project", "cbf_threshold"]


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"CBF alpha must be in (0, 1], got {alpha} (1 is a plain blacklist)")


def cbf_threshold(h_current: Tensor | float, alpha: float) -> Tensor | float:
    """(1 − α)·h(x), the least h(x ⊕ t) an allowed token may reach. h 0.4, α 0.3 → 0.28.

    α = 1 gives exactly 0 (not 0·h, which would be NaN for an infinite h).
    """
    _check_alpha(alpha)
    if alpha == 1.0:
        return torch.zeros_like(h_current) if isinstance(h_current, Tensor) else 0.0
    return (1.0 - alpha) * h_current


def cbf_allowed(h_next: Tensor, h_current: Tensor | float, alpha: float) -> Tensor:
    """Bool mask of allowed candidates: h(x ⊕ t) ≥ (1 − α)·h(x).

    ``h_next`` ``[..., K]`` holds h of each candidate continuation; ``h_current`` is a float or
    a ``[...]`` tensor (one h(x) per sequence), broadcast over the K candidates. α = 1 is the
    blacklist h(x ⊕ t) ≥ 0.
    """
    threshold = cbf_threshold(h_current, alpha)
    if isinstance(threshold, Tensor):
        threshold = threshold.unsqueeze(-1)
    return h_next >= threshold


class CBFProjection(NamedTuple):
    """``probs``: Q ``[..., K]``, P renormalised on the allowed set (all 0 where nothing passes);
    ``nothing_allowed``: bool ``[...]``, rows that need the fallback (refusal or stop);
    ``allowed_mass``: Σ P over the allowed set ``[...]``; KL(Q‖P) = −log(allowed_mass)."""

    probs: Tensor
    nothing_allowed: Tensor
    allowed_mass: Tensor


def cbf_project(probs: Tensor, allowed: Tensor) -> CBFProjection:
    """Q ∝ P on the allowed set (the KL(Q‖P)-minimising projection), over the last dim.

    P [0.5, 0.3, 0.2], allowed [T, F, T] → Q [0.5/0.7, 0, 0.2/0.7]. When no candidate with
    positive probability is allowed there is nothing to renormalise: Q is all zeros (sampling
    from it fails loudly rather than emit an unsafe token) and ``nothing_allowed`` is set; the
    caller applies its fallback. No division by zero happens in any case.
    """
    kept = torch.where(allowed.bool(), probs, torch.zeros_like(probs))
    mass = kept.sum(dim=-1)
    nothing_allowed = mass <= 0
    safe_mass = torch.where(nothing_allowed, torch.ones_like(mass), mass)
    q = kept / safe_mass.unsqueeze(-1)
    return CBFProjection(q, nothing_allowed, mass)


def best_of_n_kl_bound(n: int) -> float:
    """KL(best-of-N ‖ base) ≤ log N − (N − 1)/N (§10). N 4 → 0.63629, N 16 → 1.83509."""
    if n < 1:
        raise ValueError(f"best-of-N needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n
