"""Small pieces every recipe needs: seeding, run folders, micro-batch windows, eval loss."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from alignkit.config import dump_config
from alignkit.data.collate import Batch, batch_plan, collate, shard
from alignkit.data.tokenize import Example
from alignkit.engine.distributed import Dist
from alignkit.losses.sft import sft_loss_from_logps
from alignkit.models.logprobs import gather_logprobs, target_logprobs


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare_run_dir(out: str | Path, cfg: BaseModel, is_main: bool = True) -> Path:
    """Create the output folder and save the resolved config (reproducibility)."""
    p = Path(out)
    if is_main:
        p.mkdir(parents=True, exist_ok=True)
        (p / "config.yaml").write_text(dump_config(cfg))
    return p


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    tmp = out / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    tmp.replace(out / "summary.json")


class Windows:
    """Maps an optimizer step to its micro-batches, across epochs, for this process.

    The data order is a pure function of (seed, epoch); a window may span an epoch boundary,
    which keeps every step the same size and makes resume exact.
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        grad_accum: int,
        seed: int,
        make_batch: Callable[[list[int]], Any],
        dist: Dist,
        shuffle: bool = True,
    ) -> None:
        self.n = num_examples
        self.global_batch = batch_size * dist.world_size
        self.grad_accum = grad_accum
        self.seed = seed
        self.make_batch = make_batch
        self.dist = dist
        self.shuffle = shuffle
        self._plans: dict[int, list[list[int]]] = {}
        self.per_epoch = len(self._plan(0))

    def _plan(self, epoch: int) -> list[list[int]]:
        if epoch not in self._plans:
            plan = batch_plan(self.n, self.global_batch, self.seed, epoch, self.shuffle)
            self._plans = {epoch: shard(plan, self.dist.rank, self.dist.world_size)}
        return self._plans[epoch]

    def __call__(self, step: int) -> list[Any]:
        out = []
        for j in range(self.grad_accum):
            k = step * self.grad_accum + j
            epoch, pos = divmod(k, self.per_epoch)
            idx = self._plan(epoch)[pos]
            out.append(self.make_batch(idx))
        return out


def make_collator(
    examples: Sequence[Example], pad_id: int, packing: bool, max_length: int, device: torch.device
) -> Callable[[list[int]], Batch]:
    def make(idx: list[int]) -> Batch:
        return collate([examples[i] for i in idx], pad_id, packing, max_length).to(device)

    return make


def lm_step_loss(
    model: nn.Module, batch: Batch, normaliser: float
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Token-normalised NLL of the batch's targets (the normaliser spans the global batch).

    The maths of :func:`~alignkit.losses.sft.sft_loss` (−Σ log π over targets / N), with the
    LM head run only at target positions (:func:`target_logprobs`): prompt and padding logits
    are never built."""
    logp, mask = target_logprobs(model, batch.model_inputs(), batch.labels)
    loss = sft_loss_from_logps(logp, mask, normaliser)
    return loss, {"loss": loss.detach()}


def eval_loss(
    model: nn.Module,
    examples: Sequence[Example],
    pad_id: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Token-weighted NLL and perplexity over a held-out set."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i : i + batch_size], pad_id, False, 0).to(device)
            logits = model(**batch.model_inputs()).logits
            logp, mask = gather_logprobs(logits, batch.labels)
            total += float(-(logp * mask).sum())
            count += int(mask.sum())
    nll = total / max(count, 1)
    return {"loss": nll, "ppl": float(np.exp(min(nll, 50.0)))}


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0
