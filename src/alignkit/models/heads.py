"""Scalar-head models: reward, cost and value models on a causal-LM backbone.

A reward model is the transformer of a causal LM (without its LM head) plus one linear layer
hidden → 1 applied at every position. :meth:`ScalarHeadModel.forward` returns those per-token
values (what a PPO critic needs); :meth:`ScalarHeadModel.score` reads the value at the last
attended token of each row (what a reward or cost model returns). The last attended token is
found from the attention mask, never from token ids: looking for the first pad id breaks as
soon as pad = eos (the usual setting for Llama-style tokenizers) and with left padding.

Saved folders are ordinary Hugging Face folders laid out exactly like
``XForSequenceClassification`` (backbone weights under the model's ``base_model_prefix``, the
head as ``score.weight``, ``num_labels = 1``, ``pad_token_id`` set), so
``AutoModelForSequenceClassification.from_pretrained`` loads them unchanged wherever
transformers has such a class, and vLLM/TRL tools that expect that layout can use them. What
alignkit needs to score text again (the head kind, the chat-template policy, the maximum length)
is kept in ``config.json`` under ``alignkit``.

Any local causal-LM checkpoint is a valid starting point: its transformer is loaded and a new
head is initialised small (std 1/(hidden+1), as OpenRLHF does), so the first scores are near 0
and the first gradient steps are not dominated by a random offset.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from alignkit.config import LoraConfig, ModelConfig
from alignkit.data.pairs import GroupBatch
from alignkit.models.load import (
    ModelError,
    _check_folder,
    check_vocab,
    disable_dropout,
    enable_activation_checkpointing,
    freeze,
    is_peft,
    load_tokenizer,
    resolve_dtype,
)
from alignkit.models.logprobs import shared_prompt_inputs

HeadKind = Literal["reward", "cost", "value"]
HEAD_KINDS: tuple[str, ...] = ("reward", "cost", "value")
HEAD_KEY = "score"  # the head's name in saved folders, as in XForSequenceClassification
META_KEY = "alignkit"  # config.json key holding what alignkit needs to score text again


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended position of each row → ``[B]`` (long).

    ``argmax`` of position × mask picks the rightmost 1, so right padding, left padding and
    pad = eos all give the right answer. A row with no attended token is a caller bug.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be [batch, seq], got {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    if not bool(mask.any(dim=1).all()):
        raise ValueError("a row of the attention mask is all zeros: nothing to score")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, -1).argmax(dim=1)


def gather_last(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per-token values ``[B, T]`` → the value at each row's last attended token ``[B]``."""
    idx = last_token_index(attention_mask)
    return values.gather(1, idx.unsqueeze(1)).squeeze(1)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first attended token.

    With left padding the default positions (0..T−1) would shift every real token; RoPE is
    shift-invariant but learned absolute positions (GPT-2) are not, so a left-padded row would
    score differently from the same row alone.
    """
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


class LengthTerm(nn.Module):
    """A learned preference b·log(1 + n) for longer responses (n = response tokens).

    Trained beside a reward model (``loss.length_control``): annotators, human or simulated,
    tend to prefer longer answers for their length alone. With this term in the training
    utilities ``r + b·log(1+n)``, that preference is explained by ``b`` instead of being
    learned by the reward, in the spirit of length-controlled win rates (AlpacaEval 2) and
    disentangled rewards (ODIN). It is not part of the saved model: scores are ``r`` alone.

    ``b = rate · θ``: Adam moves any parameter by about the learning rate per step, far too
    slowly for one scalar at reward-model learning rates (2e-5 × 1,000 steps = 0.02), while
    the network could learn length in its place. ``rate = step / lr`` lets ``b`` move about
    ``step`` per optimizer step whatever the learning rate.
    """

    def __init__(self, rate: float = 1.0) -> None:
        super().__init__()
        self.rate = rate
        self.theta = nn.Parameter(torch.zeros(()))

    @property
    def coef(self) -> torch.Tensor:
        return self.theta * self.rate

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.coef * torch.log1p(lengths.to(self.theta.dtype))


class ScalarHeadModel(nn.Module):
    """A causal-LM transformer with a linear hidden → 1 head: reward, cost or value model.

    ``forward`` gives per-token values ``[B, T]`` (float32) for critics; ``score`` gives the
    value at each row's last attended token ``[B]`` for reward and cost models.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Linear | None = None,
        kind: HeadKind = "reward",
        meta: dict[str, Any] | None = None,
        length_term: LengthTerm | None = None,
    ) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"kind must be one of {HEAD_KINDS}, got {kind!r}")
        self.backbone = backbone
        hidden = hidden_size(backbone.config)
        if head is None:
            head = new_head(hidden, next(backbone.parameters()).dtype)
        if head.in_features != hidden or head.out_features != 1:
            raise ModelError(f"head shape {tuple(head.weight.shape)} does not fit hidden {hidden}")
        self.head = head
        self.length_term = length_term  # training-only; never saved with the weights
        self.kind: HeadKind = kind
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def config(self) -> Any:
        """The backbone's transformers config (peft and the checkpoint code read it)."""
        return self.backbone.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-token values ``[B, T]`` in float32 (the head applied at every position)."""
        if position_ids is None and attention_mask is not None:
            position_ids = positions_from_mask(attention_mask)
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.head(hidden).squeeze(-1).float()

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The value at each row's last attended token → ``[B]`` (float32)."""
        return gather_last(self(input_ids, attention_mask), attention_mask)

    # -- saving ----------------------------------------------------------------------------

    def hf_config(self) -> Any:
        """The backbone config rewritten as a one-label sequence classifier."""
        cfg = copy.deepcopy(self.backbone.config)
        cls_name = sequence_classification_class(cfg.model_type)
        cfg.architectures = [cls_name or type(self.backbone).__name__]
        cfg.num_labels = 1
        cfg.problem_type = "regression"
        if self.meta.get("pad_token_id") is not None:
            cfg.pad_token_id = int(self.meta["pad_token_id"])
        setattr(cfg, META_KEY, {"head": self.kind, **self.meta})
        return cfg

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under the names ``XForSequenceClassification`` uses."""
        prefix = getattr(self.backbone, "base_model_prefix", "") or "model"
        state = {f"{prefix}.{k}": v for k, v in self.backbone.state_dict().items()}
        state[f"{HEAD_KEY}.weight"] = self.head.weight
        return {k: v.detach().contiguous() for k, v in state.items()}

    def save_pretrained(
        self,
        path: str | Path,
        safe_serialization: bool = True,
        max_shard_size: int | str = "5GB",
        **_: Any,
    ) -> None:
        """Write config.json + safetensors (sharded above 5 GB) into ``path``.

        Named like transformers' method so :func:`alignkit.models.load.save_hf_folder` (atomic
        write, LoRA adapter + merged weights) saves scalar-head models unchanged.
        """
        if not safe_serialization:
            raise ValueError("scalar-head models are saved as safetensors only")
        from huggingface_hub import split_torch_state_dict_into_shards
        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.hf_config().save_pretrained(str(out))
        state = self.hf_state_dict()  # no shared tensors: the backbone has no LM head
        split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size)
        for filename, names in split.filename_to_tensors.items():
            save_file({n: state[n] for n in names}, str(out / filename), metadata={"format": "pt"})
        if split.is_sharded:
            index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
            (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def hidden_size(config: Any) -> int:
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ModelError(f"cannot find the hidden size in the {config.model_type} config")


def new_head(hidden: int, dtype: torch.dtype = torch.float32) -> nn.Linear:
    """A fresh hidden → 1 head with small weights (std 1/(hidden+1)) and no bias, as in
    transformers' sequence classifiers (a bias cancels in every pairwise loss anyway)."""
    head = nn.Linear(hidden, 1, bias=False, dtype=dtype)
    nn.init.normal_(head.weight, mean=0.0, std=1.0 / (hidden + 1))
    return head


