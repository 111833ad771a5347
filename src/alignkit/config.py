"""Typed run configuration: pydantic models, YAML files and ``key.sub=value`` overrides.

Every recipe has one config model. A run is one YAML file plus command-line overrides; the
resolved config is validated once, before anything is loaded, and saved next to the outputs so
a run can be reproduced from its folder. Errors name the key and what is allowed.

The CLI help is generated from the same models (:func:`describe_fields`), so a field's
description and default live in exactly one place.
"""

from __future__ import annotations

import contextlib
import types
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """A user-facing configuration problem; the message names the key and the fix."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# --------------------------------------------------------------------------------------------
# Shared sections
# --------------------------------------------------------------------------------------------


class LoraConfig(Section):
    enabled: bool = Field(False, description="Train LoRA adapters (peft) instead of all weights.")
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: Union[str, list[str]] = Field(
        "all-linear",
        description="Modules to adapt: 'all-linear' or a list of module names (e.g. [q_proj, v_proj]).",
    )
    merge_on_save: bool = Field(
        True,
        description="Save merged full weights (an ordinary HF folder) besides the adapter in adapter/.",
    )


class FreezeConfig(Section):
    embeddings: bool = Field(False, description="Freeze the input embeddings.")
    first_n_layers: int = Field(
        0, ge=0, description="Freeze the first N transformer blocks (0 = none)."
    )


class ModelConfig(Section):
    path: str = Field(
        "", description="Local Hugging Face checkpoint folder (config.json + weights + tokenizer)."
    )
    tokenizer: str | None = Field(
        None, description="Tokenizer folder when it differs from model.path."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Weights dtype. 'auto' keeps the checkpoint's; bfloat16 needs hardware support.",
    )
    trust_remote_code: bool = Field(
        False, description="Allow custom modelling code from the checkpoint (runs its Python)."
    )
    allow_pickle: bool = Field(
        False,
        description="Allow pickle (.bin) weights; safetensors only by default (pickle can run code).",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward to save memory."
    )
    attn_implementation: str | None = Field(
        None,
        description="Attention kernel: sdpa, eager, flash_attention_2 (None = library default).",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapters.")
    freeze: FreezeConfig = Field(default_factory=FreezeConfig, description="Frozen parameters.")


class DataConfig(Section):
    path: str = Field("", description="JSONL/JSON/parquet file, or a datasets.save_to_disk folder.")
    split: str | None = Field(None, description="Split to read from a DatasetDict folder.")
    eval_path: str | None = Field(None, description="Held-out file for evaluation loss.")
    eval_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Hold out this fraction of `path` when eval_path is unset."
    )
    max_length: int = Field(1024, ge=2, description="Maximum tokens per example (prompt + answer).")
    truncation: Literal["right", "drop", "error"] = Field(
        "right",
        description=(
            "Too-long examples: 'right' cuts the answer's end, 'drop' skips the record, 'error' "
            "stops. Records whose prompt alone does not fit are always dropped and counted."
        ),
    )
    chat_template: str = Field(
        "auto",
        description=(
            "'auto': the tokenizer's chat template (plain-string prompts become one user turn), "
            "or the built-in default for chat data when the tokenizer has none; 'none': plain "
            "prompt+completion concatenation; 'default': the built-in template; or a Jinja "
            "template string / path to a .jinja file."
        ),
    )
    completion_only_loss: bool = Field(
        True, description="Loss on the answer / assistant turns only (False: on every token)."
    )
    packing: bool = Field(
        False,
        description=(
            "Padding-free packing: examples of a micro-batch share rows of <= max_length "
            "tokens; position ids restart per example and attention never crosses examples."
        ),
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N records (debugging).")


class TrainConfig(Section):
    output_dir: str = Field("runs/out", description="Where checkpoints, metrics and the model go.")
    seed: int = Field(0, description="Seed for data order, initialisation and sampling.")
    epochs: float = Field(1.0, gt=0, description="Passes over the data (fractions allowed).")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    batch_size: int = Field(8, ge=1, description="Examples per micro-batch, per process.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    lr: float = Field(2e-5, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not on norms/biases).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="Linear warm-up share of all steps.")
    warmup_steps: int | None = Field(None, ge=0, description="Warm-up steps (overrides ratio).")
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning-rate decay after warm-up."
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final LR as a share of the peak.")
    max_grad_norm: float | None = Field(
        1.0, description="Clip the global gradient norm (None = no clipping)."
    )
    log_every: int = Field(1, ge=1, description="Log metrics every N optimizer steps.")
    eval_every: int | None = Field(
        None, ge=1, description="Evaluate every N steps (None = at end)."
    )
    save_every: int | None = Field(
        None, ge=1, description="Write a resumable checkpoint every N steps (None = only at end)."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Keep the N most recent checkpoints.")
    resume: Union[bool, str] = Field(
        True,
        description="Resume from the latest complete checkpoint in output_dir (or a given path).",
    )
    report_to: list[Literal["jsonl", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["jsonl"],
        description="Metric sinks; metrics.jsonl is always written.",
    )
    progress: bool = Field(True, description="Show a progress bar with ETA.")
    neftune_alpha: float | None = Field(
        None, ge=0, description="NEFTune embedding-noise alpha (e.g. 5); None = off."
    )

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v


# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


class SFTStage(Section):
    name: str = Field("", description="Stage name (used for its output sub-folder).")
    data: DataConfig = Field(default_factory=DataConfig, description="This stage's data.")
    epochs: float | None = Field(None, gt=0, description="Override train.epochs for this stage.")
    max_steps: int | None = Field(None, ge=1, description="Override train.max_steps.")
    lr: float | None = Field(None, gt=0, description="Override train.lr for this stage.")


class SFTConfig(Section):
    """Supervised fine-tuning on demonstrations (instruction alignment)."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="Model to fine-tune.")
    data: DataConfig = Field(default_factory=DataConfig, description="Demonstrations.")
    stages: list[SFTStage] = Field(
        default_factory=list,
        description=(
            "Sequential fine-tuning: stages run in order, each starting from the previous "
            "stage's weights. Empty = one stage on `data`."
        ),
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="Optimisation.")


