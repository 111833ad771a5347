"""Metric sinks: metrics.jsonl always, TensorBoard / Weights & Biases when asked.

metrics.jsonl is the source of truth for plots and reports: one JSON object per logged step,
flushed immediately so a crashed run keeps every line it logged.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


class Tracker:
    def __init__(
        self,
        output_dir: str | Path,
        report_to: list[str] | None = None,
        is_main: bool = True,
        run_name: str | None = None,
        config: dict[str, Any] | None = None,
        resume_step: int | None = None,
    ) -> None:
        self.dir = Path(output_dir)
        self.is_main = is_main
        self.path = self.dir / "metrics.jsonl"
        self._tb: Any = None
        self._wandb: Any = None
        self.t0 = time.time()
        if not is_main:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        report_to = report_to or []
        if "tensorboard" in report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError(
                    "train.report_to includes tensorboard but it is not installed: "
                    "pip install 'alignkit[tensorboard]'"
                ) from e
            self._tb = SummaryWriter(str(self.dir / "tensorboard"))
        if "wandb" in report_to:
            try:
                import wandb
            except ImportError as e:
                raise RuntimeError(
                    "train.report_to includes wandb but it is not installed: pip install wandb"
                ) from e
            self._wandb = wandb.init(name=run_name, config=config, dir=str(self.dir))

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the log has no duplicates."""
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        self.path.write_text("".join(k + "\n" for k in kept))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.is_main:
            return
        row = {"step": step, "time": round(time.time() - self.t0, 3)}
        for k, v in metrics.items():
            if hasattr(v, "item"):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = str(v)
            row[k] = v
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl (tolerates a last line cut by a crash)."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