def sequence_classification_class(model_type: str) -> str | None:
    """transformers' ``XForSequenceClassification`` name for ``model_type``, if it has one."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(model_type)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``alignkit`` block of a saved scalar-head folder ({} for a plain causal LM)."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        return {}
    meta = json.loads(cfg_file.read_text()).get(META_KEY)
    return dict(meta) if isinstance(meta, dict) else {}


def _saved_head(folder: Path) -> torch.Tensor | None:
    """``score.weight`` from the folder's safetensors files, or None when it has no head."""
    from safetensors import safe_open

    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            if f"{HEAD_KEY}.weight" in st.keys():  # noqa: SIM118 (safe_open is not a dict)
                return st.get_tensor(f"{HEAD_KEY}.weight")
    return None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Loading a backbone from a causal-LM folder always reports ``lm_head`` as unexpected;
    that report is noise here (missing keys are checked explicitly instead)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_scalar_model(
    cfg: ModelConfig,
    kind: HeadKind = "reward",
    for_training: bool = True,
    length_term: float | None = None,
) -> tuple[nn.Module, Any]:
    """Load (model, tokenizer) from a causal-LM folder or a saved scalar-head folder.

    A causal-LM folder gets a new small head; a scalar-head folder (ours, or any
    ``XForSequenceClassification`` with one label) keeps its head. ``kind`` names what the
    model is for; a value critic may start from a reward model (PPO initialises the critic
    from it). With ``for_training`` the config's freezing, gradient checkpointing and LoRA
    (head kept fully trainable) are applied; ``length_term`` (its rate) adds a trainable
    :class:`LengthTerm` for length-controlled training.
    """
    from transformers import AutoModel

    folder = _check_folder(cfg.path, cfg.allow_pickle)
    tok = load_tokenizer(cfg.tokenizer or cfg.path, cfg.trust_remote_code)
    kwargs: dict[str, Any] = {
        "dtype": resolve_dtype(cfg.dtype),
        "trust_remote_code": cfg.trust_remote_code,
        "use_safetensors": None if cfg.allow_pickle else True,
        "output_loading_info": True,
    }
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    try:
        with _quiet_transformers():
            backbone, info = AutoModel.from_pretrained(str(folder), **kwargs)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ModelError(
                f"{folder}: the checkpoint needs its own modelling code; set "
                "model.trust_remote_code=true only if you trust it"
            ) from None
        raise
    missing = sorted(info.get("missing_keys", []))
    if missing:
        raise ModelError(
            f"{folder}: the transformer weights do not match {type(backbone).__name__} "
            f"(missing {missing[:3]}{' ...' if len(missing) > 3 else ''}); is this a causal-LM "
            "or sequence-classification checkpoint of a supported architecture?"
        )
    check_vocab(backbone, tok, str(folder))
    dtype = next(backbone.parameters()).dtype
    head = new_head(hidden_size(backbone.config), dtype)
    saved = _saved_head(folder)
    if saved is not None:
        if saved.shape != head.weight.shape:
            raise ModelError(
                f"{folder}: '{HEAD_KEY}.weight' has shape {tuple(saved.shape)}; a scalar head "
                f"needs {tuple(head.weight.shape)} (a classifier with several labels is not a "
                "reward model)"
            )
        with torch.no_grad():
            head.weight.copy_(saved.to(dtype))
    meta = read_meta(folder)
    meta.pop("head", None)
    meta["pad_token_id"] = tok.pad_token_id
    model = ScalarHeadModel(
        backbone,
        head,
        kind=kind,
        meta=meta,
        length_term=None if length_term is None else LengthTerm(length_term),
    )
    # Reward models are trained and read deterministically (TRL and safe-rlhf turn dropout
    # off): dropout noise on a single scalar output only adds label noise.
    disable_dropout(model)
    if for_training:
        return prepare_scalar_for_training(model, cfg), tok
    model.eval()
    return model, tok


