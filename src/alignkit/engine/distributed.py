"""Process-group plumbing, on top of accelerate, written once for every recipe.

One process: everything is a no-op and the model stays where it is. Several processes (via
``accelerate launch`` or ``torchrun``): accelerate wraps the model (DDP / FSDP / DeepSpeed per
its config), and the helpers below sum counts and metrics across processes so that a global
batch means the same thing for any number of processes.

What changes with the engine, and is handled here so the recipes never ask:

* **preparing**: DDP keeps the model's parameter objects, so an optimizer built on the bare
  model stays valid. FSDP2 and DeepSpeed replace or partition them, so accelerate must see
  the model and its optimizer *together* (:meth:`Dist.prepare`).
* **accumulation**: DDP and FSDP skip the gradient all-reduce under ``no_sync``; DeepSpeed
  instead needs to be told where the accumulation boundary is, because its engine steps the
  optimizer inside ``backward`` (:meth:`Dist.no_sync`, :meth:`Dist.backward`).
* **saving**: under FSDP / ZeRO-3 no process holds the whole model; the final Hugging Face
  folder is written from ``accelerator.get_state_dict`` (a collective every process joins)
  by the main process (:meth:`Dist.save_pretrained`).
* **generation**: ``generate`` on a sharded model needs its parameters gathered first
  (:meth:`Dist.gathered`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

SHARDED_ENGINES = ("FSDP", "DEEPSPEED")


class Dist:
    def __init__(self, accelerator: Any) -> None:
        self.acc = accelerator
        self._sync = True  # False inside no_sync(skip=True): not an accumulation boundary

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

    @property
    def engine(self) -> str:
        """``NO``, ``MULTI_CPU``, ``MULTI_GPU`` (DDP), ``FSDP`` or ``DEEPSPEED``."""
        return str(getattr(self.acc.distributed_type, "name", self.acc.distributed_type))

    @property
    def sharded(self) -> bool:
        """Parameters (or optimizer state) are split across processes: FSDP or DeepSpeed."""
        return self.engine in SHARDED_ENGINES

    @property
    def zero_stage(self) -> int:
        if self.engine != "DEEPSPEED":
            return 0
        return int(self.acc.state.deepspeed_plugin.zero_stage)

    def describe(self) -> dict[str, Any]:
        """What a run was launched with, written next to its metrics (tests assert it)."""
        return {
            "world_size": self.world_size,
            "engine": self.engine,
            "zero_stage": self.zero_stage,
            "mixed_precision": str(getattr(self.acc, "mixed_precision", "no")),
        }

    # -- preparing a model for training -------------------------------------------------------

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Inference-only or DDP preparation (no optimizer involved)."""
        if self.world_size == 1:
            return model.to(self.device)
        return self.acc.prepare_model(model)

    def prepare(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        micro_batch_size: int,
        max_grad_norm: float | None,
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Wrap ``model`` for training and return the optimizer that belongs to the wrapper.

        ``optimizer`` must be built on the bare model's parameters. DDP (and one process) keep
        those parameter objects, so it is returned as is. FSDP1 keeps them too when
        ``fsdp_use_orig_params: true`` (checked below). FSDP2 swaps them for sharded DTensors
        and DeepSpeed partitions them into its own optimizer, so accelerate gets both at once.
        """
        if not self.sharded:
            return self.prepare_model(model), optimizer
        if self.engine == "DEEPSPEED":
            ds = self.acc.state.deepspeed_plugin.deepspeed_config
            # The Trainer accumulates and normalises micro-batches itself: DeepSpeed must not
            # divide the loss again, and its clipping is our train.max_grad_norm (0 = off).
            ds["train_micro_batch_size_per_gpu"] = micro_batch_size
            ds["gradient_accumulation_steps"] = 1
            ds["gradient_clipping"] = float(max_grad_norm or 0.0)
            ds.pop("train_batch_size", None)  # recomputed by accelerate from the two above
        if self.engine == "DEEPSPEED" or self.acc.is_fsdp2:
            return self.acc.prepare(model, optimizer)
        wrapped = self.acc.prepare(model)
        owned = {id(p) for p in wrapped.parameters()}
        if any(id(p) not in owned for g in optimizer.param_groups for p in g["params"]):
            raise RuntimeError(
                "FSDP replaced the model's parameters, so the optimizer would train copies: set "
                "fsdp_use_orig_params: true in the accelerate config (recipes/accelerate/fsdp.yaml "
                "does), or fsdp_version: 2"
            )
        return wrapped, self.acc.prepare(optimizer)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.acc.unwrap_model(model) if self.world_size > 1 else model

    # -- one optimizer step ------------------------------------------------------------------

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module, skip: bool) -> Iterator[None]:
        """Skip the gradient all-reduce on all but the last micro-batch of a step: the
        gradients are summed locally first and synchronised once, which is both correct and
        ``grad_accum`` times cheaper in communication. Under DeepSpeed the same flag marks
        the accumulation boundary at which its engine steps."""
        self._sync = not skip
        try:
            if skip and self.world_size > 1:
                with self.acc.no_sync(model):
                    yield
            else:
                yield
        finally:
            self._sync = True

    def backward(self, loss: torch.Tensor, model: nn.Module | None = None) -> None:
        """``loss.backward()`` through accelerate (mixed-precision scaling, DeepSpeed).

        DeepSpeed: accelerate keeps one engine per Accelerator, but PPO trains a critic beside
        the policy; so the engine of ``model`` itself is driven here, exactly as accelerate's
        wrapper does (backward, then ``engine.step()`` at the accumulation boundary).
        """
        if self.engine == "DEEPSPEED" and model is not None:
            from accelerate.utils.deepspeed import DeepSpeedEngineWrapper

            DeepSpeedEngineWrapper(model).backward(loss, sync_gradients=self._sync)
            return
        self.acc.backward(loss)

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor | float:
        """Clip the global gradient norm and return it (before clipping). Through accelerate,
        so FSDP computes the norm over every shard; DeepSpeed clipped inside its step already
        (``gradient_clipping`` = train.max_grad_norm) and reports the norm it saw."""
        if self.engine == "DEEPSPEED":
            norm = model.get_global_grad_norm()  # type: ignore[operator]
            return float(norm) if norm is not None else float("nan")
        return self.acc.clip_grad_norm_(model.parameters(), max_norm)

    # -- sharded models: generation and the final save ---------------------------------------

    @contextlib.contextmanager
    def gathered(self, model: nn.Module) -> Iterator[nn.Module]:
        """The bare module with its full parameters, for generation and no-grad scoring.

        FSDP1 shards parameters between forwards, so ``generate`` on the inner module would
        see shards: summon the full parameters (every process, read-only). ZeRO-3 likewise
        gathers its partitions. DDP, ZeRO-1/2 and FSDP2 (whose hooks sit on the modules
        themselves) need nothing. Every process must enter this together.
        """
        inner = self.unwrap(model)
        if self.engine == "FSDP" and not self.acc.is_fsdp2:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            with FSDP.summon_full_params(model, writeback=False, recurse=True):
                yield inner
        elif self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(inner.parameters()), modifier_rank=None):
                yield inner
        else:
            yield inner

    def _prepared(self, model: nn.Module) -> nn.Module:
        """The wrapper accelerate prepared around ``model`` (``model`` itself if it is one)."""
        for m in getattr(self.acc, "_models", []):
            if m is model or self.acc.unwrap_model(m) is model:
                return m
        raise ValueError(
            f"{type(model).__name__} was not prepared by this process group; pass the model "
            "the Trainer trained"
        )

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The whole model's weights on the main process when they are sharded (None when the
        model in memory is already whole). A collective: every process must call it."""
        if not self.sharded:
            return None
        return self.acc.get_state_dict(self._prepared(model))

    def save_pretrained(
        self, model: nn.Module, tokenizer: Any, out: str | Path, merge_lora: bool = True
    ) -> None:
        """Write an ordinary Hugging Face folder, consolidated from shards if need be.

        Every process calls this (the gather is collective); only the main process writes.
        """
        from alignkit.models.load import save_hf_folder

        state = self.full_state_dict(model)
        if self.is_main:
            save_hf_folder(self.unwrap(model), tokenizer, out, merge_lora, state_dict=state)
        self.barrier()

    def save_state(self, model: nn.Module, optimizer: Any, folder: Path) -> None:
        """Resumable sharded state (every process writes its own shard): FSDP through
        accelerate's FSDP helpers (distributed checkpoint format), DeepSpeed through its
        engine. The scheduler, RNG and step are the CheckpointManager's business."""
        if self.engine == "DEEPSPEED":
            model.save_checkpoint(str(folder), tag="engine")  # type: ignore[operator]
            return
        from accelerate.utils import save_fsdp_model, save_fsdp_optimizer

        plugin = self.acc.state.fsdp_plugin
        save_fsdp_model(plugin, self.acc, model, str(folder))
        save_fsdp_optimizer(plugin, self.acc, optimizer, model, str(folder))

    def load_state(self, model: nn.Module, optimizer: Any, folder: Path) -> None:
        if self.engine == "DEEPSPEED":
            model.load_checkpoint(  # type: ignore[operator]
                str(folder), tag="engine", load_optimizer_states=True
            )
            return
        from accelerate.utils import load_fsdp_model, load_fsdp_optimizer

        plugin = self.acc.state.fsdp_plugin
        load_fsdp_model(plugin, self.acc, model, str(folder))
        load_fsdp_optimizer(plugin, self.acc, optimizer, model, str(folder))

    # -- collectives ---------------------------------------------------------------------------

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

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate equally shaped tensors from every process along dim 0, rank order."""
        if self.world_size == 1:
            return t
        parts = [torch.empty_like(t, device=self.device) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, t.to(self.device).contiguous())
        return torch.cat(parts).to(t.device)

    def barrier(self) -> None:
        if self.world_size > 1:
            self.acc.wait_for_everyone()

    def print(self, *args: Any) -> None:
        if self.is_main:
            print(*args, flush=True)


def shutdown() -> None:
    """Destroy the default process group once a run has finished everywhere.

    Why: a process that exits with the group alive can abort *after* everything was saved
    (gloo's worker threads outlive the interpreter's finalisation: "terminate called without
    an active exception", SIGABRT, and torchrun reports the whole run as failed). Only after
    success: when a rank raised, the others may sit in a collective and a destroy would hang.
    """
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
