"""Memory planner: what a recipe will hold per device, from a model's config.json alone.

``alignkit plan`` answers "will it fit?" before any weight is loaded. Every number below is a
pure function of the architecture (read from config.json), the recipe and the parallel layout;
docs/scale.md derives each formula and tests/integration/test_planner_memory.py compares the
estimate with the memory a few real training steps take.

Notation: P parameters of a model, s bytes per element of the compute dtype (bf16: 2, fp32: 4),
N devices, ZeRO stage z, T tokens in a micro-batch (B sequences × L tokens; ×2 for DPO's chosen
and rejected rows), h hidden size, I MLP width, V vocabulary, n_h / n_kv attention / key-value
heads of size d, ℓ layers.

* **trainable model** (policy, critic): weights P·s, gradients P·s, optimizer P·(8 + m) with
  AdamW's two fp32 moments and, for 16-bit training, an fp32 master copy (m = 4; m = 0 in
  fp32) — the 16 bytes per parameter of mixed-precision Adam. ZeRO-1 divides the optimizer
  state by N, ZeRO-2 also the gradients, ZeRO-3 / FSDP also the weights (then one layer is
  gathered at a time, twice for prefetch).
* **LoRA**: the base weights are frozen (P·s); the adapters (r·(in + out) per adapted matrix,
  kept in fp32 by peft) carry the weights, gradients and moments: 16 bytes per adapter
  parameter. The reference model is the base with the adapter off: no second copy.
* **frozen models** (reference, reward, cost): P·s each, whole on every device.
* **activations** saved for backward, per token and layer (SDPA/flash attention, which keeps
  no L×L scores): a_layer = 5h + (3n_h + 2n_kv)·d + n_h + 2 + 4I (gated MLP; 2I for a plain
  one) elements; plus 3h per token for the final norm and the LM-head input. With gradient
  checkpointing only each block's input (h per token) is kept; one block is recomputed at a
  time in backward, after the loss's logits buffers are freed, so the larger of the two counts.
* **logits**: the loss keeps fp32 log-probs of the whole vocabulary and backward adds their
  gradient and the logits' gradient: T_t·V·12 bytes (+2 per element in 16-bit for the bf16
  gradient of the LM head output), T_t the target tokens: SFT and DPO apply the LM head only
  where a label exists (T minus the prompt), RL to every position (T).
* **KV cache** (generation, RL): 2 · ℓ · n_kv · d · s bytes per token for G sequences of
  L tokens; it and the no-grad scoring passes never coexist with training activations.
* **optimizer step**: alignkit's fused AdamW (one and DDP processes) and DeepSpeed's fused
  Adam update in place; under FSDP the sharded parameters take torch's foreach AdamW, which
  computes √v̂ of the whole local shard at once: an fp32 temporary of its size, while the
  gradients are still live.

Peak = persistent (weights, optimizer state) + the largest of the phases that never overlap:
a training micro-batch or the optimizer step (both with the gradients), generation, or the
no-grad scoring passes.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

GiB = 1024**3
# Phases that never overlap in time: a training micro-batch, the optimizer step, generation
# (KV cache) and the no-grad scoring passes of a rollout.
TRANSIENT_PHASES = ("train", "step", "generate", "score")
GRAD_PHASES = ("train", "step")  # gradients exist from the first backward to zero_grad
Recipe = Literal["sft", "reward", "dpo", "grpo", "ppo", "safe-rlhf"]
RECIPES: tuple[str, ...] = ("sft", "reward", "dpo", "grpo", "ppo", "safe-rlhf")
DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2}


class PlanError(ValueError):
    """A user-facing planner problem (unknown architecture field, bad size string ...)."""


# --------------------------------------------------------------------------------------------
# The architecture
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on, read from config.json."""

    model_type: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    gated_mlp: bool = True  # Llama-style gate/up/down; False: GPT-2-style fc/proj
    tied: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    positions: int = 0  # learned position embeddings (GPT-2); 0 for rotary models

    @property
    def attention_params(self) -> int:
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        n = h * q + 2 * h * kv + q * h
        if self.qkv_bias:
            n += q + 2 * kv
        if self.o_bias:
            n += h
        return n

    @property
    def mlp_params(self) -> int:
        h, i = self.hidden, self.intermediate
        if self.gated_mlp:
            return 3 * h * i + (2 * i + h if self.mlp_bias else 0)
        return 2 * h * i + (i + h if self.mlp_bias else 0)

    @property
    def norm_params(self) -> int:
        """Per norm: RMSNorm has a weight; LayerNorm (GPT-2 style) a weight and a bias."""
        return self.hidden if self.gated_mlp else 2 * self.hidden

    @property
    def layer_params(self) -> int:
        return self.attention_params + self.mlp_params + 2 * self.norm_params

    @property
    def params(self) -> int:
        """Parameters of the causal LM: embeddings, ℓ blocks, final norm, untied LM head."""
        embed = self.vocab * self.hidden + self.positions * self.hidden
        head = 0 if self.tied else self.vocab * self.hidden
        return embed + self.layers * self.layer_params + self.norm_params + head

    @property
    def scalar_params(self) -> int:
        """A reward / value / cost model: the backbone without the LM head, plus h → 1."""
        return self.params - (0 if self.tied else self.vocab * self.hidden) + self.hidden

    def lora_params(self, r: int) -> int:
        """peft ``target_modules='all-linear'``: every block matrix gets r·(in + out)."""
        h, q, kv, i = (
            self.hidden,
            self.heads * self.head_dim,
            self.kv_heads * self.head_dim,
            self.intermediate,
        )
        if self.gated_mlp:
            per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        else:  # GPT-2: fused c_attn (h → 3h), c_proj, c_fc, mlp c_proj
            per_layer = (h + q + 2 * kv) + (q + h) + (h + i) + (i + h)
        return self.layers * r * per_layer

    def activation_elems_per_token_layer(self) -> int:
        """Elements saved for backward per token in one block (see the module docstring)."""
        h, d = self.hidden, self.head_dim
        mlp = 4 * self.intermediate if self.gated_mlp else 2 * self.intermediate
        return 5 * h + (3 * self.heads + 2 * self.kv_heads) * d + self.heads + 2 + mlp


