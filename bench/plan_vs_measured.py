"""`alignkit plan` against measured peak memory: a markdown table for docs/scale.md.

    .venv/bin/python bench/plan_vs_measured.py [--out bench/work/plan_vs_measured.md]

Trains a realistically proportioned small Llama (hidden 256, 4 layers, GQA, vocabulary 4096)
in fp32 on CPU for two optimizer steps per case (GRPO: two iterations), profiles the peak of
live tensor bytes (tests/memory_probe.py says what that covers) and prints it beside the
planner's estimate for the same recipe, batch and sequence length. The SFT/DPO rows are also
asserted (within 25 %) by tests/integration/test_planner_memory.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from memory_probe import make_probe_model, trainer_peak, write_pairs, write_sft  # noqa: E402
from tiny import make_tokenizer  # noqa: E402

from alignkit.config import SFTConfig, load_config  # noqa: E402
from alignkit.configs.preference import DPOConfig  # noqa: E402
from alignkit.configs.rl import GRPOConfig  # noqa: E402
from alignkit.planner import PlanInput, plan_memory, read_config, shape_from_config  # noqa: E402

B, L = 8, 256


def run_case(name: str, model: Path, work: Path) -> tuple[int, PlanInput, dict]:
    common = [
        f"model.path={model}",
        "train.max_steps=2",
        "train.progress=false",
        f"train.output_dir={work / name}",
    ]
    record: dict = {}
    if name.startswith("sft"):
        from alignkit.recipes.sft import run_sft

        extra = {
            "sft": [],
            "sft+checkpointing": ["model.gradient_checkpointing=true"],
            "sft+lora": ["model.lora.enabled=true", "model.lora.r=16"],
        }[name]
        cfg = [*common, *extra, f"data.max_length={L}", f"train.batch_size={B}"]
        with trainer_peak(record):
            run_sft(
                load_config(SFTConfig, None, [*cfg, f"data.path={write_sft(work / 'sft.jsonl')}"])
            )
        inp = PlanInput(
            "sft",
            batch_size=B,
            seq_len=L,
            dtype="fp32",
            overhead=0,
            gradient_checkpointing="checkpointing" in name,
            lora="lora" in name,
            lora_r=16,
        )
    elif name in ("dpo", "dpo+shared"):
        from alignkit.recipes.preference import run_dpo

        data = write_pairs(work / "pairs.jsonl")
        shared = name == "dpo+shared"
        cfg = [
            *common,
            f"data.max_length={L}",
            f"train.batch_size={B // 2}",
            "data.eval_fraction=0",
            f"data.shared_prompt={str(shared).lower()}",
        ]
        with trainer_peak(record):
            run_dpo(load_config(DPOConfig, None, [*cfg, f"data.path={data}"]))
        # Shared-prompt rows are 2L − p wide (a prompt of p tokens, two responses of L − p).
        widths = [w for _, w in record["shapes"]]
        prompt_len = round(2 * L - sum(widths) / len(widths)) if shared else 0
        inp = PlanInput(
            "dpo",
            batch_size=B // 2,
            seq_len=L,
            prompt_len=prompt_len,
            shared_prompt=shared,
            dtype="fp32",
            overhead=0,
        )
    else:  # grpo: 16 sequences of up to 32 new tokens, micro-batch 8, a Python reward
        from alignkit.recipes.online_rl import run_rl

        prompts = work / "prompts.jsonl"
        texts = [
            "count to three now",
            "say a number please",
            "name a color now",
            "hello there world",
        ]
        prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
        cfg = [
            *common,
            f"data.path={prompts}",
            "reward.function=rewards_for_tests:count_e",
            "rollout.prompts_per_step=4",
            "rollout.num_generations=4",
            "rollout.max_new_tokens=32",
            "algo.minibatch_size=16",
            f"train.batch_size={B}",
        ]
        with trainer_peak(record):
            run_rl(load_config(GRPOConfig, None, cfg))
        width = max(s[1] for s in record["shapes"] if s[0] == B)
        inp = PlanInput(
            "grpo",
            batch_size=B,
            seq_len=width,
            gen_batch=16,
            dtype="fp32",
            overhead=0,
            reward_model=False,
        )
    return record["peak"], inp, record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "work" / "plan_vs_measured.md")
    ap.add_argument("--cases", default="sft,sft+checkpointing,sft+lora,dpo,dpo+shared,grpo")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="plan-vs-measured-"))
    model = make_probe_model(work / "model", make_tokenizer(work / "tok"))
    shape = shape_from_config(read_config(model))
    lines = [
        f"Model: Llama, hidden {shape.hidden}, {shape.layers} layers, {shape.heads} heads "
        f"({shape.kv_heads} kv), MLP {shape.intermediate}, vocab {shape.vocab}: "
        f"{shape.params / 1e6:.2f} M parameters; fp32 on CPU.",
        "",
        "| case | micro-batch | planned MiB | measured MiB | planned / measured |",
        "|---|---|---:|---:|---:|",
    ]
    for name in args.cases.split(","):
        t0 = time.perf_counter()
        measured, inp, _ = run_case(name, model, work)
        planned = plan_memory(shape, inp).peak
        rows = inp.batch_size * (2 if inp.recipe == "dpo" else 1)
        batch = f"{rows} × {inp.seq_len}"
        if inp.recipe == "dpo" and inp.shared_prompt:
            batch = f"{inp.batch_size} × {2 * inp.seq_len - inp.prompt_len}"
        lines.append(
            f"| {name} | {batch} | {planned / 2**20:.1f} | "
            f"{measured / 2**20:.1f} | {planned / measured:.2f} |"
        )
        print(lines[-1], f"({time.perf_counter() - t0:.0f}s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