def prepare_scalar_for_training(model: ScalarHeadModel, cfg: ModelConfig) -> nn.Module:
    """Freezing and gradient checkpointing on the backbone; LoRA on the backbone with the head
    fully trained (peft ``modules_to_save``): a new head cannot be learned through adapters."""
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model.backbone)
    freeze(model.backbone, cfg.freeze)
    if cfg.lora.enabled:
        return apply_scalar_lora(model, cfg.lora)
    return model


def lora_targets(model: ScalarHeadModel, spec: str | list[str]) -> list[str]:
    """Resolve 'all-linear' to the backbone's linear layer names (peft only resolves it for
    ``PreTrainedModel`` instances); an explicit list passes through."""
    if not isinstance(spec, str):
        return list(spec)
    if spec != "all-linear":
        return [spec]
    from transformers.pytorch_utils import Conv1D

    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.backbone.named_modules()
        if isinstance(module, (nn.Linear, Conv1D))
    }
    if not names:
        raise ModelError("no linear layers found in the backbone to put LoRA adapters on")
    return sorted(names)


def peft_lora_config(model: ScalarHeadModel, cfg: LoraConfig) -> Any:
    from peft import LoraConfig as PeftLoraConfig
    from transformers.pytorch_utils import Conv1D

    # GPT-2 style Conv1D layers store weights transposed; peft needs to be told.
    transposed = any(isinstance(m, Conv1D) for m in model.backbone.modules())
    return PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=lora_targets(model, cfg.target_modules),
        modules_to_save=["head"] + (["length_term"] if model.length_term is not None else []),
        fan_in_fan_out=transposed,
    )


def apply_scalar_lora(model: ScalarHeadModel, cfg: LoraConfig) -> nn.Module:
    from peft import get_peft_model

    return get_peft_model(model, peft_lora_config(model, cfg))


def unwrap_scalar(model: nn.Module) -> ScalarHeadModel:
    """The :class:`ScalarHeadModel` inside DDP / peft wrappers."""
    m = getattr(model, "module", model)
    if is_peft(m):
        m = m.get_base_model()
    if not isinstance(m, ScalarHeadModel):
        raise TypeError(f"expected a ScalarHeadModel, got {type(m).__name__}")
    return m


def scalar_scores(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Last-token scores through any wrapper (DDP and peft forward ``forward`` only, so the
    per-token values come from the wrapper and the read-out happens here)."""
    return gather_last(model(input_ids=input_ids, attention_mask=attention_mask), attention_mask)


def group_scores(model: nn.Module, gb: GroupBatch) -> torch.Tensor:
    """Scores ``[R]`` of every response of a group batch (group-major), in either layout."""
    if gb.shared is None:
        assert gb.batch is not None and gb.batch.attention_mask is not None
        return scalar_scores(model, gb.batch.input_ids, gb.batch.attention_mask)
    rows = gb.shared
    inputs = shared_prompt_inputs(model, rows)
    inputs.pop("use_cache")
    values = model(**inputs)
    return values.reshape(-1).index_select(0, rows.last)
