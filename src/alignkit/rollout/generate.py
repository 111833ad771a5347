"""Batched generation with the KV cache: the one sampler used by evaluation, RL rollouts,
rejection sampling, self-alignment and best-of-N.

Prompts are rendered with the same :class:`~alignkit.data.tokenize.ChatFormatter` as training,
left-padded (so every row's next token sits at the same position), and sorted by length so a
batch wastes little padding. Generation stops per row at EOS; rows that never emit EOS are
flagged ``finished=False`` (RL penalises them; evaluation reports their share).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from alignkit.config import Section
from alignkit.data.records import Text
from alignkit.data.tokenize import ChatFormatter


class SamplingConfig(Section):
    max_new_tokens: int = Field(64, ge=1, description="Maximum generated tokens per response.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens (0 = all).")
    batch_size: int = Field(32, ge=1, description="Prompts per generate() call.")
    max_prompt_length: int = Field(
        512, ge=1, description="Prompts longer than this keep their last tokens."
    )


@dataclass
class Generation:
    prompt_ids: list[int]
    completion_ids: list[int]  # without padding; includes the EOS token when finished
    text: str  # decoded completion without special tokens
    finished: bool  # emitted EOS before max_new_tokens


def _left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        attn[i, width - len(r) :] = 1
    return ids, attn


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Text],
    sampling: SamplingConfig | None = None,
    num_samples: int = 1,
    chat_template: str = "auto",
    seed: int | None = None,
    prompt_ids: Sequence[list[int]] | None = None,
) -> list[list[Generation]]:
    """``num_samples`` completions for each prompt: result[i][j] is sample j of prompt i."""
    sampling = sampling or SamplingConfig()
    fmt = ChatFormatter(tokenizer, chat_template)
    if prompt_ids is None:
        prompt_ids = [fmt.prompt_ids(p) for p in prompts]
    encoded = [list(p)[-sampling.max_prompt_length :] for p in prompt_ids]
    # Each prompt repeated num_samples times; sort by length so batches pad little.
    jobs = [(i, j) for i in range(len(encoded)) for j in range(num_samples)]
    jobs.sort(key=lambda ij: len(encoded[ij[0]]))
    results: list[list[Generation | None]] = [[None] * num_samples for _ in encoded]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    if seed is not None:
        torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    greedy = sampling.temperature == 0.0
    try:
        for start in range(0, len(jobs), sampling.batch_size):
            chunk = jobs[start : start + sampling.batch_size]
            ids, attn = _left_pad([encoded[i] for i, _ in chunk], pad)
            kwargs: dict[str, Any] = {
                "input_ids": ids.to(device),
                "attention_mask": attn.to(device),
                "max_new_tokens": sampling.max_new_tokens,
                "do_sample": not greedy,
                "pad_token_id": pad,
                "eos_token_id": eos,
                "use_cache": True,
            }
            if not greedy:
                kwargs["temperature"] = sampling.temperature
                kwargs["top_p"] = sampling.top_p
                kwargs["top_k"] = sampling.top_k if sampling.top_k > 0 else None
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            out = model.generate(**kwargs)
            new = out[:, ids.shape[1] :].tolist()
            for (i, j), row in zip(chunk, new, strict=True):
                finished = eos in row
                comp = row[: row.index(eos) + 1] if finished else row
                text = tokenizer.decode(comp, skip_special_tokens=True)
                results[i][j] = Generation(encoded[i], comp, text.strip(), finished)
    finally:
        model.train(was_training)
    return [[g for g in row if g is not None] for row in results]
