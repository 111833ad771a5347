"""The training loop every recipe uses: accumulation, clipping, schedule, eval, checkpoints.

A recipe supplies three things:

* ``window(step) -> list[micro_batch]``: the micro-batches of optimizer step ``step`` (a pure
  function of the step, so a resumed run continues with exactly the next data);
* ``count(micro_batch) -> float``: the micro-batch's share of the loss normaliser (target
  tokens for SFT, pairs for DPO ...);
* ``loss_fn(model, micro_batch, normaliser) -> (loss, metrics)``: the loss *already divided by
  the normaliser of the whole optimizer step*, and metrics as shares of the step (summed over
  micro-batches and processes).

Why the normaliser is computed first: token-level losses must be divided by the number of
target tokens in the whole global batch, not averaged per micro-batch, or gradient
accumulation changes the result (short answers get over-weighted). With the normaliser known
up front, batch 1 × accumulation 4 and batch 4 × accumulation 1 give the same update, and
two processes give the same update as one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignkit.config import TrainConfig
from alignkit.engine.checkpoint import CheckpointManager
from alignkit.engine.distributed import Dist
from alignkit.engine.tracking import Tracker

LossFn = Callable[[nn.Module, Any, float], tuple[torch.Tensor, dict[str, Any]]]


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warmup = (
        cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio * total_steps)
    )

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        progress = min(max(progress, 0.0), 1.0)
        if cfg.scheduler == "linear":
            decay = 1.0 - progress
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay

    return f


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on biases and norm weights (1-D tensors), as is standard."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def adamw_impl(groups: list[dict[str, Any]], sharded: bool) -> dict[str, bool]:
    """``fused=True`` where the fused AdamW kernel applies, else torch's default.

    Why: on CPU torch defaults to the single-tensor AdamW, a Python loop issuing about a dozen
    kernels per parameter tensor; the fused kernel updates each tensor in one pass (same maths).
    With a small model on a few cores that loop was ~10 % of an SFT step (bench/README.md).
    Sharded engines (FSDP2 DTensors, DeepSpeed's own optimizer) keep the default.
    """
    params = [p for g in groups for p in g["params"]]
    ok = (
        not sharded
        and bool(params)
        and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
        and len({p.device for p in params}) == 1
    )
    return {"fused": True} if ok else {}


def steps_for(num_micro_batches: int, cfg: TrainConfig, epochs: float | None = None) -> int:
    """Optimizer steps for a run: ``max_steps`` or ceil(epochs × micro-batches / accum)."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    per_epoch = max(1, math.ceil(num_micro_batches / cfg.grad_accum))
    return max(1, math.ceil((epochs if epochs is not None else cfg.epochs) * per_epoch))


class Trainer:
    """Owns the optimizer, scheduler, tracker and checkpoints of one training run."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        total_steps: int,
        output_dir: str | Path,
        dist: Dist | None = None,
        lr: float | None = None,
        run_config: dict[str, Any] | None = None,
        desc: str = "train",
    ) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        self.output_dir = Path(output_dir)
        self.dist = dist or Dist.create()
        self.desc = desc
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(
                "no trainable parameters: every weight is frozen (check model.freeze and "
                "model.lora settings)"
            )
        # Built on the bare model's parameters; Dist.prepare hands it to accelerate together
        # with the model where the engine (FSDP2, DeepSpeed) replaces or partitions them.
        groups = param_groups(model, cfg.weight_decay)
        optimizer = torch.optim.AdamW(
            groups, lr=lr or cfg.lr, betas=cfg.betas, **adamw_impl(groups, self.dist.sharded)
        )
        self.model, self.optimizer = self.dist.prepare(
            model, optimizer, cfg.batch_size, cfg.max_grad_norm
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(cfg, total_steps)
        )
        self.ckpt = CheckpointManager(
            self.output_dir / "checkpoints", cfg.keep_checkpoints, self.dist.is_main
        )
        self.run_config = run_config
        self.step = 0
        self.tokens_seen = 0
        self.tracker: Tracker | None = None

    @property
    def unwrapped(self) -> nn.Module:
        return self.dist.unwrap(self.model)

    # -- one optimizer step ----------------------------------------------------------------

    def train_step(
        self, micro_batches: list[Any], loss_fn: LossFn, count: Callable[[Any], float]
    ) -> dict[str, float]:
        """Accumulate gradients over ``micro_batches`` and take one optimizer step."""
        self.model.train()
        local = sum(count(mb) for mb in micro_batches)
        normaliser = self.dist.all_reduce_sum(float(local))
        if normaliser <= 0:
            normaliser = 1.0  # a window without targets contributes no gradient
        sums: dict[str, float] = {}
        for i, mb in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            with self.dist.no_sync(self.model, skip=not last):
                loss, metrics = loss_fn(self.model, mb, normaliser)
                # DDP, FSDP and DeepSpeed average gradients over processes; our loss is
                # already a share of the global sum, so undo the average.
                self.dist.backward(loss * self.dist.world_size, self.model)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        sums = self.dist.all_reduce_dict(sums)
        if self.cfg.max_grad_norm is not None:
            grad_norm = self.dist.clip_grad_norm(self.model, self.cfg.max_grad_norm)
            sums["grad_norm"] = float(grad_norm)
        sums["lr"] = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return sums

    # -- the whole run ---------------------------------------------------------------------

    def maybe_resume(self) -> dict[str, Any]:
        """Restore the latest complete checkpoint (if resuming); returns its saved state."""
        resume = self.cfg.resume
        if resume is False or resume == "false":
            return {}
        path = Path(resume) if isinstance(resume, str) and resume not in ("true", "auto") else None
        path = path or self.ckpt.latest()
        if path is None:
            return {}
        if self.dist.sharded:
            state = CheckpointManager.load_sharded(
                path, self.dist, self.model, self.optimizer, self.scheduler
            )
        else:
            state = CheckpointManager.load(path, self.unwrapped, self.optimizer, self.scheduler)
        self.step = int(state["step"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.dist.print(f"resumed from {path} at step {self.step}/{self.total_steps}")
        return state

    def save_checkpoint(self, extra: dict[str, Any] | None = None) -> None:
        """Atomic checkpoint; ``extra`` carries recipe state (e.g. RL iteration, λ, β)."""
        state = {"total_steps": self.total_steps, "tokens_seen": self.tokens_seen, **(extra or {})}
        if self.dist.sharded:  # every process writes its shard of weights and optimizer state
            self.ckpt.save_sharded(
                self.step, self.dist, self.model, self.optimizer, self.scheduler, state
            )
        else:
            self.ckpt.save(self.step, self.unwrapped, self.optimizer, self.scheduler, state)
        self.dist.barrier()

    def begin(self) -> dict[str, Any]:
        """Resume if asked and open the metric sinks; for recipes that drive train_step
        themselves (online RL). Returns the resumed checkpoint's state ({} on a fresh run)."""
        state = self.maybe_resume()
        if self.dist.is_main:
            # How the run was launched (processes, engine): reproducibility, and the proof a
            # multi-process test needs that it really ran on several processes.
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "launch.json").write_text(json.dumps(self.dist.describe()))
        self.tracker = Tracker(
            self.output_dir,
            self.cfg.report_to,
            self.dist.is_main,
            config=self.run_config,
            resume_step=self.step,
        )
        return state

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        assert self.tracker is not None, "call begin() first"
        self.tracker.log(metrics, self.step if step is None else step)

    def end(self) -> None:
        if self.tracker is not None:
            self.tracker.close()

    def fit(
        self,
        window: Callable[[int], list[Any]],
        loss_fn: LossFn,
        count: Callable[[Any], float],
        eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
        tokens: Callable[[Any], int] | None = None,
        on_step_end: Callable[[int, dict[str, float]], None] | None = None,
    ) -> dict[str, float]:
        """Run optimizer steps until ``total_steps``; returns the last logged metrics."""
        self.begin()
        assert self.tracker is not None
        last: dict[str, float] = {}
        progress = Progress(
            self.desc, self.total_steps, self.step, self.cfg.progress and self.dist.is_main
        )
        t_start = time.perf_counter()
        tokens_run = 0
        try:
            while self.step < self.total_steps:
                mbs = window(self.step)
                metrics = self.train_step(mbs, loss_fn, count)
                if tokens is not None:
                    n_tok = int(self.dist.all_reduce_sum(float(sum(tokens(mb) for mb in mbs))))
                    self.tokens_seen += n_tok
                    tokens_run += n_tok
                    metrics["tokens_per_s"] = tokens_run / max(1e-9, time.perf_counter() - t_start)
                do_eval = eval_fn is not None and (
                    (self.cfg.eval_every and self.step % self.cfg.eval_every == 0)
                    or self.step == self.total_steps
                )
                if do_eval:
                    assert eval_fn is not None
                    self.model.eval()
                    with torch.no_grad():
                        metrics.update({f"eval/{k}": v for k, v in eval_fn(self.model).items()})
                if self.step % self.cfg.log_every == 0 or self.step == self.total_steps or do_eval:
                    self.tracker.log(metrics, self.step)
                    last = metrics
                progress.update(self.step, metrics)
                if self.cfg.save_every and self.step % self.cfg.save_every == 0:
                    self.save_checkpoint()
                if on_step_end is not None:
                    on_step_end(self.step, metrics)
        finally:
            progress.close()
            self.end()
        return last


class Progress:
    """A rich progress bar with ETA on a terminal; sparse plain lines in logs and CI."""

    def __init__(self, desc: str, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self.desc = desc
        self._bar: Any = None
        self._last_print = start
        self._t0 = time.perf_counter()
        self._start = start
        if not enabled:
            return
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                transient=False,
            )
            self._task = self._bar.add_task(desc, total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        keys = [k for k in ("loss", "eval/loss", "accuracy", "reward") if k in metrics]
        info = " ".join(f"{k}={metrics[k]:.4g}" for k in keys)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
            return
        every = max(1, self.total // 10)
        if step - self._last_print >= every or step == self.total:
            self._last_print = step
            elapsed = time.perf_counter() - self._t0
            rate = (step - self._start) / max(elapsed, 1e-9)
            eta = (self.total - step) / rate if rate > 0 else float("nan")
            print(f"[{self.desc}] step {step}/{self.total} {info} eta {eta:.0f}s", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
