"""Batches: padded, or padding-free packed rows, plus the deterministic batch plan.

Labels follow the Hugging Face convention: ``labels`` is aligned with ``input_ids`` and the
loss shifts by one (logits at t predict labels at t+1); ``-100`` is ignored.

Packing puts the examples of one micro-batch into as few rows of at most ``max_length`` tokens
as possible (best-fit decreasing). Position ids restart at 0 for every example, and the label
of every example's first token is ``-100`` so nothing is predicted across a boundary. With no
attention mask, transformers derives a block-diagonal causal mask from the restarting position
ids, so attention never crosses examples either. Bounding rows at ``max_length`` keeps attention
cost O(Σ row²) instead of O((Σ len)²) for one giant row.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from alignkit.data.tokenize import IGNORE_INDEX, Example


@dataclass
class Batch:
    """A model-ready micro-batch. ``attention_mask`` is None for packed batches."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor | None
    num_examples: int
    num_real_tokens: int  # non-padding tokens, for throughput accounting

    @property
    def num_targets(self) -> int:
        """Tokens that carry loss after the one-token shift (the SFT normaliser's share)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            input_ids=self.input_ids.to(device),
            labels=self.labels.to(device),
            attention_mask=None if self.attention_mask is None else self.attention_mask.to(device),
            position_ids=None if self.position_ids is None else self.position_ids.to(device),
            num_examples=self.num_examples,
            num_real_tokens=self.num_real_tokens,
        )

    def model_inputs(self) -> dict[str, Any]:
        """Forward kwargs. ``use_cache=False`` matters beyond memory: with a KV cache object
        present, transformers does not derive the block-diagonal mask from packed position
        ids, and attention would silently cross examples."""
        out: dict[str, Any] = {"input_ids": self.input_ids, "use_cache": False}
        if self.attention_mask is not None:
            out["attention_mask"] = self.attention_mask
        if self.position_ids is not None:
            out["position_ids"] = self.position_ids
        return out


def _labels(ex: Example) -> list[int]:
    return [t if m else IGNORE_INDEX for t, m in zip(ex.input_ids, ex.loss_mask, strict=True)]


def collate_padded(examples: Sequence[Example], pad_id: int) -> Batch:
    """Right-padded batch with an attention mask."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(_labels(e))
        attn[i, :n] = 1
    return Batch(ids, labels, attn, None, len(examples), int(attn.sum()))


def pack_rows(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Best-fit-decreasing bin packing of example indices into rows of <= max_length tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = min(lengths[i], max_length)
        best = -1
        for r, room in enumerate(free):
            if room >= n and (best == -1 or room < free[best]):
                best = r
        if best == -1:
            rows.append([i])
            free.append(max_length - n)
        else:
            rows[best].append(i)
            free[best] -= n
    return rows


def collate_packed(examples: Sequence[Example], pad_id: int, max_length: int) -> Batch:
    """Padding-free packing: rows of concatenated examples with restarting position ids."""
    rows = pack_rows([len(e) for e in examples], max_length)
    width = max(sum(len(examples[i]) for i in row) for row in rows)
    n_rows = len(rows)
    ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    labels = torch.full((n_rows, width), IGNORE_INDEX, dtype=torch.long)
    pos = torch.zeros((n_rows, width), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            e = examples[i]
            n = len(e)
            ids[r, at : at + n] = torch.tensor(e.input_ids)
            lab = _labels(e)
            lab[0] = IGNORE_INDEX  # never predict an example's first token from the previous one
            labels[r, at : at + n] = torch.tensor(lab)
            pos[r, at : at + n] = torch.arange(n)
            at += n
        # Trailing padding forms its own "sequence" (positions restart at 0) so that it can
        # only attend to itself; it carries no loss.
        if at < width:
            pos[r, at:] = torch.arange(width - at)
    return Batch(ids, labels, None, pos, len(examples), sum(len(e) for e in examples))


def collate(examples: Sequence[Example], pad_id: int, packing: bool, max_length: int) -> Batch:
    if packing:
        return collate_packed(examples, pad_id, max_length)
    return collate_padded(examples, pad_id)


def batch_plan(
    num_examples: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True
) -> list[list[int]]:
    """The micro-batches of one epoch as index lists; a pure function of (seed, epoch), so a
    resumed run skips exactly the micro-batches it already trained on."""
    idx = list(range(num_examples))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(idx)
    return [idx[i : i + batch_size] for i in range(0, num_examples, batch_size)]


def shard(items: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Split each global micro-batch across processes (same global batch for any world size)."""
    if world_size == 1:
        return items
    out = []
    for mb in items:
        part = mb[rank::world_size]
        out.append(part)
    return out
