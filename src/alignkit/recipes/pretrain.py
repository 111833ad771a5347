"""Causal-LM pretraining: a new model from an architecture config (or continued training).

Used by the sandbox to make the unaligned base model, and by users for continued pretraining
on domain text. The corpus is tokenised once into a stream cut into ``data.max_length``
chunks; every token carries loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignkit.config import PretrainConfig, PretrainModelInit
from alignkit.data.readers import DataError, read_records
from alignkit.data.tokenize import tokenize_lm
from alignkit.engine.distributed import Dist
from alignkit.engine.loop import Trainer, steps_for
from alignkit.models.load import (
    count_parameters,
    load_causal_lm,
    load_tokenizer,
    save_hf_folder,
)
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


def new_model(init: PretrainModelInit, tokenizer: Any) -> Any:
    """A randomly initialised model whose vocabulary and special ids match ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=init.hidden_size,
        intermediate_size=init.intermediate_size,
        num_hidden_layers=init.num_hidden_layers,
        num_attention_heads=init.num_attention_heads,
        num_key_value_heads=init.num_key_value_heads or init.num_attention_heads,
        max_position_embeddings=init.max_position_embeddings,
        tie_word_embeddings=init.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def run_pretrain(cfg: PretrainConfig) -> Path:
    timer = Timer()
    set_seed(cfg.train.seed)
    dist = Dist.create()
    out = prepare_run_dir(cfg.train.output_dir, cfg, dist.is_main)
    if not cfg.data.path:
        raise DataError("data.path is empty; point it at a text corpus (.txt or rows with 'text')")
    records = read_records(cfg.data.path, "lm", cfg.data.split, cfg.data.limit)

    if cfg.model.path:
        model, tokenizer = load_causal_lm(cfg.model)
    else:
        if not cfg.tokenizer:
            raise DataError("set tokenizer=<folder> (or model.path) to pretrain a new model")
        if cfg.init is None:
            raise DataError("set init.* (the architecture) or model.path")
        tokenizer = load_tokenizer(cfg.tokenizer)
        model = new_model(cfg.init, tokenizer)
    max_length = cfg.data.max_length
    ctx = getattr(model.config, "max_position_embeddings", max_length)
    if max_length > ctx:
        raise DataError(
            f"data.max_length={max_length} exceeds the model's context ({ctx}); lower it"
        )
    examples, stats = tokenize_lm(tokenizer, records, max_length)
    eval_examples = []
    if cfg.data.eval_fraction > 0:
        n_eval = max(1, int(len(examples) * cfg.data.eval_fraction))
        eval_examples, examples = examples[-n_eval:], examples[:-n_eval]
    trainable, total = count_parameters(model)
    dist.print(
        f"[pretrain] {total:,} parameters, {sum(stats.lengths):,} tokens in {len(examples)} chunks"
    )
    windows = Windows(
        len(examples),
        cfg.train.batch_size,
        cfg.train.grad_accum,
        cfg.train.seed,
        make_collator(examples, tokenizer.pad_token_id, False, max_length, dist.device),
        dist,
    )
    trainer = Trainer(
        model,
        cfg.train,
        steps_for(windows.per_epoch, cfg.train),
        out,
        dist,
        run_config=cfg.model_dump(mode="json"),
        desc="pretrain",
    )
    pad_id = tokenizer.pad_token_id
    last = trainer.fit(
        windows,
        lm_step_loss,
        count=lambda b: b.num_targets,
        eval_fn=(
            (lambda m: eval_loss(m, eval_examples, pad_id, cfg.train.batch_size, dist.device))
            if eval_examples
            else None
        ),
        tokens=lambda b: b.num_real_tokens,
    )
    if dist.is_main:
        save_hf_folder(trainer.unwrapped, tokenizer, out)
        write_summary(
            out,
            {
                "recipe": "pretrain",
                "params": total,
                "tokens": sum(stats.lengths),
                "steps": trainer.total_steps,
                "final": last,
                "wall_time_s": round(timer.seconds, 2),
            },
        )
    dist.barrier()
    dist.print(f"[pretrain] saved {out} ({timer.seconds:.1f}s)")
    return out
