"""Per-token log-probabilities: the one place where logits become log π(y_t | y_<t).

Every recipe (SFT loss, DPO, reward-free methods, PPO ratios, evaluation likelihoods) gathers
log-probs here, so a parity test against the plain Hugging Face forward covers all of them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from alignkit.data.pairs import SharedPromptRows
from alignkit.data.tokenize import IGNORE_INDEX


def gather_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted per-token log-probs of ``labels`` under ``logits``.

    Args:
        logits: [B, T, V] model outputs (any float dtype; computed in float32).
        labels: [B, T] token ids aligned with the inputs; ``-100`` = no target.
        temperature: sampling temperature the tokens were drawn with (PPO needs the same
            temperature at training time, else the ratio is not 1 at the first step).

    Returns:
        (logp, mask), both [B, T-1]: ``logp[:, t]`` = log π(labels[t+1] | inputs[:t+1]),
        zero where masked; ``mask`` is 1.0 where a target exists.
    """
    logits = logits[:, :-1, :].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    safe_targets = targets.masked_fill(~mask, 0)
    # log_softmax then gather, without materialising a second [B,T,V] tensor for the gather.
    picked = logits.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    logp = picked - torch.logsumexp(logits, dim=-1)
    return logp * mask, mask.to(logp.dtype)


def sequence_logprobs(
    logp: torch.Tensor, mask: torch.Tensor, reduction: str = "sum"
) -> torch.Tensor:
    """Reduce per-token log-probs to one number per row: ``sum`` or ``mean`` over targets."""
    total = (logp * mask).sum(-1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / mask.sum(-1).clamp_min(1.0)
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution at every position, [B, T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def forward_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model and gather per-token log-probs (see :func:`gather_logprobs`)."""
    kwargs = {"input_ids": input_ids, "use_cache": False}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    logits = model(**kwargs).logits
    return gather_logprobs(logits, labels, temperature)


@torch.no_grad()
def completion_logprobs(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    pad_id: int,
    batch_size: int = 32,
    temperature: float = 1.0,
) -> list[float]:
    """Summed log π(completion | prompt) for each pair, batched, without gradients.

    Used for KL estimates between a policy and its reference, and for likelihood evaluation.
    """
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(prompt_ids), batch_size):
        ps = prompt_ids[start : start + batch_size]
        cs = completion_ids[start : start + batch_size]
        width = max(len(p) + len(c) for p, c in zip(ps, cs, strict=True))
        ids = torch.full((len(ps), width), pad_id, dtype=torch.long)
        labels = torch.full((len(ps), width), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((len(ps), width), dtype=torch.long)
        for i, (p, c) in enumerate(zip(ps, cs, strict=True)):
            row = torch.tensor(p + c, dtype=torch.long)
            ids[i, : len(row)] = row
            labels[i, len(p) : len(row)] = row[len(p) :]
            attn[i, : len(row)] = 1
        logp, mask = forward_logprobs(
            model, ids.to(device), labels.to(device), attn.to(device), temperature=temperature
        )
        out.extend((logp * mask).sum(-1).tolist())
    return out


def output_head(model: torch.nn.Module) -> torch.nn.Module | None:
    """The LM head (``get_output_embeddings()``) through DDP / DeepSpeed / peft wrappers."""
    m: Any = model
    for _ in range(3):  # a wrapper of a wrapper at most (DDP around peft)
        get = getattr(m, "get_output_embeddings", None)
        if callable(get):
            head = get()
            return head if isinstance(head, torch.nn.Module) else None
        if not hasattr(m, "module"):
            return None
        m = m.module
    return None


def target_logprobs(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    labels: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``forward_logprobs`` with the LM head applied only where a target exists.

    Same result as ``gather_logprobs(model(**inputs).logits, labels)`` (``[B, T-1]`` log-probs,
    zero where masked, and the mask), but the ``[B, T, V]`` logits are never built: a forward
    pre-hook on the output embeddings keeps only the hidden states of positions whose next
    label is a target, so the head produces ``[n_targets, V]``. Why: prompt tokens, padding and
    packing boundaries carry no loss, yet their logits (and the float32 log-softmax and its
    gradient) cost a third to a half of a small model's step and most of its activation
    memory. The hook lives inside the wrapped model's forward, so DDP / FSDP hooks still run.
    Models without ``get_output_embeddings`` fall back to the full forward.
    """
    head = output_head(model)
    if head is None:
        return gather_logprobs(model(**inputs).logits, labels, temperature)
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    width = labels.shape[1]
    rows, cols = mask.nonzero(as_tuple=True)
    flat = rows * width + cols  # position t of row b predicts labels[b, t + 1]
    logits = logits_at(model, head, inputs, flat)
    logp = _picked_logprobs(logits, targets[mask], temperature)
    out = logp.new_zeros(mask.shape).index_put((rows, cols), logp)
    return out, mask.to(logp.dtype)


def logits_at(
    model: torch.nn.Module, head: torch.nn.Module, inputs: dict[str, Any], flat: torch.Tensor
) -> torch.Tensor:
    """float32 logits ``[len(flat), V]`` at the flattened ``[B·T]`` positions ``flat`` only: a
    forward pre-hook on the output embeddings drops every other hidden state before the head."""

    def keep(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        return (hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat), *args[1:])

    handle = head.register_forward_pre_hook(keep)
    try:
        logits = model(**inputs).logits.float()
    finally:
        handle.remove()
    return logits.reshape(-1, logits.shape[-1])


def _picked_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def shared_prompt_logprobs(
    model: torch.nn.Module, rows: SharedPromptRows, temperature: float = 1.0
) -> torch.Tensor:
    """log π of every response token ``[N]`` of a shared-prompt batch (``rows.tgt`` at
    ``rows.src``), the LM head applied at those positions only."""
    inputs = shared_prompt_inputs(model, rows)
    head = output_head(model)
    if head is None:
        logits = model(**inputs).logits.float()
        logits = logits.reshape(-1, logits.shape[-1]).index_select(0, rows.src)
    else:
        logits = logits_at(model, head, inputs, rows.src)
    return _picked_logprobs(logits, rows.tgt, temperature)


def shared_prompt_inputs(model: torch.nn.Module, rows: SharedPromptRows) -> dict[str, Any]:
    """Forward kwargs of a shared-prompt batch, the mask in the form ``model``'s attention takes."""
    return rows.model_inputs(eager=attention_implementation(model) == "eager")


def attention_implementation(model: torch.nn.Module) -> str | None:
    """``config._attn_implementation`` of the model inside DDP / peft / scalar-head wrappers."""
    m: Any = model
    for _ in range(4):
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            return cfg._attn_implementation
        m = getattr(m, "module", None) or getattr(m, "base_model", None)
        if m is None:
            break
    return None
