"""Length-bias control for reward models: the decorrelation term of disentangled rewards.

Annotators prefer longer answers for their length alone, and a reward model trained on their
labels learns that preference; a policy optimised against it then grows verbose (the most
common form of reward hacking). ODIN (Chen et al. 2024) trains the reward beside a length
term and penalises the correlation between the reward and response length, so the labels'
length preference goes to the length term and not to the reward. alignkit penalises the
squared least-squares *slope* instead of |corr|: |corr| is scale-free, and its gradient on a
fresh head with scores near 0 is large enough to stop the reward from learning anything
(measured on the sandbox: held-out accuracy fell to chance).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["length_slope", "pearson_correlation"]


def pearson_correlation(x: Tensor, y: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of two 1-D tensors, differentiable; 0 when either is constant.

    Example: x = [1, 2, 3], y = [1, 2, 4] → 3 / √(2 · 14/3) = 0.98198.
    """
    if x.shape != y.shape or x.dim() != 1:
        raise ValueError(
            f"expected two 1-D tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    xc = x - x.mean()
    yc = y - y.mean()
    denom = torch.sqrt((xc * xc).sum() * (yc * yc).sum())
    return (xc * yc).sum() / (denom + eps)


def length_slope(scores: Tensor, log_lengths: Tensor, eps: float = 1e-8) -> Tensor:
    """Least-squares slope of scores on log length, cov(r, ℓ)/var(ℓ), differentiable.

    The reward's linear dependence on length in reward units per unit of log length. As a
    penalty (slope²) it is scale-aware: unlike |corr|, whose gradient grows as the scores'
    spread shrinks, it does not stop a fresh reward head (scores near 0) from learning.
    Example: r = [1, 2, 4], ℓ = [1, 2, 3] → 1.5.
    """
    if scores.shape != log_lengths.shape or scores.dim() != 1:
        raise ValueError(
            f"expected two 1-D tensors of one shape, got {tuple(scores.shape)}, {tuple(log_lengths.shape)}"
        )
    lc = log_lengths - log_lengths.mean()
    return ((scores - scores.mean()) * lc).sum() / ((lc * lc).sum() + eps)
