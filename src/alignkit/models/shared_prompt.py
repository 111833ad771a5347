"""Choosing the layout of group batches: a shared prompt where the model can take it.

A reward model or a direct-preference loss reads K responses to one prompt. In the padded
layout the prompt goes through the model K times and every row is padded to the longest; in
the shared-prompt layout (``alignkit.data.pairs.collate_shared_prompt``) the prompt runs
once, its responses follow it in the same row under a block mask, and rows are packed. Same
numbers, fewer token-positions: on instruction-style data (prompts about as long as answers)
a pair costs roughly 3 instead of 4 sequence-lengths, before the padding saved.

It needs an attention implementation that takes a custom 4D mask (SDPA or eager; not
flash-attention) and a model whose mask code honours it (every transformers model built on
``masking_utils``). Rather than trust a list, :func:`group_collator` checks the model on two
real groups once, both layouts side by side, and falls back to padded rows — saying why —
when they disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

import torch
from torch import nn

from alignkit.data.pairs import Group, GroupBatch, collate_groups, collate_shared_prompt
from alignkit.models.heads import group_scores
from alignkit.models.logprobs import attention_implementation
from alignkit.models.reference import sequence_logps

Collate = Callable[[Sequence[Group]], GroupBatch]
What = Literal["logps", "scores"]


def _outputs(model: nn.Module, gb: GroupBatch, what: What) -> torch.Tensor:
    if what == "scores":
        return group_scores(model, gb).float()
    summed, lengths = sequence_logps(model, gb)
    return (summed / lengths.clamp_min(1.0)).float().reshape(-1)  # per-token means


def shared_prompt_problem(
    model: nn.Module, groups: Sequence[Group], pad_id: int, max_length: int, what: What
) -> str | None:
    """None when the shared-prompt layout reproduces the padded one on ``groups`` (in eval
    mode, no gradients), else the reason it cannot be used with this model."""
    impl = attention_implementation(model)
    if impl not in ("sdpa", "eager"):
        return f"attention implementation {impl!r} takes no custom 4D mask"
    param = next(model.parameters())
    device = param.device
    tol = 1e-4 if param.dtype == torch.float32 else 3e-2
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            padded = _outputs(model, collate_groups(groups, pad_id).to(device), what)
            shared = _outputs(
                model, collate_shared_prompt(groups, pad_id, max_length).to(device), what
            )
    except Exception as exc:  # a model whose forward rejects the 4D mask or position ids
        return f"the model's forward rejected it ({type(exc).__name__}: {exc})"
    finally:
        model.train(was_training)
    gap = float((padded - shared).abs().max())
    if not gap <= tol * (1.0 + float(padded.abs().max())):
        return f"it disagrees with padded rows by {gap:.3g} on the first groups"
    return None


def group_collator(
    model: nn.Module,
    groups: Sequence[Group],
    pad_id: int,
    max_length: int,
    enabled: bool,
    what: What,
    log: Callable[[str], None] = print,
) -> Collate:
    """``collate_shared_prompt`` when ``enabled`` and the model passes the check on the first
    two groups, else ``collate_groups`` (padded), with the reason logged once."""
    if not enabled or not groups:
        return partial(collate_groups, pad_id=pad_id)
    problem = shared_prompt_problem(model, list(groups[:2]), pad_id, max_length, what)
    if problem is not None:
        log(f"[data] shared_prompt: using padded rows instead: {problem}")
        return partial(collate_groups, pad_id=pad_id)
    return partial(collate_shared_prompt, pad_id=pad_id, max_length=max_length)
