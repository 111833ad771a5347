"""The alignkit half of the benchmark: one workload through the public recipe entry points
(``run_sft``, ``run_reward``, ``run_dpo``, ``run_rl``) with configs built by ``load_config``,
exactly as ``alignkit <cmd> key=value ...`` would. Usage:
``python bench/ak_side.py WORKLOAD STEPS OUT.json``.

Timing: ``Trainer.train_step`` is wrapped (measurement only) to record the wall-clock time at
the end of every optimizer step; a step's time is the interval between consecutive ends, so it
includes collation, rollouts (GRPO), logging and everything else the loop does, like the TRL
side's ``on_step_end`` intervals.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
BATCH = 8
MAX_LEN = 256
HP = {"sft": 2e-4, "rm": 1e-4, "dpo": 5e-5, "grpo": 1e-5}


def _train(lr: float, steps: int, out: Path) -> list[str]:
    """Hyper-parameters shared with TRL's side: constant LR, AdamW, clip 1.0, seed 0."""
    return [
        f"train.output_dir={out}",
        f"train.batch_size={BATCH}",
        "train.grad_accum=1",
        f"train.lr={lr}",
        "train.scheduler=constant",
        "train.warmup_ratio=0",
        "train.weight_decay=0",
        "train.max_grad_norm=1.0",
        f"train.max_steps={steps}",
        "train.log_every=1",
        "train.progress=false",
        "train.seed=0",
        "train.resume=false",
    ]


def vm_hwm_mb() -> float:
    """Peak resident memory so far (MB). Read at the last optimizer step, so the final model
    save (alignkit saves, the TRL side does not) is outside the comparison."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(workload: str, steps: int, out: Path) -> dict[str, Any]:
    from alignkit.config import load_config
    from alignkit.engine import loop

    ends: list[float] = []
    hwm: list[float] = []
    losses: list[float] = []
    original = loop.Trainer.train_step

    def timed(self: Any, *a: Any, **k: Any) -> dict[str, float]:
        m = original(self, *a, **k)
        ends.append(time.perf_counter())
        hwm.append(vm_hwm_mb())
        losses.append(float(m.get("loss", m.get("policy_loss", float("nan")))))
        return m

    loop.Trainer.train_step = timed  # type: ignore[method-assign]
    tmp = out.parent / f".ak-{workload}"
    pol, rm = WORK / "policy", WORK / "rm"
    t0 = time.perf_counter()
    if workload in ("sft_padded", "sft_packed"):
        from alignkit.config import SFTConfig
        from alignkit.recipes.sft import run_sft

        cfg = load_config(
            SFTConfig,
            None,
            [
                f"model.path={pol}",
                f"data.path={WORK / 'sft.jsonl'}",
                f"data.max_length={MAX_LEN}",
                "data.chat_template=none",
                f"data.packing={'true' if workload == 'sft_packed' else 'false'}",
                *_train(HP["sft"], steps, tmp),
            ],
        )
        run_sft(cfg)
    elif workload == "rm":
        from alignkit.configs.reward import RewardConfig
        from alignkit.recipes.reward import run_reward

        cfg = load_config(
            RewardConfig,
            None,
            [
                f"model.path={rm}",
                f"data.path={WORK / 'pairs.jsonl'}",
                "data.format=pairwise",
                f"data.max_length={MAX_LEN}",
                "data.chat_template=none",
                "data.eval_fraction=0",
                "loss.type=bt",
                "report.enabled=false",
                *_train(HP["rm"], steps, tmp),
            ],
        )
        run_reward(cfg)
    elif workload == "dpo":
        from alignkit.configs.preference import DPOConfig
        from alignkit.recipes.preference import run_dpo

        cfg = load_config(
            DPOConfig,
            None,
            [
                f"model.path={pol}",
                f"data.path={WORK / 'pairs.jsonl'}",
                "data.format=pairwise",
                f"data.max_length={MAX_LEN}",
                "data.chat_template=none",
                "data.eval_fraction=0",
                "loss=dpo",
                "beta=0.1",
                "reference=precompute",
                *_train(HP["dpo"], steps, tmp),
            ],
        )
        run_dpo(cfg)
    elif workload == "grpo":
        sys.path.insert(0, str(HERE))
        from alignkit.configs.rl import GRPOConfig
        from alignkit.recipes.online_rl import run_rl

        cfg = load_config(
            GRPOConfig,
            None,
            [
                f"model.path={pol}",
                f"data.path={WORK / 'prompts.jsonl'}",
                "data.chat_template=none",
                "rollout.prompts_per_step=1",
                "rollout.num_generations=8",
                "rollout.max_new_tokens=48",
                "rollout.temperature=1.0",
                "algo.minibatch_size=8",
                "algo.kl_coef=0.04",
                "algo.clip_eps=0.2",
                "algo.aggregation=token",
                "reward.function=rewards:alignkit_reward",
                "reward.clip=null",
                *_train(HP["grpo"], steps, tmp),
            ],
        )
        run_rl(cfg)
    else:
        raise SystemExit(f"unknown workload {workload!r}")
    step_s = [b - a for a, b in zip([t0, *ends[:-1]], ends, strict=True)]
    return {
        "framework": "alignkit",
        "workload": workload,
        "step_s": step_s,
        "losses": losses,
        "peak_rss_mb": hwm[-1],
        "rss_metric": "VmHWM at the last optimizer step",
        "peak_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    workload, steps, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    import alignkit

    res = run(workload, steps, out)
    res["version"] = f"alignkit {getattr(alignkit, '__version__', '?')}, torch {torch.__version__}"
    out.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
