"""Two processes (gloo on CPU) give the same SFT trajectory as one with the same global batch.

`accelerate launch --cpu --num_processes 2` silently starts ONE process on a CPU-only machine,
so the test launches with torchrun and asserts the world size the run reports. Every run is in
float64 (test_grpo_two_processes_match_one says why): a weight difference beyond 1e-5 is then
a sharding or normalisation error, never summation order.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_close

from alignkit.engine.tracking import read_metrics


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]


def _float64_copy(model: Path, out: Path) -> Path:
    """The checkpoint in float64 (``model.dtype=auto`` keeps it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).to(torch.float64)
    m.save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    return out


def _same_weights(a_dir: Path, b_dir: Path) -> None:
    from safetensors.torch import load_file

    a = load_file(str(a_dir / "model.safetensors"))
    b = load_file(str(b_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    assert {t.dtype for t in a.values()} == {torch.float64}, "trained and saved in another dtype"
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
    reason="torchrun not installed",
)
def test_two_processes_match_one(tiny_llama: Path, sft_file: Path, tmp_path: Path) -> None:
    """In float64, as every test here: see test_grpo_two_processes_match_one for why."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    common = [
        f"model.path={_float64_copy(tiny_llama, tmp_path / 'model64')}",
        "model.dtype=auto",
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
    _same_weights(tmp_path / "two", tmp_path / "one")


# -- DPO and GRPO ------------------------------------------------------------------------------

TESTS_DIR = Path(__file__).resolve().parents[1]


def _launch(two: bool, args: list[str], cwd: Path) -> None:
    """``torchrun`` with two gloo processes, or plain python; tests/ on the path so the
    reward plugin ``rewards_for_tests:...`` imports in the children."""
    if two:
        cmd = [
            str(Path(sys.executable).parent / "torchrun"),
            "--standalone",
            "--nproc_per_node",
            "2",
        ]
    else:
        cmd = [sys.executable]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
    }
    res = subprocess.run(
        [*cmd, "-m", "alignkit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]


def _world(run: Path) -> int:
    return int(json.loads((run / "launch.json").read_text())["world_size"])


needs_torchrun = pytest.mark.skipif(
    not (Path(sys.executable).parent / "torchrun").exists(), reason="torchrun not installed"
)


@needs_torchrun
def test_dpo_two_processes_match_one(tiny_llama: Path, tmp_path: Path) -> None:
    """Same global batch (2 × 4 pairs vs 1 × 8): same losses, same final weights. The
    reference log-probs are precomputed (the default), so each process reads its shard's."""
    from tiny import write_jsonl

    rows = [
        {"prompt": f"what is {a} plus {b}", "chosen": f"the answer is {a + b}", "rejected": "sorry"}
        for a in range(6)
        for b in range(6)
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    common = [
        "dpo",
        f"model.path={_float64_copy(tiny_llama, tmp_path / 'model64')}",
        "model.dtype=auto",
        f"data.path={data}",
        "data.eval_fraction=0",
        "data.max_length=64",
        "train.max_steps=4",
        "train.lr=5e-3",
        "train.progress=false",
    ]
    _launch(True, [*common, "train.batch_size=4", f"train.output_dir={tmp_path / 'two'}"], tmp_path)
    _launch(
        False, [*common, "train.batch_size=8", f"train.output_dir={tmp_path / 'one'}"], tmp_path
    )
    assert _world(tmp_path / "two") == 2 and _world(tmp_path / "one") == 1
    two, one = (
        read_metrics(tmp_path / "two" / "metrics.jsonl"),
        read_metrics(tmp_path / "one" / "metrics.jsonl"),
    )
    assert len(two) == len(one) == 4
    for key in ("loss", "rewards/margin", "grad_norm"):
        assert_close([r[key] for r in two], [r[key] for r in one])
    _same_weights(tmp_path / "two", tmp_path / "one")


def _grpo_args(model: Path, prompts: Path, out: Path, *extra: str) -> list[str]:
    return [
        "grpo",
        f"model.path={model}",
        f"data.path={prompts}",
        f"train.output_dir={out}",
        "reward.function=rewards_for_tests:count_e",
        "rollout.prompts_per_step=4",
        "rollout.num_generations=4",
        "rollout.max_new_tokens=8",
        "algo.minibatch_size=8",  # 16 sequences: two optimizer steps per iteration
        "train.max_steps=2",
        "train.lr=1e-2",
        "train.progress=false",
        *extra,
    ]


@pytest.fixture()
def rl_prompts(tmp_path: Path) -> Path:
    from tiny import write_jsonl

    texts = ["count to three", "say a number", "name a color", "hello there", "list two words"]
    return write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": t} for t in texts])


@needs_torchrun
def test_grpo_two_processes_match_one(tiny_llama: Path, rl_prompts: Path, tmp_path: Path) -> None:
    """Replicated rollouts: both processes sample the same 16 sequences (same seed, same
    weights), compute advantages on all of them, then train on their strided shard of every
    micro-batch. With the same global micro-batch (2 × 2 vs 1 × 4) the run equals one process.

    In float64: the two runs sum the same per-sequence gradients in a different order, and
    AdamW divides each coordinate by its own gradient scale, so where a gradient is nearly
    zero by cancellation a float32 rounding difference becomes a visible weight difference
    (1.2e-5 on an embedding row in CI, the mean difference 1.5e-9). In float64 the same
    sums agree to ~1e-16, so any difference left beyond 1e-5 is a real sharding error."""
    model = _float64_copy(tiny_llama, tmp_path / "model64")
    f64 = "model.dtype=auto"
    _launch(
        True, _grpo_args(model, rl_prompts, tmp_path / "two", "train.batch_size=2", f64), tmp_path
    )
    _launch(
        False, _grpo_args(model, rl_prompts, tmp_path / "one", "train.batch_size=4", f64), tmp_path
    )
    two_s = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two_s["world_size"] == 2 and _world(tmp_path / "one") == 1
    two, one = (
        read_metrics(tmp_path / "two" / "metrics.jsonl"),
        read_metrics(tmp_path / "one" / "metrics.jsonl"),
    )
    assert len(two) == len(one) == 2
    for key in ("reward", "kl", "length", "policy_loss", "grad_norm", "approx_kl"):
        assert_close([r[key] for r in two], [r[key] for r in one])
    assert two[1]["policy_loss"] != two[0]["policy_loss"]  # it trained on fresh samples
    # Each process trained on its half of every minibatch, not on all of it.
    assert [r["minibatch_sequences"] for r in two] == [8.0, 8.0]
    _same_weights(tmp_path / "two", tmp_path / "one")


@needs_torchrun
def test_grpo_split_prompts_trains_on_the_whole_batch(
    tiny_llama: Path, rl_prompts: Path, tmp_path: Path
) -> None:
    """Split generation: each process samples 2 of the 4 prompts (whole groups); the logged
    statistics are gathered over all 16 sequences, and the policy moves."""
    out = tmp_path / "split"
    _launch(
        True,
        _grpo_args(tiny_llama, rl_prompts, out, "train.batch_size=2", "rollout.split_prompts=true"),
        tmp_path,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["split_prompts"] is True
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["sequences"] for r in rows] == [16, 16]
    assert [r["minibatch_sequences"] for r in rows] == [8.0, 8.0]
    from safetensors.torch import load_file

    before, after = (
        load_file(str(tiny_llama / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert any((before[k] - after[k]).abs().max() > 1e-4 for k in before)
