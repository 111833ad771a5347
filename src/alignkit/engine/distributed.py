"""Process-group plumbing, on top of accelerate, written once for every recipe.

One process: everything is a no-op and the model stays where it is. Several processes (via
``accelerate launch`` or ``torchrun``): accelerate wraps the model (DDP / FSDP / DeepSpeed per
its config), and the helpers below sum counts and metrics across processes so that a global
batch means the same thing for any number of processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class Dist:
    def __init__(self, accelerator: Any) -> None:
        self.acc = accelerator

    @classmethod
    def create(cls) -> Dist:
        from accelerate import Accelerator

        return cls(Accelerator(cpu=not torch.cuda.is_available()))

    @property
    def world_size(self) -> int:
        return int(self.acc.num_processes)

    @property
    def rank(self) -> int:
        return int(self.acc.process_index)

    @property
    def is_main(self) -> bool:
        return bool(self.acc.is_main_process)

    @property
    def device(self) -> torch.device:
        return self.acc.device

    def prepare_model(self, model: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return model.to(self.device)
        return self.acc.prepare_model(model)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.acc.unwrap_model(model) if self.world_size > 1 else model

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module, skip: bool) -> Iterator[None]:
        """Skip the gradient all-reduce on all but the last micro-batch of a step: the
        gradients are summed locally first and synchronised once, which is both correct and
        ``grad_accum`` times cheaper in communication."""
        if skip and self.world_size > 1:
            with self.acc.no_sync(model):
                yield
        else:
            yield

    def backward(self, loss: torch.Tensor) -> None:
        self.acc.backward(loss)

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        return self.acc.clip_grad_norm_(model.parameters(), max_norm)

    def all_reduce_sum(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return float(t.item())

    def all_reduce_dict(self, values: dict[str, float]) -> dict[str, float]:
        if self.world_size == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return dict(zip(keys, t.tolist(), strict=True))

    def barrier(self) -> None:
        if self.world_size > 1:
            self.acc.wait_for_everyone()

    def print(self, *args: Any) -> None:
        if self.is_main:
            print(*args, flush=True)
