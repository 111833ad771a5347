"""CBF-LLM: a control-barrier safety filter on token-by-token decoding (Miyaoka & Inoue 2024).

A safety function h maps text to a real number with the safe set {h ≥ 0}. At each step the
filter walks the next-token candidates in order of probability, evaluates h(x ⊕ t) on the
decoded text (batched across candidates and rows, cached by text), and keeps a candidate iff
h(x ⊕ t) ≥ (1 − α)·h(x), until ``top_k`` candidates are allowed. The next token is drawn from
Q ∝ P on the allowed set. α = 1 is the plain blacklist h(x ⊕ t) ≥ 0; a smaller α makes h
decrease by at most a fraction α per step, so generation slows down as it nears the boundary
instead of hitting it (ALGORITHMS.md §7). The threshold and projection arithmetic are the pure
functions of :mod:`alignkit.losses.decoding`; this module only evaluates h and bookkeeps.

h comes from a cost model (the Safe RLHF convention, cost > 0 unsafe; by default the
probability margin h = tanh((margin − cost)/2), see :func:`cost_model_safety`), a classifier (h = p_safe − max of the other labels' probabilities, the paper's form), or any
Python function. When no candidate passes, the row ends with the declared fallback (a refusal
text, or a stop) instead of raising or emitting an unsafe token.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from alignkit.config import ConfigError, Section
from alignkit.data.records import Text
from alignkit.decoding.prefix import CachedPrefixScorer, PrefixFn, as_cached, prompt_text
from alignkit.losses.decoding import cbf_allowed, cbf_project

log = logging.getLogger("alignkit")

DEFAULT_REFUSAL = (
    "I can't help with that, because it could hurt people. If you need support, talk to "
    "someone you trust instead."
)


class CBFConfig(Section):
    alpha: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="CBF rate α: h may fall by at most this fraction per token (1 = blacklist).",
    )
    top_k: int = Field(
        30, ge=1, description="Accept candidates, most likely first, until this many are allowed."
    )
    max_candidates: int = Field(
        100,
        ge=1,
        description="Examine at most this many candidates per step (bounds the cost when most are disallowed).",
    )
    top_p: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Also stop examining once the candidates examined hold this much of P and one is allowed (1 = the paper's rule).",
    )
    fallback: Literal["refuse", "stop"] = Field(
        "refuse",
        description="When no candidate is allowed: replace the response by the refusal text, or stop there.",
    )
    refusal: str = Field(DEFAULT_REFUSAL, description="The refusal text of the 'refuse' fallback.")
    batch_size: int = Field(256, ge=1, description="Texts per call of the safety function.")

    @model_validator(mode="after")
    def _candidates_cover_top_k(self) -> CBFConfig:
        if self.max_candidates < self.top_k:
            raise ValueError(
                f"max_candidates ({self.max_candidates}) must be >= top_k ({self.top_k})"
            )
        return self


@dataclass
class CBFTrace:
    """What the filter did on one generation (the paper's metrics).

    ``h`` holds h(x_k) along the way, from the prompt's state (empty response) to the last
    token; ``interventions`` counts disallowed candidates that ranked above the last allowed
    one (tokens the filter removed), ``intervened_steps`` the steps with at least one.
    """

    h: list[float] = field(default_factory=list)
    interventions: int = 0
    intervened_steps: int = 0
    fallback: str | None = None
    fallback_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "interventions": self.interventions,
            "intervened_steps": self.intervened_steps,
            "h": [round(v, 6) for v in self.h],
            "h_final": round(self.h[-1], 6) if self.h else None,
            "fallback": self.fallback,
            "fallback_step": self.fallback_step,
        }


@dataclass
class Projection:
    """One row's filtered step: Q over ``token_ids`` (the candidates examined, most likely
    first), h of each examined candidate, and whether nothing passed."""

    token_ids: list[int]
    probs: torch.Tensor
    h_next: list[float]
    allowed: list[bool]
    nothing_allowed: bool

    @property
    def interventions(self) -> int:
        return sum(not a for a in self.allowed)


class CBFFilter:
    """Evaluate h on candidate continuations and project P onto the allowed set."""

    def __init__(self, h: PrefixFn | CachedPrefixScorer, config: CBFConfig | None = None) -> None:
        self.config = config or CBFConfig()
        self.h = as_cached(h, self.config.batch_size)

    def initial(self, prompts: Sequence[Text], texts: Sequence[str]) -> list[float]:
        """h(x₀) of each row's starting state (the empty response, or a prefilled one)."""
        return self.h(prompts, texts)

    def filter(
        self,
        prompts: Sequence[Text],
        h_current: Sequence[float],
        cand_ids: torch.Tensor,
        cand_probs: torch.Tensor,
        texts_of: Callable[[int, list[int]], list[str]],
    ) -> list[Projection]:
        """Filter one step for a batch of rows.

        ``cand_ids``/``cand_probs`` ``[B, M]``: each row's candidates sorted by P, descending;
        ``texts_of(row, token_ids)`` decodes the row's response extended by each token. Each
        round evaluates, for every row still short of ``top_k`` allowed candidates, at most
        the next ``top_k − allowed`` candidates, all rows in one batched h call: no candidate
        below the k-th allowed one is ever evaluated. With ``top_p`` < 1 a row also stops
        once the candidates examined cover ``top_p`` of P and one of them is allowed, which
        makes the filter as cheap as the nucleus is small (typically one or two h calls per
        token for a confident model) and samples exactly nucleus sampling minus the
        disallowed tokens.
        """
        cfg = self.config
        rows, width = cand_ids.shape
        width = min(width, cfg.max_candidates)
        ids = cand_ids[:, :width].tolist()
        pointer = [0] * rows
        n_allowed = [0] * rows
        h_vals: list[list[float]] = [[] for _ in range(rows)]
        allowed: list[list[bool]] = [[] for _ in range(rows)]
        mass = [0.0] * rows
        probs_list = cand_probs[:, :width].tolist()
        while True:
            batch: list[tuple[int, int]] = []  # (row, candidate position)
            for r in range(rows):
                need = cfg.top_k - n_allowed[r]
                if need <= 0 or pointer[r] >= width:
                    continue
                if n_allowed[r] and mass[r] >= cfg.top_p:
                    continue  # the nucleus is examined and something in it is allowed
                # Within the nucleus take candidates until it is covered; past it (nothing
                # allowed yet) take the next `need` at once.
                past_nucleus = mass[r] >= cfg.top_p
                while pointer[r] < width and need > 0:
                    batch.append((r, pointer[r]))
                    mass[r] += probs_list[r][pointer[r]]
                    pointer[r] += 1
                    need -= 1
                    if not past_nucleus and mass[r] >= cfg.top_p:
                        break
            if not batch:
                break
            texts: list[str] = []
            by_row: dict[int, list[int]] = {}
            for r, j in batch:
                by_row.setdefault(r, []).append(j)
            order: list[tuple[int, int]] = []
            for r, js in by_row.items():
                texts.extend(texts_of(r, [ids[r][j] for j in js]))
                order.extend((r, j) for j in js)
            values = self.h([prompts[r] for r, _ in order], texts)
            ok = cbf_allowed(
                torch.tensor(values, dtype=torch.float64).unsqueeze(-1),
                torch.tensor([h_current[r] for r, _ in order], dtype=torch.float64),
                cfg.alpha,
            ).squeeze(-1)
            for (r, _), v, a in zip(order, values, ok.tolist(), strict=True):
                h_vals[r].append(v)
                allowed[r].append(bool(a))
                n_allowed[r] += bool(a)
        out = []
        for r in range(rows):
            n = pointer[r]
            proj = cbf_project(
                cand_probs[r, :n].double(), torch.tensor(allowed[r], dtype=torch.bool)
            )
            out.append(
                Projection(
                    ids[r][:n], proj.probs, h_vals[r], allowed[r], bool(proj.nothing_allowed)
                )
            )
        return out


