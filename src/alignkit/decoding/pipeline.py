"""One decoder composing the inference-time methods: retrieval → reasoning instruction →
sampling (plain, or token by token with the CBF filter and reward guidance) → best-of-N.

Order matters and is fixed:

* RAG and CoT only rewrite the prompt the *policy* reads. Every scorer (the safety function,
  the guide, the best-of-N judge) sees the user's prompt as written, because that is what
  those models were trained on: passages in the prompt would be text they never saw.
* The CBF filter acts first at each step and guidance reweights only its allowed set, so
  guidance can never re-admit an unsafe token.
* Best-of-N draws N complete (filtered, guided) responses and keeps the judge's favourite, so
  every draw is already safe and the judge only chooses among safe answers.

``Decoder`` is the Python API; ``alignkit generate`` and ``alignkit serve`` are thin wrappers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from alignkit.config import ConfigError, ModelConfig, Section
from alignkit.data.records import Text
from alignkit.data.tokenize import ChatFormatter
from alignkit.decoding.best_of_n import BestOfN, as_judge, select_best_of_n
from alignkit.decoding.cbf import CBFConfig, CBFFilter, load_safety
from alignkit.decoding.cot import CoTConfig, cot_prompt, extract_answer
from alignkit.decoding.guided import GuideConfig, RewardGuide, reward_value
from alignkit.decoding.rag import RAG, RAGConfig, Retrieved, build_rag
from alignkit.decoding.stepwise import Decoded, stepwise_generate
from alignkit.rollout.generate import SamplingConfig, generate
from alignkit.rollout.judges import Judge, Record, load_judge


class DecodingConfig(Section):
    """Everything ``alignkit generate`` / ``serve`` can turn on; paths name saved models."""

    model: str = Field(..., description="Policy: a local causal-LM folder.")
    chat_template: str = Field("auto", description="Prompt rendering: auto, none, default, Jinja.")
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=1.0, max_new_tokens=64),
        description="Temperature, top-p, length, batch size.",
    )
    num_samples: int = Field(1, ge=1, description="Responses returned per prompt.")
    best_of: int = Field(
        1, ge=1, description="Draws per returned response; the judge keeps the best."
    )
    judge: str | None = Field(
        None, description="Best-of-N judge: reward-model folder or sandbox world."
    )
    safety_model: str | None = Field(
        None,
        description="CBF safety function h: cost-model folder, classifier folder, or module:function.",
    )
    safety_margin: float = Field(0.0, description="Cost tolerated as safe: h from margin − cost.")
    safety_form: Literal["probability", "linear"] = Field(
        "probability",
        description="Cost model h: tanh((margin − cost)/2) (bounded, default) or margin − cost.",
    )
    safe_label: str | None = Field(None, description="The safe label of a classifier h.")
    cbf: CBFConfig = Field(default_factory=CBFConfig, description="CBF filter settings.")
    guide: str | None = Field(None, description="Reward model used as prefix value V for guidance.")
    guidance: GuideConfig = Field(default_factory=GuideConfig, description="Guidance settings.")
    rag: str | None = Field(
        None, description="Knowledge base JSONL ({id, title, text}) for retrieval."
    )
    retrieval: RAGConfig = Field(default_factory=RAGConfig, description="Retrieval settings.")
    cot: bool = Field(False, description="Ask the model to reason step by step.")
    reasoning: CoTConfig = Field(
        default_factory=CoTConfig, description="Chain-of-thought settings."
    )
    response_prefix: str = Field("", description="Prefilled opening of every response.")
    seed: int = Field(0, description="Sampling seed.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ...")

    @model_validator(mode="after")
    def _coherent(self) -> DecodingConfig:
        if self.best_of > 1 and not self.judge:
            raise ValueError("best_of > 1 needs a judge (--judge RM)")
        if self.sampling.temperature == 0.0 and (self.best_of > 1 or self.num_samples > 1):
            raise ValueError(
                "temperature 0 (greedy) draws the same response every time; best-of-N and "
                "--num-samples need temperature > 0"
            )
        return self


@dataclass
class Sample:
    """One returned response and its diagnostics."""

    text: str
    finished: bool
    prompt_tokens: int
    completion_tokens: int
    cbf: dict[str, Any] | None = None
    guide: dict[str, Any] | None = None
    best_of_n: BestOfN | None = None
    answer: str | None = None

    def diagnostics(self) -> dict[str, Any]:
        d: dict[str, Any] = {"finished": self.finished, "completion_tokens": self.completion_tokens}
        if self.best_of_n is not None:
            d["best_of_n"] = self.best_of_n.to_dict()
        if self.cbf is not None:
            d["cbf"] = self.cbf
        if self.guide is not None:
            d["guide"] = self.guide
        if self.answer is not None:
            d["answer"] = self.answer
        return d


@dataclass
class PromptResult:
    """The responses to one prompt, the passages retrieved for it and the prompt the policy
    actually read."""

    prompt: Text
    policy_prompt: Text
    samples: list[Sample]
    passages: list[Retrieved] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Decoder:
    """Compose RAG, CoT, CBF, guidance and best-of-N around one policy.

    Every part is optional and given as an object, so Python users can plug in their own
    safety function, value function or judge; :func:`build_decoder` builds one from paths.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        sampling: SamplingConfig | None = None,
        chat_template: str = "auto",
        cbf: CBFFilter | None = None,
        guide: RewardGuide | None = None,
        rag: RAG | None = None,
        cot: CoTConfig | None = None,
        judge: Judge | Any | None = None,
        best_of: int = 1,
        response_prefix: str = "",
        seed: int | None = 0,
    ) -> None:
        if best_of > 1 and judge is None:
            raise ConfigError("best_of > 1 needs a judge to choose among the draws")
        self.model = model
        self.tokenizer = tokenizer
        self.sampling = sampling or SamplingConfig(temperature=1.0)
        self.formatter = ChatFormatter(tokenizer, chat_template)
        self.cbf = cbf
        self.guide = guide
        self.rag = rag
        self.cot = cot
        self.judge = as_judge(judge) if judge is not None else None
        self.best_of = best_of
        self.response_prefix = response_prefix
        self.prefix_ids: list[int] = (
            list(tokenizer(response_prefix, add_special_tokens=False)["input_ids"])
            if response_prefix
            else []
        )
        self.seed = seed

    def policy_prompts(
        self, prompts: Sequence[Text]
    ) -> tuple[list[Text], list[list[Retrieved]] | None]:
        """The prompts the policy reads (retrieval, then the reasoning instruction)."""
        out = list(prompts)
        found = None
        if self.rag is not None:
            out, found = self.rag(out)
        if self.cot is not None:
            out = [cot_prompt(p, self.cot) for p in out]
        return out, found

    def generate(
        self,
        prompts: Sequence[Text],
        records: Sequence[Record] | None = None,
        num_samples: int = 1,
        sampling: SamplingConfig | None = None,
        seed: int | None = None,
        best_of: int | None = None,
    ) -> list[PromptResult]:
        """``num_samples`` responses per prompt, each the best of ``best_of`` draws.

        ``records`` are the prompts' rows (extra fields), passed to judges that need them (the
        sandbox oracle). ``sampling``/``seed``/``best_of`` override the decoder's for one call
        (a server request's temperature and n).
        """
        sampling = sampling or self.sampling
        n = best_of or self.best_of
        if n > 1 and self.judge is None:
            raise ConfigError("best_of > 1 needs a judge to choose among the draws")
        seed = self.seed if seed is None else seed
        prompts = list(prompts)
        policy, found = self.policy_prompts(prompts)
        ids = [self.formatter.prompt_ids(p) for p in policy]
        draws = self._draw(prompts, ids, sampling, num_samples * n, seed)
        results = []
        chosen_all: list[list[tuple[Decoded, BestOfN | None]]] = []
        if n > 1:
            assert self.judge is not None
            groups = [row[k * n : (k + 1) * n] for row in draws for k in range(num_samples)]
            group_prompts = [p for p in prompts for _ in range(num_samples)]
            recs = [dict(r) for r in records for _ in range(num_samples)] if records else None
            picks = select_best_of_n(
                self.judge, group_prompts, [[d.text for d in g] for g in groups], recs
            )
            flat = [(g[b.chosen], b) for g, b in zip(groups, picks, strict=True)]
            chosen_all = [
                flat[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))
            ]
        else:
            chosen_all = [[(d, None) for d in row] for row in draws]
        for i, prompt in enumerate(prompts):
            samples = [self._sample(d, b) for d, b in chosen_all[i]]
            results.append(
                PromptResult(prompt, policy[i], samples, found[i] if found is not None else None)
            )
        return results

    def _draw(
        self,
        prompts: list[Text],
        ids: list[list[int]],
        sampling: SamplingConfig,
        k: int,
        seed: int | None,
    ) -> list[list[Decoded]]:
        if self.cbf is None and self.guide is None:
            gens = generate(
                self.model,
                self.tokenizer,
                prompts,
                sampling,
                num_samples=k,
                seed=seed,
                prompt_ids=[p + self.prefix_ids for p in ids],
            )
            return [
                [
                    Decoded(
                        g.prompt_ids,
                        g.completion_ids,
                        self._with_prefix(g.completion_ids),
                        g.finished,
                    )
                    for g in row
                ]
                for row in gens
            ]
        return stepwise_generate(
            self.model,
            self.tokenizer,
            ids,
            sampling,
            score_prompts=prompts,
            num_samples=k,
            cbf=self.cbf,
            guide=self.guide,
            prefix_ids=self.prefix_ids,
            seed=seed,
        )

    def _with_prefix(self, completion: list[int]) -> str:
        return str(
            self.tokenizer.decode(self.prefix_ids + completion, skip_special_tokens=True)
        ).strip()

    def _sample(self, d: Decoded, b: BestOfN | None) -> Sample:
        guide = None
        if d.guide_values is not None:
            vals = d.guide_values
            guide = {
                "weight": self.guide.config.weight if self.guide else None,
                "values": [round(v, 6) for v in vals],
                "value_final": round(vals[-1], 6) if vals else None,
            }
        return Sample(
            text=d.text,
            finished=d.finished,
            prompt_tokens=len(d.prompt_ids),
            completion_tokens=len(d.completion_ids),
            cbf=d.cbf.to_dict() if d.cbf is not None else None,
            guide=guide,
            best_of_n=b,
            answer=extract_answer(d.text) if self.cot is not None else None,
        )


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def build_decoder(cfg: DecodingConfig) -> Decoder:
    """Load the policy and every model the config names, and compose them."""
    from alignkit.models.load import load_causal_lm
    from alignkit.models.scorer import RewardScorer

    device = resolve_device(cfg.device)
    model, tok = load_causal_lm(ModelConfig(path=cfg.model), for_training=False)
    model.to(device)
    cbf = None
    if cfg.safety_model:
        h = load_safety(
            cfg.safety_model, cfg.safety_margin, cfg.safe_label, device, form=cfg.safety_form
        )
        cbf = CBFFilter(h, cfg.cbf)
    guide = None
    if cfg.guide:
        guide = RewardGuide(
            reward_value(RewardScorer.from_pretrained(cfg.guide, device=device)), cfg.guidance
        )
    rag = build_rag(cfg.rag, cfg.retrieval, model, tok) if cfg.rag else None
    judge = load_judge(cfg.judge) if cfg.judge else None
    return Decoder(
        model,
        tok,
        sampling=cfg.sampling,
        chat_template=cfg.chat_template,
        cbf=cbf,
        guide=guide,
        rag=rag,
        cot=cfg.reasoning if cfg.cot else None,
        judge=judge,
        best_of=cfg.best_of,
        response_prefix=cfg.response_prefix,
        seed=cfg.seed,
    )
