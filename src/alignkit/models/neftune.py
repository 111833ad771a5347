"""NEFTune: uniform noise on input embeddings during training only (Jain et al. 2023).

noise ~ U(−m, m) with m = α / sqrt(L · d), L the (padded) sequence length and d the hidden size,
as in the paper and TRL. Added through a forward hook so no model code changes, and removed on
exit so evaluation, generation and the saved model never see it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def neftune(model: nn.Module, alpha: float | None) -> Iterator[None]:
    if not alpha:
        yield
        return
    emb = model.get_input_embeddings()

    def hook(
        module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        if not module.training:
            return output
        length, dim = output.shape[-2], output.shape[-1]
        mag = alpha / math.sqrt(length * dim)
        return output + torch.zeros_like(output).uniform_(-mag, mag)

    handle = emb.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
