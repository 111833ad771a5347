"""Atomic, resumable checkpoints.

A checkpoint is a folder ``step-00000123`` holding the trainable weights (safetensors), the
optimizer and scheduler states, the RNG states and ``trainer_state.json``. It is written into a
hidden temporary folder and renamed into place only when complete, so a crash mid-write never
leaves a half-written checkpoint as the latest one; :meth:`CheckpointManager.latest` only ever
sees complete folders.

Only parameters that require gradients are saved: frozen weights come from the base model
again on resume, which keeps LoRA checkpoints megabytes instead of gigabytes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STEP_RE = re.compile(r"^step-(\d{8})$")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": json.loads(json.dumps(random.getstate(), default=list)),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().to("cpu").contiguous().clone()
        for n, p in model.named_parameters()
        if p.requires_grad
    }


class CheckpointManager:
    def __init__(self, root: str | Path, keep: int = 2, is_main: bool = True) -> None:
        self.root = Path(root)
        self.keep = keep
        self.is_main = is_main

    def all(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and STEP_RE.match(p.name)]
        return sorted(found, key=lambda p: p.name)

    def latest(self) -> Path | None:
        done = [p for p in self.all() if (p / "trainer_state.json").is_file()]
        return done[-1] if done else None

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: dict[str, Any],
    ) -> Path:
        final = self.root / f"step-{step:08d}"
        if not self.is_main:
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-step-{step:08d}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        self._write_meta(tmp, scheduler, step, state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._prune()
        return final

    def save_sharded(
        self,
        step: int,
        dist: Any,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: dict[str, Any],
    ) -> Path:
        """FSDP / DeepSpeed: every process writes its shard into ``sharded/`` (a collective),
        then the main process adds the scheduler, RNG and ``trainer_state.json`` and renames
        the folder into place, so completeness still means "trainer_state.json exists"."""
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-step-{step:08d}"  # the same name on every process
        if self.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        dist.barrier()
        dist.save_state(model, optimizer, tmp / "sharded")
        dist.barrier()
        if not self.is_main:
            return final
        self._write_meta(tmp, scheduler, step, state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._prune()
        return final

    @staticmethod
    def load_sharded(
        path: str | Path,
        dist: Any,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
    ) -> dict[str, Any]:
        p = Path(path)
        if not (p / "sharded").is_dir():
            raise ValueError(
                f"{p}: a single-process checkpoint cannot resume an FSDP/DeepSpeed run (and "
                "vice versa); relaunch the way it was saved, or use train.resume=false"
            )
        dist.load_state(model, optimizer, p / "sharded")
        return CheckpointManager._read_meta(p, scheduler)

    def _write_meta(self, folder: Path, scheduler: Any, step: int, state: dict[str, Any]) -> None:
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
        rng = rng_state()
        torch.save({"torch": rng.pop("torch"), "cuda": rng.pop("cuda")}, folder / "rng_torch.pt")
        (folder / "rng.json").write_text(json.dumps(rng))
        # trainer_state.json is written last: its presence marks the checkpoint complete.
        (folder / "trainer_state.json").write_text(json.dumps({"step": step, **state}, indent=1))

    @staticmethod
    def _read_meta(folder: Path, scheduler: Any) -> dict[str, Any]:
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
        rng = json.loads((folder / "rng.json").read_text())
        rng.update(torch.load(folder / "rng_torch.pt", weights_only=True))
        set_rng_state(rng)
        return json.loads((folder / "trainer_state.json").read_text())

    def _prune(self) -> None:
        done = self.all()
        for old in done[: max(0, len(done) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def load(
        path: str | Path,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
    ) -> dict[str, Any]:
        p = Path(path)
        if not (p / "trainer_state.json").is_file():
            raise FileNotFoundError(f"{p}: not a complete checkpoint (no trainer_state.json)")
        if (p / "sharded").is_dir():
            raise ValueError(
                f"{p} was written by an FSDP/DeepSpeed run; relaunch with the same accelerate "
                "config to resume it, or use train.resume=false"
            )
        weights = load_file(str(p / "trainable.safetensors"))
        params = dict(model.named_parameters())
        missing = [n for n in weights if n not in params]
        if missing:
            raise ValueError(
                f"{p}: checkpoint weights {missing[:3]} do not match this model; was the run "
                "started with a different model or LoRA config? Use train.resume=false to restart"
            )
        with torch.no_grad():
            for n, t in weights.items():
                params[n].copy_(t.to(params[n].device, params[n].dtype))
        optimizer.load_state_dict(torch.load(p / "optimizer.pt", weights_only=True))
        return CheckpointManager._read_meta(p, scheduler)
