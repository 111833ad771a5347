"""Load local Hugging Face checkpoints safely; LoRA and freezing; saving ordinary HF folders.

Safety defaults (DESIGN.md): weights load from safetensors only, and checkpoint-supplied Python
(``trust_remote_code``) never runs, unless the config says so explicitly.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignkit.config import FreezeConfig, LoraConfig, ModelConfig

log = logging.getLogger("alignkit")


def _quiet_hub_progress() -> None:
    """One progress bar per weight file load/save is noise in every log; ours has ETA."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


_quiet_hub_progress()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelError(ValueError):
    """A user-facing model loading problem."""


def _check_folder(path: str, allow_pickle: bool) -> Path:
    p = Path(path)
    if not path:
        raise ModelError("model.path is empty; set it to a local Hugging Face checkpoint folder")
    if not p.is_dir():
        raise ModelError(
            f"model.path {p} is not a folder (models load from local folders; no hub download)"
        )
    if not (p / "config.json").is_file():
        raise ModelError(f"{p}: no config.json; is this a Hugging Face checkpoint folder?")
    has_st = any(p.glob("*.safetensors"))
    has_pickle = any(p.glob("*.bin")) or any(p.glob("*.pt"))
    if not has_st and has_pickle and not allow_pickle:
        raise ModelError(
            f"{p}: only pickle weights (.bin) found; pickle files can run arbitrary code. Convert "
            "to safetensors, or set model.allow_pickle=true if you trust the source"
        )
    if not has_st and not has_pickle:
        raise ModelError(f"{p}: no weights (*.safetensors) found")
    return p


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir():
        raise ModelError(f"tokenizer folder {p} not found")
    try:
        tok = AutoTokenizer.from_pretrained(str(p), trust_remote_code=trust_remote_code)
    except Exception as e:  # transformers raises many types here; give one message
        raise ModelError(f"{p}: could not load a tokenizer ({e})") from None
    ensure_pad_token(tok)
    return tok


def ensure_pad_token(tok: Any) -> None:
    """Batching needs a pad token. Masks, not ids, mark padding everywhere in alignkit, so the
    EOS token can safely double as pad; say so rather than fail."""
    if tok.pad_token_id is not None:
        return
    if tok.eos_token_id is None:
        raise ModelError(
            "the tokenizer has neither a pad nor an EOS token; add one to tokenizer_config.json "
            "(e.g. tokenizer.add_special_tokens({'pad_token': '<pad>'}) and save)"
        )
    tok.pad_token = tok.eos_token
    log.info("tokenizer has no pad token; using EOS (%r) for padding", tok.eos_token)


def resolve_dtype(name: str) -> torch.dtype | str:
    if name == "auto":
        return "auto"
    dtype = DTYPES[name]
    if dtype == torch.bfloat16 and not torch.cuda.is_available():
        log.info("bfloat16 on CPU: supported but slow on most CPUs")
    return dtype


def load_causal_lm(cfg: ModelConfig, for_training: bool = True) -> tuple[nn.Module, Any]:
    """Load (model, tokenizer) from a local folder, apply freezing and LoRA from ``cfg``."""
    from transformers import AutoModelForCausalLM

    p = _check_folder(cfg.path, cfg.allow_pickle)
    tok = load_tokenizer(cfg.tokenizer or cfg.path, cfg.trust_remote_code)
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(cfg.dtype),
        "trust_remote_code": cfg.trust_remote_code,
        "use_safetensors": None if cfg.allow_pickle else True,
    }
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(str(p), **kwargs)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ModelError(
                f"{p}: the checkpoint needs its own modelling code; set "
                "model.trust_remote_code=true only if you trust it"
            ) from None
        raise
    check_vocab(model, tok, str(p))
    if for_training:
        model = prepare_for_training(model, cfg)
    return model, tok


def check_vocab(model: nn.Module, tok: Any, where: str) -> None:
    emb = model.get_input_embeddings()
    if emb is not None and len(tok) > emb.num_embeddings:
        raise ModelError(
            f"{where}: tokenizer has {len(tok)} tokens but the model embeds only "
            f"{emb.num_embeddings}; the tokenizer does not belong to this model"
        )


def disable_dropout(model: nn.Module) -> None:
    """RLHF and preference methods assume deterministic forwards (ρ = 1 at the first step)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Non-reentrant activation checkpointing under either name: transformers >= 5.25 calls it
    ``activation_checkpointing_enable`` (the old name warns and goes in v6), earlier releases
    only have ``gradient_checkpointing_enable``."""
    new = getattr(model, "activation_checkpointing_enable", None)
    if new is not None:
        new(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def prepare_for_training(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
        model.config.use_cache = False
    freeze(model, cfg.freeze)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    return model


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks, found structurally (works for Llama, Qwen2, GPT-2 ...)."""
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layer", None)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ModelError(f"could not find the {n} transformer blocks of {type(model).__name__}")


def freeze(model: nn.Module, cfg: FreezeConfig) -> None:
    if cfg.embeddings:
        for p_ in model.get_input_embeddings().parameters():
            p_.requires_grad_(False)
    if cfg.first_n_layers:
        blocks = transformer_blocks(model)
        if cfg.first_n_layers > len(blocks):
            raise ModelError(
                f"model.freeze.first_n_layers={cfg.first_n_layers} but the model has "
                f"{len(blocks)} layers"
            )
        for block in list(blocks)[: cfg.first_n_layers]:
            for p_ in block.parameters():
                p_.requires_grad_(False)


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )
    # Frozen-layer choices apply to the base weights; peft freezes all base weights anyway.
    return get_peft_model(model, peft_cfg)


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def save_hf_folder(
    model: nn.Module,
    tokenizer: Any,
    out: str | Path,
    merge_lora: bool = True,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save an ordinary Hugging Face folder atomically (tmp folder, then rename).

    LoRA models: the adapter goes to ``adapter/`` and, with ``merge_lora``, merged full
    weights go to the folder itself so ``AutoModelForCausalLM.from_pretrained`` loads it.

    ``state_dict``: the weights to write instead of ``model``'s own, for a model whose
    parameters in memory are shards (FSDP, ZeRO-3); see ``Dist.save_pretrained``.
    """
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    unwrapped = getattr(model, "module", model)
    if is_peft(unwrapped):
        unwrapped.save_pretrained(str(tmp / "adapter"), state_dict=state_dict)
        if merge_lora:
            import copy

            whole = (
                copy.deepcopy(unwrapped) if state_dict is None else _rebuild(unwrapped, state_dict)
            )
            whole.merge_and_unload().save_pretrained(str(tmp), safe_serialization=True)
    else:
        unwrapped.save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    # Keep what the run already wrote into `out` (config, metrics, checkpoints, stage folders);
    # replace only the model files.
    if out.exists():
        for f in out.iterdir():
            target = tmp / f.name
            if not target.exists():
                os.replace(f, target)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    return out


def _rebuild(peft_model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A whole copy of a LoRA model from its gathered weights, so peft can merge the adapter
    (the sharded model in memory cannot be copied: each process holds a slice)."""
    import copy

    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = next(iter(state_dict.values())).dtype
    base = AutoModelForCausalLM.from_config(peft_model.get_base_model().config, dtype=dtype)
    name = peft_model.active_adapter
    whole = get_peft_model(base, copy.deepcopy(peft_model.peft_config[name]), adapter_name=name)
    whole.load_state_dict(state_dict, strict=True)
    return whole