class PretrainModelInit(Section):
    architecture: Literal["llama"] = Field("llama", description="Architecture of the new model.")
    hidden_size: int = Field(128, ge=8, description="Hidden size.")
    intermediate_size: int = Field(384, ge=8, description="MLP inner size.")
    num_hidden_layers: int = Field(4, ge=1, description="Transformer blocks.")
    num_attention_heads: int = Field(4, ge=1, description="Attention heads.")
    num_key_value_heads: int | None = Field(None, ge=1, description="KV heads (GQA); None = MHA.")
    max_position_embeddings: int = Field(256, ge=8, description="Context length.")
    tie_word_embeddings: bool = Field(True, description="Share input and output embeddings.")


class PretrainConfig(Section):
    """Causal-LM training from scratch (or continued pretraining) on plain text."""

    tokenizer: str = Field(
        "", description="Tokenizer folder (required when starting from scratch)."
    )
    init: PretrainModelInit | None = Field(
        default_factory=PretrainModelInit,
        description="Architecture of a new model; set model.path instead to continue training.",
    )
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="Existing model (optional)."
    )
    data: DataConfig = Field(
        default_factory=lambda: DataConfig(completion_only_loss=False, packing=True),
        description="Text corpus (`text` field or .txt file).",
    )
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(lr=3e-3, warmup_ratio=0.05, weight_decay=0.0),
        description="Optimisation.",
    )


ConfigT = TypeVar("ConfigT", bound=BaseModel)


# --------------------------------------------------------------------------------------------
# Loading, overrides, errors
# --------------------------------------------------------------------------------------------


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-4"`` → (["train", "lr"], 1e-4). Values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} is not of the form key.sub=value (e.g. train.lr=1e-4)"
        )
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    # "1e-4" is a string to YAML 1.1; users mean a number.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if any(c in value for c in ".eE") else value
    return key.split("."), value


def set_dotted(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node: Any = tree
    for i, k in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, k, keys[: i + 1])]
            continue
        if k not in node or node[k] is None:
            node[k] = {}
        node = node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[_list_index(node, last, keys)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"cannot set {'.'.join(keys)}: {'.'.join(keys[:-1])} is not a section")


def _list_index(node: list[Any], k: str, path: list[str]) -> int:
    if not k.isdigit() or int(k) >= len(node):
        raise ConfigError(
            f"{'.'.join(path)}: index {k!r} out of range for a list of {len(node)} items"
        )
    return int(k)


def load_config(
    model: type[ConfigT], path: str | Path | None = None, overrides: list[str] | None = None
) -> ConfigT:
    """Read a YAML file (optional), apply ``key.sub=value`` overrides, validate into ``model``."""
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        tree = loaded
    named = tree.pop("recipe", None)
    if named is not None:
        from alignkit.configs import all_recipes

        recipes = all_recipes()
        if str(named) not in recipes:
            raise ConfigError(f"{path}: recipe {named!r} unknown; one of {sorted(recipes)}")
        if recipes[str(named)].config is not model:
            raise ConfigError(f"{path} is a {named!r} config; run it with `alignkit {named}`")
    for item in overrides or []:
        keys, value = parse_override(item)
        set_dotted(tree, keys, value)
    return validate(model, tree, source=str(path) if path else "command line")


def validate(model: type[ConfigT], tree: dict[str, Any], source: str = "config") -> ConfigT:
    try:
        return model.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model, source)) from None


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            parent = _section_at(model, [str(p) for p in item["loc"][:-1]])
            allowed = ", ".join(parent.model_fields) if parent else ""
            msg = f"unknown key; allowed keys here: {allowed}"
        elif item["type"] == "literal_error":
            msg = f"{msg} (got {item.get('input')!r})"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def _section_at(model: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    current: Any = model
    for p in path:
        if p.isdigit():
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(p)
        if field is None:
            return None
        current = _inner_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / list[...] annotations, else the annotation itself."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        inner = _inner_model(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """Flatten a config model into (dotted key, type, default, description) rows for --help."""
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        inner = _inner_model(field.annotation)
        is_list_of_models = get_origin(field.annotation) is list
        if isinstance(inner, type) and issubclass(inner, BaseModel) and not is_list_of_models:
            rows.extend(describe_fields(inner, prefix=f"{key}."))
            continue
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            rows.append((key, f"list[{inner.__name__}]", "[]", field.description or ""))
            rows.extend(describe_fields(inner, prefix=f"{key}.N."))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append(
            (key, _type_name(field.annotation), _fmt_default(default), field.description or "")
        )
    return rows


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "|".join(str(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation) if a is not type(None))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "|".join(str(m.value) for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _fmt_default(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "{...}"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return str(list(value))
    return repr(value) if isinstance(value, str) else str(value)


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (saved next to every output for reproducibility)."""
    data = cfg.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)


__all__ = [
    "ConfigError",
    "DataConfig",
    "FreezeConfig",
    "LoraConfig",
    "ModelConfig",
    "PretrainConfig",
    "PretrainModelInit",
    "SFTConfig",
    "SFTStage",
    "TrainConfig",
    "describe_fields",
    "dump_config",
    "load_config",
    "parse_override",
    "validate",
]