def _get(cfg: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:
        v = cfg.get(n)
        if v is not None:
            return v
    return default


def shape_from_config(cfg: Mapping[str, Any]) -> ModelShape:
    """The shape of a Hugging Face causal LM from its config dict (Llama, Qwen2, Mistral,
    Gemma, Phi-3, GPT-2 and their relatives; multimodal configs use their text_config)."""
    if isinstance(cfg.get("text_config"), Mapping):
        cfg = {**cfg["text_config"], "model_type": cfg.get("model_type", "")}
    model_type = str(cfg.get("model_type", ""))
    hidden = _get(cfg, "hidden_size", "n_embd", "d_model")
    layers = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _get(cfg, "num_attention_heads", "n_head")
    vocab = _get(cfg, "vocab_size")
    missing = [
        n
        for n, v in (
            ("hidden_size", hidden),
            ("num_hidden_layers", layers),
            ("num_attention_heads", heads),
            ("vocab_size", vocab),
        )
        if not isinstance(v, int)
    ]
    if missing:
        raise PlanError(f"config.json ({model_type or 'unknown model'}) lacks {', '.join(missing)}")
    gpt2_like = "n_embd" in cfg or model_type in ("gpt2", "gpt_bigcode", "gpt_neox", "opt")
    kv = _get(cfg, "num_key_value_heads", "n_head_kv", default=None)
    if kv is None:
        kv = 1 if cfg.get("multi_query") else heads
    head_dim = _get(cfg, "head_dim", default=None) or hidden // heads
    inter = _get(cfg, "intermediate_size", "n_inner", "ffn_dim", default=None) or 4 * hidden
    return ModelShape(
        model_type=model_type,
        vocab=int(vocab),
        hidden=int(hidden),
        layers=int(layers),
        heads=int(heads),
        kv_heads=int(kv),
        head_dim=int(head_dim),
        intermediate=int(inter),
        gated_mlp=not gpt2_like,
        tied=bool(cfg.get("tie_word_embeddings", gpt2_like)),
        qkv_bias=gpt2_like or bool(cfg.get("attention_bias")) or model_type.startswith("qwen2"),
        o_bias=gpt2_like or bool(cfg.get("attention_bias")),
        mlp_bias=gpt2_like or bool(cfg.get("mlp_bias")),
        positions=int(_get(cfg, "n_positions", default=0)) if gpt2_like else 0,
    )


def read_config(path: str | Path) -> dict[str, Any]:
    """config.json of a model folder (or the file itself), with the architecture's defaults
    filled in by transformers' config class when it knows the model type. Reads no weights."""
    p = Path(path)
    file = p / "config.json" if p.is_dir() else p
    if not file.is_file():
        raise PlanError(f"{path}: no config.json (pass a model folder or its config.json)")
    raw = json.loads(file.read_text())
    try:
        from transformers import AutoConfig

        full = AutoConfig.for_model(**raw).to_dict()
        return {**full, **raw}
    except Exception:  # unknown or remote-code architecture: the file's own fields
        return raw


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanInput:
    recipe: str = "sft"
    lora: bool = False
    lora_r: int = 16
    zero: int = 0  # 0 DDP, 1, 2, 3 (= FSDP full shard)
    fsdp: bool = False  # stage 3 by FSDP rather than DeepSpeed (its optimizer step differs)
    gpus: int = 1
    batch_size: int = 1  # sequences (pairs for DPO) per device micro-batch
    seq_len: int = 2048  # prompt + response tokens
    prompt_len: int = 0  # SFT/DPO: tokens without a loss (their logits are never built)
    gen_batch: int | None = None  # sequences generated at once (RL); default batch_size
    dtype: str = "bf16"  # compute precision; 16-bit means mixed precision with fp32 master
    gradient_checkpointing: bool = False
    reference: Literal["precompute", "live"] = "precompute"  # DPO
    shared_prompt: bool = True  # DPO: prompt once per pair (data.shared_prompt), not per row
    reward_model: bool = True  # RL: False when the reward is a Python function or oracle
    gpu_memory: int = 80 * GiB
    overhead: int = 1 * GiB  # CUDA context, NCCL buffers, allocator slack


@dataclass(frozen=True)
class Item:
    name: str
    bytes: int
    phase: Literal["persistent", "grads", "train", "step", "generate", "score"]
    formula: str


@dataclass
class Plan:
    inp: PlanInput
    items: list[Item] = field(default_factory=list)

    def phase_total(self, phase: str) -> int:
        """Bytes of a phase; gradients live through both the micro-batches and the step."""
        own = sum(i.bytes for i in self.items if i.phase == phase)
        return own + (self.phase_total("grads") if phase in GRAD_PHASES else 0)

    @property
    def peak(self) -> int:
        transient = max(self.phase_total(p) for p in TRANSIENT_PHASES)
        return self.phase_total("persistent") + transient

    @property
    def needed(self) -> int:
        return self.peak + self.inp.overhead

    @property
    def fits(self) -> bool:
        return self.needed <= self.inp.gpu_memory

    @property
    def largest(self) -> Item:
        return max(self.items, key=lambda i: i.bytes)


def models_for(
    recipe: str, lora: bool, reference: str = "precompute", reward_model: bool = True
) -> list[tuple[str, str, bool]]:
    """(name, kind, trainable) of every model the recipe holds in memory during training;
    kind ``lm`` or ``scalar`` (backbone + h → 1 head)."""
    if recipe not in RECIPES:
        raise PlanError(f"--recipe {recipe!r}: one of {', '.join(RECIPES)}")
    if recipe == "reward":
        return [("reward model", "scalar", True)]
    out = [("policy", "lm", True)]
    if recipe == "dpo":
        # reference=precompute (the default) scores the data once before training; a LoRA
        # policy's reference is its base with the adapter off.
        if reference == "live" and not lora:
            out.append(("reference", "lm", False))
        return out
    if recipe == "sft":
        return out
    if not lora:
        out.append(("reference", "lm", False))
    if reward_model:
        out.append(("reward model", "scalar", False))
    if recipe in ("ppo", "safe-rlhf"):
        out.append(("critic", "scalar", True))
    if recipe == "safe-rlhf":
        out += [("cost model", "scalar", False), ("cost critic", "scalar", True)]
    return out


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def trainable_state(name: str, params: int, s: int, zero: int, n: int) -> list[Item]:
    """Weights, gradients and AdamW state of a trained model under ZeRO stage ``zero``."""
    mixed = s < 4
    opt_per_param = 8 + (4 if mixed else 0)
    shard = lambda stage: n if zero >= stage else 1  # noqa: E731
    items = [
        Item(
            f"{name}: weights",
            math.ceil(params * s / shard(3)),
            "persistent",
            f"P·s{'/N' if zero >= 3 else ''} = {params:,}·{s}",
        ),
        Item(
            f"{name}: optimizer state",
            math.ceil(params * opt_per_param / shard(1)),
            "persistent",
            f"P·{opt_per_param}{'/N' if zero >= 1 else ''} (AdamW m, v{' + fp32 master' if mixed else ''})",
        ),
        Item(
            f"{name}: gradients",
            math.ceil(params * s / shard(2)),
            "grads",
            f"P·s{'/N' if zero >= 2 else ''}",
        ),
    ]
    return items


def plan_memory(shape: ModelShape, inp: PlanInput, scalar_shape: ModelShape | None = None) -> Plan:
    """Per-device memory of ``inp.recipe`` on ``shape`` (reward/cost models: ``scalar_shape``,
    default the same architecture). Pure arithmetic, documented in the module docstring."""
    if inp.dtype not in DTYPE_BYTES:
        raise PlanError(f"--dtype {inp.dtype!r}: one of bf16, fp16, fp32")
    if inp.zero not in (0, 1, 2, 3):
        raise PlanError(f"--zero {inp.zero}: one of 0, 1, 2, 3")
    if inp.fsdp and inp.zero != 3:
        raise PlanError(f"--fsdp shards like ZeRO-3; it cannot be combined with --zero {inp.zero}")
    s, n, z = DTYPE_BYTES[inp.dtype], max(1, inp.gpus), inp.zero
    rm = scalar_shape or shape
    plan = Plan(inp)
    models = models_for(inp.recipe, inp.lora, inp.reference, inp.reward_model)
    optimizer_params = 0
    gathered = False
    for name, kind, trainable in models:
        arch = shape if kind == "lm" else rm
        params = arch.params if kind == "lm" else arch.scalar_params
        if not trainable:
            plan.items.append(
                Item(
                    f"{name}: weights (frozen)",
                    params * s,
                    "persistent",
                    f"P·s = {params:,}·{s}, whole on every device",
                )
            )
        elif inp.lora and name == "policy":
            adapters = arch.lora_params(inp.lora_r)
            split = n if z >= 3 else 1  # FSDP / ZeRO-3 shard the frozen base with the rest
            plan.items.append(
                Item(
                    f"{name}: base weights (frozen)",
                    math.ceil(params * s / split),
                    "persistent",
                    f"P·s{'/N' if split > 1 else ''} = {params:,}·{s} (LoRA base)",
                )
            )
            # peft keeps adapters in fp32, so there is no separate master copy.
            plan.items += trainable_state(f"{name}: LoRA adapters", adapters, 4, z, n)
            optimizer_params = max(optimizer_params, adapters // (n if z >= 1 else 1))
        else:
            plan.items += trainable_state(name, params, s, z, n)
            optimizer_params = max(optimizer_params, params // (n if z >= 1 else 1))
        if trainable and z >= 3 and not gathered:
            gathered = True  # trained models take turns, so one gathered block at a time
            plan.items.append(
                Item(
                    f"{name}: gathered layers",
                    2 * arch.layer_params * s,
                    "train",
                    "2·P_layer·s (ZeRO-3/FSDP: current + prefetched block)",
                )
            )

    # Training step: activations and logits of one micro-batch (the largest trained model).
    trained = [(nm, k) for nm, k, t in models if t]
    rows = inp.batch_size * (2 if inp.recipe == "dpo" else 1)
    tokens = rows * inp.seq_len
    size = f"T = {rows}×{inp.seq_len}"
    if inp.recipe == "dpo" and inp.shared_prompt:
        # data.shared_prompt: a pair is one prompt followed by both responses.
        tokens = inp.batch_size * (2 * inp.seq_len - inp.prompt_len)
        size = f"T = {inp.batch_size}×(2·{inp.seq_len} − {inp.prompt_len}) (shared prompt)"
    # SFT and DPO run the LM head only where a label exists (models/logprobs.target_logprobs);
    # the RL loss and scoring passes take every position's logits.
    target_tokens = tokens
    if inp.recipe in ("sft", "dpo"):
        target_tokens = rows * max(1, inp.seq_len - inp.prompt_len)
    logit_bytes = 12 + (2 if s < 4 else 0)
    best: tuple[int, int, str, str] = (0, 0, "", "")
    for name, kind in trained:
        arch = shape if kind == "lm" else rm
        per_layer = arch.activation_elems_per_token_layer()
        logits = target_tokens * arch.vocab * logit_bytes if kind == "lm" else 0
        if inp.gradient_checkpointing:
            # Only block inputs are kept; the loss's logits buffers are freed before the first
            # block is recomputed, so the larger of the two counts, not their sum.
            saved = tokens * (arch.layers + 3) * arch.hidden * s
            extra = max(logits, tokens * per_layer * s)
            how = f"{name}: T·(ℓ + 3)·h·s block inputs (checkpointing), {size}"
            extra_how = f"max(T·V·{logit_bytes} logits, T·a_layer·s one recomputed block)"
        else:
            saved = tokens * (arch.layers * per_layer + 3 * arch.hidden) * s
            extra = logits
            how = f"{name}: T·(ℓ·a_layer + 3h)·s, a_layer = {per_layer}, {size}"
            extra_how = f"T·V·{logit_bytes} (fp32 log-probs, their gradient, the logits' gradient)"
        if saved + extra > best[0] + best[1]:
            best = (saved, extra, how, extra_how)
    plan.items.append(Item("activations", best[0], "train", best[2]))
    if best[1]:
        label = "logits or recomputed block" if inp.gradient_checkpointing else "logits (loss)"
        plan.items.append(Item(label, best[1], "train", best[3]))
    if inp.fsdp:
        plan.items.append(
            Item(
                "optimizer step temporaries",
                optimizer_params * 4,
                "step",
                "P_shard·4: foreach AdamW on FSDP's DTensors holds √v̂ of the whole shard",
            )
        )
    if inp.recipe in ("grpo", "ppo", "safe-rlhf"):
        g = inp.gen_batch or inp.batch_size
        kv = g * inp.seq_len * shape.layers * 2 * shape.kv_heads * shape.head_dim * s
        plan.items.append(
            Item("KV cache (generation)", kv, "generate", f"G·L·ℓ·2·n_kv·d·s, G = {g}")
        )
        plan.items.append(
            Item(
                "scoring logits (no grad)",
                tokens * shape.vocab * (s + 8),
                "score",
                "T·V·(s + 8): logits, fp32 copy and log-softmax of old/ref passes",
            )
        )
    return plan


def parse_size(text: str) -> int:
    """'80GiB', '80G', '24 GB', '81920MiB' → bytes (GB and G read as GiB, as GPU specs mean)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise PlanError(f"{text!r}: expected a size like 80GiB, 24GB or 40960MiB")
    unit = {"": 1, "K": 1024, "M": 1024**2, "G": GiB, "T": 1024**4}[m.group(2).upper()]
    return int(float(m.group(1)) * unit)


def suggestions(plan: Plan) -> list[str]:
    """What would shrink the largest items, in the order users usually try them."""
    inp, out = plan.inp, []
    names = " ".join(i.name for i in sorted(plan.items, key=lambda i: -i.bytes)[:3])
    if ("optimizer" in names or "gradients" in names or "weights" in names) and inp.zero < 3:
        out.append(
            f"--zero {min(3, inp.zero + 1)} (shard {'optimizer state' if inp.zero == 0 else 'more'} over --gpus)"
        )
    if not inp.lora and inp.recipe != "reward":
        out.append("--lora (train adapters; the reference becomes the base model)")
    if ("activations" in names or "logits" in names) and not inp.gradient_checkpointing:
        out.append("--gradient-checkpointing (keep one activation per layer)")
    if "activations" in names or "logits" in names or "KV" in names:
        out.append("a smaller --batch-size with train.grad_accum to keep the global batch")
    return out


__all__ = [
    "GiB",
    "Item",
    "ModelShape",
    "Plan",
    "PlanError",
    "PlanInput",
    "models_for",
    "parse_size",
    "plan_memory",
    "read_config",
    "shape_from_config",
    "suggestions",
]
