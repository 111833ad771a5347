"""Two processes (gloo on CPU) give the same SFT trajectory as one with the same global batch.

`accelerate launch --cpu --num_processes 2` silently starts ONE process on a CPU-only machine,
so the test launches with torchrun and asserts the world size the run reports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_close

from alignkit.engine.tracking import read_metrics


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_two_processes_match_one(tiny_llama: Path, sft_file: Path, tmp_path: Path) -> None:
    torchrun = str(Path(sys.executable).parent / "torchrun")
    common = [
        f"model.path={tiny_llama}",
        f"data.path={sft_file}",
        "train.max_steps=4",
        "train.lr=5e-3",
        "train.progress=false",
    ]
    _run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "alignkit",
            "sft",
            *common,
            "train.batch_size=2",
            f"train.output_dir={tmp_path / 'two'}",
        ],
        tmp_path,
    )
    _run(
        [
            sys.executable,
            "-m",
            "alignkit",
            "sft",
            *common,
            "train.batch_size=4",
            f"train.output_dir={tmp_path / 'one'}",
        ],
        tmp_path,
    )
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert_close(
        [r["loss"] for r in read_metrics(tmp_path / "two" / "metrics.jsonl")],
        [r["loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl")],
    )
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "two" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model.safetensors"))
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k
