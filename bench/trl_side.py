"""The TRL half of the benchmark: one workload, run inside bench/.trl-venv (never imported by
alignkit). Usage: ``python bench/trl_side.py WORKLOAD STEPS OUT.json``.

TRL reads the token ids alignkit produced (``bench/work/trl_*.jsonl``, already in alignkit's
batch order) through a *sequential* sampler, so step k of both frameworks sees the same
examples; see prepare.py for why. What is timed is the interval between consecutive
``on_step_end`` callbacks: data loading, forward, backward, optimizer step and logging, i.e.
everything an optimizer step costs a user.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

WORK = Path(__file__).resolve().parent / "work"
BATCH = 8
MAX_LEN = 256
HP = {"sft": 2e-4, "rm": 1e-4, "dpo": 5e-5, "grpo": 1e-5}


def _rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (WORK / name).read_text().splitlines()]


def _common(lr: float, steps: int, out: Path) -> dict[str, Any]:
    """Hyper-parameters shared with alignkit's side: constant LR, AdamW, clip 1.0, seed 0."""
    return dict(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1,
        learning_rate=lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        use_cpu=True,
        dataloader_num_workers=0,
        train_sampling_strategy="sequential",
    )


def vm_hwm_mb() -> float:
    """Peak resident memory so far (MB). Read at the last optimizer step, so the final model
    save (alignkit saves, the TRL side does not) is outside the comparison."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepClock:
    """A TrainerCallback recording each optimizer step's end time and logged loss."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.losses: list[float] = []
        self.hwm: list[float] = []
        self.t0 = time.perf_counter()

    def as_callback(self) -> Any:
        from transformers import TrainerCallback

        clock = self

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
                clock.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
                clock.ends.append(time.perf_counter())
                clock.hwm.append(vm_hwm_mb())

            def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
                if logs and "loss" in logs:
                    clock.losses.append(float(logs["loss"]))

        return _CB()


def run(workload: str, steps: int, out: Path) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(WORK / "tokenizer"))
    clock = StepClock()
    tmp = out.parent / f".trl-{workload}"
    extra: dict[str, Any] = {}
    if workload in ("sft_padded", "sft_packed"):
        from trl import SFTConfig, SFTTrainer

        packed = workload == "sft_packed"
        ds = Dataset.from_list(_rows("trl_sft.jsonl"))
        # padding_free: TRL's padding-free mode concatenates the micro-batch into one row with
        # restarting position ids (the same examples per step as alignkit's packed rows).
        # Inputs are already truncated to 256, and TRL refuses max_length with padding_free.
        args = SFTConfig(
            **_common(HP["sft"], steps, tmp),
            max_length=None if packed else MAX_LEN,
            padding_free=packed,
            completion_only_loss=True,
        )
        trainer = SFTTrainer(
            model=str(WORK / "policy"),
            args=args,
            train_dataset=ds,
            processing_class=tok,
            callbacks=[clock.as_callback()],
        )
    elif workload == "rm":
        from trl import RewardConfig, RewardTrainer

        rows = [
            {
                "chosen_ids": r["prompt_ids"] + r["chosen_ids"],
                "rejected_ids": r["prompt_ids"] + r["rejected_ids"],
            }
            for r in _rows("trl_pairs.jsonl")
        ]
        args = RewardConfig(**_common(HP["rm"], steps, tmp), max_length=MAX_LEN)
        trainer = RewardTrainer(
            model=str(WORK / "rm"),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            callbacks=[clock.as_callback()],
        )
    elif workload == "dpo":
        from trl import DPOConfig, DPOTrainer

        # DPOTrainer has no pre-tokenised input path: it always re-tokenises text. Hand it
        # alignkit's ids instead so both sides train on identical tokens (one-time cost only).
        DPOTrainer._prepare_dataset = lambda self, dataset, *a, **k: dataset  # type: ignore[method-assign]
        rows = _rows("trl_pairs.jsonl")
        args = DPOConfig(
            **_common(HP["dpo"], steps, tmp),
            max_length=MAX_LEN,
            beta=0.1,
            precompute_ref_log_probs=True,
        )
        t = time.perf_counter()
        trainer = DPOTrainer(
            model=str(WORK / "policy"),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            callbacks=[clock.as_callback()],
        )
        extra["setup_s_incl_reference"] = time.perf_counter() - t
    elif workload == "grpo":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from rewards import trl_reward
        from trl import GRPOConfig, GRPOTrainer

        prompts = [json.loads(line) for line in (WORK / "prompts.jsonl").read_text().splitlines()]
        args = GRPOConfig(
            **_common(HP["grpo"], steps, tmp),
            num_generations=8,
            max_completion_length=48,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            beta=0.04,
            epsilon=0.2,
            loss_type="dapo",
            scale_rewards="group",
            shuffle_dataset=False,
        )
        trainer = GRPOTrainer(
            model=str(WORK / "policy"),
            reward_funcs=trl_reward,
            args=args,
            train_dataset=Dataset.from_list(prompts),
            processing_class=tok,
            callbacks=[clock.as_callback()],
        )
    else:
        raise SystemExit(f"unknown workload {workload!r}")
    trainer.train()
    step_s = [b - a for a, b in zip([clock.t0, *clock.ends[:-1]], clock.ends, strict=True)]
    return {
        "framework": "trl",
        "workload": workload,
        "step_s": step_s,
        "losses": clock.losses,
        "peak_rss_mb": clock.hwm[-1],
        "rss_metric": "VmHWM at the last optimizer step",
        "peak_rss_process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        **extra,
    }


def main() -> None:
    workload, steps, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    import trl

    res = run(workload, steps, out)
    res["version"] = f"trl {trl.__version__}, torch {torch.__version__}"
    out.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
