"""Supervised fine-tuning loss, token-normalised over the global batch (ALGORITHMS.md §1).

L = −(1/N) Σ_t m_t log π(y_t | y_<t), where N counts the unmasked tokens of the *whole global
batch* (every micro-batch of the accumulation window, every rank). Dividing each micro-batch
by its own count and averaging would be a mean of means that over-weights micro-batches (and
sequences) with few target tokens; passing the global N makes accumulated gradients equal the
large-batch gradient exactly. The engine computes N with :func:`count_loss_tokens` summed over
micro-batches and all-reduced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from alignkit.losses.policy import masked_sum

__all__ = ["IGNORE_INDEX", "count_loss_tokens", "sft_loss", "sft_loss_from_logps"]

IGNORE_INDEX = -100


def _shifted(labels: Tensor, shift: bool) -> Tensor:
    return labels[..., 1:] if shift else labels


def count_loss_tokens(
    labels: Tensor, shift: bool = True, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Number of target tokens (labels ≠ ``ignore_index``) this micro-batch contributes to N.

    ``shift`` as in :func:`sft_loss`: the first label of a row is never a target.
    """
    return (_shifted(labels, shift) != ignore_index).sum()


def sft_loss(
    logits: Tensor,
    labels: Tensor,
    num_tokens: Tensor | float | None = None,
    shift: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Token-normalised cross-entropy: Σ CE over target tokens / ``num_tokens`` → scalar.

    ``logits`` ``[B, T, V]``; ``labels`` ``[B, T]`` with ``ignore_index`` (−100) on prompt,
    padding and packing-boundary positions. With ``shift=True`` labels are aligned with the
    input ids (Hugging Face convention) and position t's logits predict label t + 1; pass
    ``shift=False`` for labels already aligned with the logits. ``num_tokens`` is the global N;
    ``None`` uses this batch's own count (right without accumulation or data parallelism).
    Logits are upcast to float32: a bf16 log-softmax over a large vocabulary loses digits.
    """
    if shift:
        logits = logits[..., :-1, :]
    targets = _shifted(labels, shift)
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=ignore_index,
        reduction="sum",
    )
    if num_tokens is None:
        num_tokens = (targets != ignore_index).sum()
    # An all-masked batch contributes 0, not 0/0.
    return total / torch.as_tensor(num_tokens, dtype=total.dtype, device=total.device).clamp(
        min=1.0
    )


def sft_loss_from_logps(
    token_logps: Tensor, mask: Tensor, num_tokens: Tensor | float | None = None
) -> Tensor:
    """−Σ m_t log π(y_t) / ``num_tokens`` from per-token log-probs ``[B, T]`` and a 0/1 mask.

    For callers that already gathered log-probs (e.g. ORPO/CPO's NLL on chosen responses).
    ``num_tokens`` as in :func:`sft_loss`; ``None`` uses ``mask.sum()``.
    """
    total = -masked_sum(token_logps, mask)
    if num_tokens is None:
        num_tokens = mask.sum()
    return total / torch.as_tensor(num_tokens, dtype=total.dtype, device=total.device).clamp(
        min=1.0
    )
