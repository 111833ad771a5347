"""Supervised fine-tuning (instruction alignment), in one or several sequential stages.

Read top to bottom: validate every stage's data, load the model, then for each stage tokenise,
train with the shared loop, and save. Stage k starts from stage k−1's weights; a finished stage
is skipped on rerun (its trained weights are reloaded), so a crash in stage 2 does not redo 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from alignkit.config import ConfigError, DataConfig, SFTConfig, SFTStage, TrainConfig
from alignkit.data.readers import read_records
from alignkit.data.tokenize import Example, TokenizeStats, tokenize_demonstrations
from alignkit.engine.checkpoint import trainable_state
from alignkit.engine.distributed import Dist
from alignkit.engine.loop import Trainer, steps_for
from alignkit.engine.tracking import read_metrics
from alignkit.models.load import count_parameters, load_causal_lm, load_tokenizer, save_hf_folder
from alignkit.models.neftune import neftune
from alignkit.recipes.common import (
    Timer,
    Windows,
    eval_loss,
    lm_step_loss,
    make_collator,
    prepare_run_dir,
    set_seed,
    write_summary,
)


def tokenize_stage(
    tokenizer: Any, data: DataConfig, seed: int
) -> tuple[list[Example], list[Example], TokenizeStats]:
    """Read, validate and tokenise one stage's train (and eval) data."""
    records = read_records(data.path, "sft", data.split, data.limit)
    examples, stats = tokenize_demonstrations(
        tokenizer,
        records,
        data.max_length,
        data.truncation,
        data.chat_template,
        data.completion_only_loss,
        source=data.path,
    )
    if data.eval_path:
        eval_records = read_records(data.eval_path, "sft")
        eval_examples, _ = tokenize_demonstrations(
            tokenizer,
            eval_records,
            data.max_length,
            data.truncation,
            data.chat_template,
            data.completion_only_loss,
            source=data.eval_path,
        )
    elif data.eval_fraction > 0:
        n_eval = max(1, int(len(examples) * data.eval_fraction))
        import random

        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        held = set(order[:n_eval])
        eval_examples = [e for i, e in enumerate(examples) if i in held]
        examples = [e for i, e in enumerate(examples) if i not in held]
    else:
        eval_examples = []
    return examples, eval_examples, stats


def stage_train_config(train: TrainConfig, stage: SFTStage) -> TrainConfig:
    updates: dict[str, Any] = {}
    if stage.epochs is not None:
        updates["epochs"] = stage.epochs
        updates["max_steps"] = None
    if stage.max_steps is not None:
        updates["max_steps"] = stage.max_steps
    if stage.lr is not None:
        updates["lr"] = stage.lr
    return train.model_copy(update=updates)


def run_sft(cfg: SFTConfig) -> Path:
    """Fine-tune ``cfg.model`` on demonstrations; returns the output folder."""
    timer = Timer()
    set_seed(cfg.train.seed)
    dist = Dist.create()
    out = prepare_run_dir(cfg.train.output_dir, cfg, dist.is_main)
    stages = cfg.stages or [SFTStage(name="sft", data=cfg.data)]
    for k, st in enumerate(stages):
        if not st.data.path:
            key = f"stages.{k}.data.path" if cfg.stages else "data.path"
            raise ConfigError(f"{key} is empty; point it at a demonstrations file")

    # Validate and tokenise all stages before loading weights: bad data fails in seconds.
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path, cfg.model.trust_remote_code)
    tokenized = [tokenize_stage(tokenizer, st.data, cfg.train.seed) for st in stages]
    for (_, _, stats), st in zip(tokenized, stages, strict=True):
        dist.print(
            f"[sft] stage {st.name or 'sft'}: {stats.kept}/{stats.records} examples "
            f"(truncated {stats.truncated}, dropped {stats.dropped_too_long + stats.dropped_prompt_too_long})"
        )

    model, tokenizer = load_causal_lm(cfg.model)
    trainable, total = count_parameters(model)
    dist.print(f"[sft] trainable parameters: {trainable:,} / {total:,}")
    pad_id = tokenizer.pad_token_id
    summary: dict[str, Any] = {
        "recipe": "sft",
        "stages": [],
        "trainable_params": trainable,
        "world_size": dist.world_size,
    }
    multi = len(stages) > 1

    for k, (st, (examples, eval_examples, stats)) in enumerate(zip(stages, tokenized, strict=True)):
        name = st.name or f"stage{k}"
        stage_dir = out / f"stage-{k}-{name}" if multi else out
        done_marker = stage_dir / "final_state.safetensors"
        if multi and done_marker.exists() and cfg.train.resume is not False:
            _load_trainable(model, done_marker)
            dist.print(f"[sft] stage {name}: already trained, weights reloaded from {stage_dir}")
            continue
        train_cfg = stage_train_config(cfg.train, st)
        windows = Windows(
            len(examples),
            train_cfg.batch_size,
            train_cfg.grad_accum,
            train_cfg.seed + k,
            make_collator(examples, pad_id, st.data.packing, st.data.max_length, dist.device),
            dist,
        )
        total_steps = steps_for(windows.per_epoch, train_cfg)
        trainer = Trainer(
            model,
            train_cfg,
            total_steps,
            stage_dir,
            dist,
            run_config=cfg.model_dump(mode="json"),
            desc=f"sft:{name}" if multi else "sft",
        )

        def evaluate(
            m: Any, ex: list[Example] = eval_examples, bs: int = train_cfg.batch_size
        ) -> dict[str, float]:
            return eval_loss(m, ex, pad_id, bs, dist.device)

        with neftune(trainer.unwrapped, train_cfg.neftune_alpha):
            last = trainer.fit(
                windows,
                lm_step_loss,
                count=lambda b: b.num_targets,
                eval_fn=evaluate if eval_examples else None,
                tokens=lambda b: b.num_real_tokens,
            )
        model = trainer.unwrapped
        if multi and dist.is_main:
            save_file(trainable_state(model), str(stage_dir / ".final_state.tmp"))
            (stage_dir / ".final_state.tmp").replace(done_marker)
            save_hf_folder(model, tokenizer, stage_dir, cfg.model.lora.merge_on_save)
        summary["stages"].append(
            {"name": name, "steps": total_steps, "data": stats.as_dict(), "final": last}
        )

    # Every process joins the save: under FSDP / ZeRO-3 the weights are gathered from shards.
    dist.save_pretrained(model, tokenizer, out, cfg.model.lora.merge_on_save)
    if dist.is_main:
        if multi:
            _merge_stage_metrics(out, stages)
        summary["wall_time_s"] = round(timer.seconds, 2)
        write_summary(out, summary)
    dist.barrier()
    dist.print(f"[sft] saved {out} ({timer.seconds:.1f}s)")
    return out


def _load_trainable(model: Any, path: Path) -> None:
    state = load_file(str(path))
    params = dict(model.named_parameters())
    for n, t in state.items():
        params[n].data.copy_(t)


def _merge_stage_metrics(out: Path, stages: list[SFTStage]) -> None:
    """One metrics.jsonl for the whole run, each row tagged with its stage."""
    import json

    lines = []
    for k, st in enumerate(stages):
        name = st.name or f"stage{k}"
        for row in read_metrics(out / f"stage-{k}-{name}" / "metrics.jsonl"):
            lines.append(json.dumps({"stage": name, **row}))
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
