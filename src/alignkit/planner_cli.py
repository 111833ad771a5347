"""``alignkit plan``: per-device memory of a recipe, from config.json only, before any weight
is loaded. The arithmetic lives in :mod:`alignkit.planner`; this module parses and prints.

Mounted by ``cli.py`` through :func:`register`, like the model tools in
``evaluation/rm_cli.py``.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from alignkit.planner import (
    RECIPES,
    TRANSIENT_PHASES,
    GiB,
    Plan,
    PlanError,
    PlanInput,
    parse_size,
    plan_memory,
    read_config,
    shape_from_config,
    suggestions,
)

PHASE_TITLES = {
    "persistent": "held throughout",
    "grads": "gradients (micro-batches and step)",
    "train": "training micro-batch",
    "step": "optimizer step",
    "generate": "generation",
    "score": "rollout scoring",
}


def plan_command(
    model: str = typer.Option(..., "--model", "-m", help="Model folder or its config.json."),
    recipe: str = typer.Option(
        ..., "--recipe", "-r", help="sft | reward | dpo | grpo | ppo | safe-rlhf."
    ),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters (all-linear)."),
    lora_r: int = typer.Option(16, "--lora-r", help="LoRA rank."),
    zero: int = typer.Option(0, "--zero", help="ZeRO stage 0-3 (0 = DDP; 3 = FSDP full shard)."),
    fsdp: bool = typer.Option(False, "--fsdp", help="FSDP full sharding (same as --zero 3)."),
    gpus: int = typer.Option(1, "--gpus", help="Devices the model is sharded over."),
    batch_size: int = typer.Option(
        1, "--batch-size", help="Sequences (DPO: pairs) per device micro-batch."
    ),
    seq_len: int = typer.Option(2048, "--seq-len", help="Tokens per sequence (prompt + response)."),
    prompt_len: int = typer.Option(
        0, "--prompt-len", help="SFT/DPO: prompt tokens (no loss, no logits)."
    ),
    gen_batch: int = typer.Option(
        None, "--gen-batch", help="RL: sequences generated at once (default --batch-size)."
    ),
    dtype: str = typer.Option(
        "bf16", "--dtype", help="bf16 | fp16 (mixed precision, fp32 master) | fp32."
    ),
    gpu_memory: str = typer.Option("80GiB", "--gpu-memory", help="Memory of one device."),
    gradient_checkpointing: bool = typer.Option(
        False, "--gradient-checkpointing", help="Recompute activations in backward."
    ),
    reward_model: str = typer.Option(
        None, "--reward-model", help="RL: reward/cost model folder if its architecture differs."
    ),
    reward_function: bool = typer.Option(
        False, "--reward-function", help="RL: the reward is a Python function (no reward model)."
    ),
    reference: str = typer.Option(
        "precompute", "--reference", help="DPO: precompute | live (a frozen copy in memory)."
    ),
    shared_prompt: bool = typer.Option(
        True,
        "--shared-prompt/--padded-pairs",
        help="DPO: a pair's prompt computed once (data.shared_prompt, the default) or per row.",
    ),
    overhead: str = typer.Option(
        "1GiB", "--overhead", help="CUDA context, NCCL buffers, allocator slack."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """How much memory a recipe needs per device, and whether it fits, from config.json only."""
    from alignkit.cli import run_guarded

    def go() -> None:
        from alignkit.config import ConfigError

        try:
            shape = shape_from_config(read_config(model))
            scalar = shape_from_config(read_config(reward_model)) if reward_model else None
            if reference not in ("precompute", "live"):
                raise PlanError(f"--reference {reference!r}: precompute or live")
            inp = PlanInput(
                recipe=recipe,
                lora=lora,
                lora_r=lora_r,
                zero=3 if fsdp else zero,
                fsdp=fsdp,
                gpus=gpus,
                batch_size=batch_size,
                seq_len=seq_len,
                prompt_len=prompt_len,
                gen_batch=gen_batch,
                dtype=dtype,
                gradient_checkpointing=gradient_checkpointing,
                reference=reference,  # type: ignore[arg-type]
                shared_prompt=shared_prompt,
                reward_model=not reward_function,
                gpu_memory=parse_size(gpu_memory),
                overhead=parse_size(overhead),
            )
            plan = plan_memory(shape, inp, scalar)
        except PlanError as e:
            raise ConfigError(str(e)) from None
        if as_json:
            typer.echo(json.dumps(plan_as_dict(plan, shape.params), indent=2))
        else:
            print_plan(plan, model, shape.params)

    run_guarded(go)


def plan_as_dict(plan: Plan, params: int) -> dict[str, Any]:
    return {
        "params": params,
        "items": [
            {"name": i.name, "bytes": i.bytes, "phase": i.phase, "formula": i.formula}
            for i in plan.items
        ],
        "peak_bytes": plan.peak,
        "needed_bytes": plan.needed,
        "gpu_memory_bytes": plan.inp.gpu_memory,
        "fits": plan.fits,
        "largest": plan.largest.name,
    }


def print_plan(plan: Plan, model: str, params: int) -> None:
    from rich.console import Console
    from rich.table import Table

    inp, out = plan.inp, Console()
    layout = "FSDP" if inp.fsdp else f"ZeRO-{inp.zero}" if inp.zero else "DDP (replicated)"
    out.print(
        f"[bold]{inp.recipe}[/] on {model}: {params / 1e9:.3g} B parameters, {inp.dtype}, "
        f"{layout} over {inp.gpus} device(s), micro-batch {inp.batch_size} × {inp.seq_len} tokens"
        + (", LoRA r=" + str(inp.lora_r) if inp.lora else "")
        + (", gradient checkpointing" if inp.gradient_checkpointing else ""),
        highlight=False,
    )
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("per device")
    table.add_column("GiB", justify="right")
    table.add_column("formula", style="dim")
    for phase in ("persistent", "grads", *TRANSIENT_PHASES):
        rows = [i for i in plan.items if i.phase == phase]
        if not rows:
            continue
        own = sum(i.bytes for i in rows)
        table.add_row(f"[cyan]{PHASE_TITLES[phase]}[/]", f"[cyan]{own / GiB:.2f}[/]", "")
        for i in rows:
            table.add_row("  " + i.name, f"{i.bytes / GiB:.2f}", i.formula)
    out.print(table)
    out.print(
        f"peak = held throughout + the largest phase (training and the optimizer step also "
        f"hold the gradients) = {plan.peak / GiB:.2f} GiB; "
        f"+ {inp.overhead / GiB:.2f} GiB overhead = {plan.needed / GiB:.2f} GiB "
        f"of {inp.gpu_memory / GiB:.0f} GiB",
        highlight=False,
    )
    big = plan.largest
    if plan.fits:
        spare = (inp.gpu_memory - plan.needed) / GiB
        out.print(
            f"[green]fits[/] with {spare:.1f} GiB to spare; largest item: {big.name} ({big.bytes / GiB:.2f} GiB)"
        )
        return
    out.print(
        f"[bold red]does not fit[/]: needs {plan.needed / GiB:.1f} GiB > {inp.gpu_memory / GiB:.0f} GiB; "
        f"largest item: {big.name} ({big.bytes / GiB:.2f} GiB)"
    )
    tips = suggestions(plan)
    if tips:
        out.print("try: " + "; ".join(tips))


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)


__all__ = ["RECIPES", "plan_as_dict", "plan_command", "print_plan", "register"]