# ---------------------------------------------------------------------------------------------
# Safety functions h
# ---------------------------------------------------------------------------------------------


def cost_model_safety(scorer: Any, margin: float = 0.0, form: str = "probability") -> PrefixFn:
    """h from a cost model (anything with ``score(prompts, responses)``), safe set h ≥ 0.

    A Safe RLHF cost model is trained with the logistic sign term −log σ(−s·C), so σ(−C) is
    its probability that the response is safe. ``form="probability"`` (default) uses the
    probability margin h = P(safe) − P(unsafe) = tanh((margin − C)/2), bounded in (−1, 1) as
    the paper's classifier margin is; ``form="linear"`` uses h = margin − C. The difference
    matters for α < 1: deep in the safe set the linear h swings by several units between
    harmless prefixes (a cost model is not calibrated on partial text), and the CBF condition
    h(x ⊕ t) ≥ (1 − α)·h(x) then blocks tokens that are perfectly safe, including the
    opening of a refusal; the bounded margin saturates there and constrains decoding only
    near the boundary, where it should (docs/decoding.md has the measurement).
    """
    if form not in ("probability", "linear"):
        raise ValueError(f"form must be 'probability' or 'linear', not {form!r}")

    def h(prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        costs = scorer.score(list(prompts), list(responses))
        if form == "linear":
            return [margin - float(c) for c in costs]
        return [math.tanh((margin - float(c)) / 2.0) for c in costs]

    return h


def function_safety(fn: Callable[[Text, str], float]) -> PrefixFn:
    """h from a per-item Python function ``fn(prompt, response) -> float``."""

    def h(prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        return [float(fn(p, r)) for p, r in zip(prompts, responses, strict=True)]

    return h


class ClassifierSafety:
    """h = p_safe − max over the other labels, from a sequence classifier (the paper's form:
    there h = p_pos − max(p_neg, p_neu) from a sentiment classifier).

    The classifier reads the response alone by default, as in the paper (it judges the text
    being written); ``include_prompt`` prepends the prompt for classifiers trained on pairs.
    """

    def __init__(
        self,
        path: str | Path,
        safe_label: str | None = None,
        include_prompt: bool = False,
        device: str | None = None,
        max_length: int = 512,
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        from alignkit.models.load import load_tokenizer

        self.tokenizer = load_tokenizer(str(path))
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(path), use_safetensors=True
        ).eval()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        labels = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        if len(labels) < 2:
            raise ConfigError(
                f"{path}: a classifier safety function needs at least 2 labels; a one-label "
                "model is a cost model (use it as one)"
            )
        self.safe_index = self._safe_index(labels, safe_label, str(path))
        self.include_prompt = include_prompt
        self.max_length = max_length

    @staticmethod
    def _safe_index(labels: dict[int, str], safe_label: str | None, where: str) -> int:
        wanted = [safe_label] if safe_label else ["safe", "SAFE", "Safe", "positive", "POSITIVE"]
        for name in wanted:
            for i, lab in labels.items():
                if lab == name:
                    return i
        raise ConfigError(
            f"{where}: no label {safe_label or 'safe'} among {sorted(labels.values())}; pass the "
            "label that means safe (--safe-label)"
        )

    @torch.no_grad()
    def __call__(self, prompts: Sequence[Text], responses: Sequence[str]) -> list[float]:
        texts = [
            f"{prompt_text(p)}\n{r}" if self.include_prompt else r
            for p, r in zip(prompts, responses, strict=True)
        ]
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
        ).to(self.device)
        probs = self.model(**enc).logits.float().softmax(-1)
        safe = probs[:, self.safe_index]
        others = probs.clone()
        others[:, self.safe_index] = -1.0
        return (safe - others.max(dim=-1).values).tolist()


def import_function(spec: str) -> Callable[..., Any]:
    """``module:function`` → the function (a user's plugin, as reward functions are named)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConfigError(f"{spec!r}: expected module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{spec!r}: cannot import ({e})") from None
    if not callable(fn):
        raise ConfigError(f"{spec!r} is not callable")
    return fn  # type: ignore[no-any-return]


def load_safety(
    spec: str,
    margin: float = 0.0,
    safe_label: str | None = None,
    device: str | None = None,
    batch_size: int = 64,
    form: str = "probability",
) -> PrefixFn:
    """h from a config string: a cost-model folder (h = tanh((margin − cost)/2), or margin −
    cost with ``form="linear"``), a classifier folder with a safe label, or
    ``module:function`` (``fn(prompt, response) -> h``)."""
    from alignkit.models.heads import read_meta

    p = Path(spec)
    if not (p / "config.json").is_file():
        if ":" in spec and not p.exists():
            fn = import_function(spec)
            n_params = len(inspect.signature(fn).parameters)
            if n_params != 2:
                raise ConfigError(f"{spec}: a safety function takes (prompt, response)")
            return function_safety(fn)
        raise ConfigError(
            f"safety model {spec!r}: not a model folder (no config.json) nor module:function"
        )
    meta = read_meta(p)
    head = meta.get("head")
    if head == "reward":
        raise ConfigError(
            f"{spec} is a reward model; the safety filter needs a cost model (h = −cost), a "
            "safety classifier, or a Python function"
        )
    import json

    labels = json.loads((p / "config.json").read_text()).get("id2label") or {}
    if head is None and len(labels) >= 2:
        return ClassifierSafety(p, safe_label, device=device)
    from alignkit.models.scorer import RewardScorer

    if head is None:
        log.info("%s has one output and no alignkit head kind; reading it as a cost model", spec)
    scorer = RewardScorer.from_pretrained(p, device=device, batch_size=batch_size, kind="cost")
    return cost_model_safety(scorer, margin, form)
