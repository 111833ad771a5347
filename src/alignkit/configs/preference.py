"""``alignkit dpo``: the direct-preference family (DPO, IPO, cDPO, robust, KTO, ORPO, SimPO, CPO,
f-DPO) and its iterative / online variant, as one typed config.

Field names follow TRL's DPOConfig where one exists (``beta``, ``label_smoothing``,
``simpo_gamma``, ``cpo_alpha``), so a TRL user recognises them. Imports only pydantic and
alignkit.config so that ``alignkit --help`` stays fast; whether a combination of options makes
sense (a reference-free loss with reference options, KTO on pairs) is checked by the recipe
before anything is loaded, with a message that says what to do instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignkit.config import ModelConfig, Section, TrainConfig
from alignkit.configs import RecipeSpec
from alignkit.configs.reward import SHARED_PROMPT_HELP

# The names of alignkit.losses.preference.PreferenceLoss. Spelled out here (not imported: that
# module needs torch) so that --help and config errors list them; a unit test keeps the two
# in sync.
LossName = Literal["dpo", "ipo", "cdpo", "robust", "kto", "orpo", "simpo", "cpo", "fdpo"]
REFERENCE_FREE: tuple[str, ...] = ("orpo", "simpo", "cpo")

# Paper defaults for β: SimPO's β scales *average* log-probs (Meng et al. use 2–2.5); every other
# method uses β 0.1 on summed log-probs (IPO reads it as τ, TRL's convention).
DEFAULT_BETA: dict[str, float] = {"simpo": 2.0}


class PreferenceDataConfig(Section):
    path: str = Field(
        "",
        description=(
            "Preference data (JSONL/JSON/parquet/datasets folder): pairwise, ranking or unpaired "
            "records. In online mode (iterations > 0): prompts to sample from."
        ),
    )
    split: str | None = Field(None, description="Split to read from a DatasetDict folder.")
    format: Literal["auto", "pairwise", "ranking", "unpaired"] = Field(
        "auto",
        description=(
            "Record kind; 'auto' reads the first row: chosen/rejected (or response_0/1) → "
            "pairwise, responses → ranking, completion+label → unpaired."
        ),
    )
    ranking_pairs: Literal["all", "best_worst", "grouped"] = Field(
        "all",
        description=(
            "How a K-response ranking becomes pairs: all C(K,2) (winner, loser) pairs, each its "
            "own batch element; only best vs worst (one pair per prompt, the least noisy "
            "label); or 'grouped': all C(K,2) pairs from one batch element per ranking, each "
            "response forwarded once (K forwards instead of 2·C(K,2); batch_size then counts "
            "rankings, and the loss is the mean over the batch's pairs)."
        ),
    )
    to_unpaired: bool = Field(
        False,
        description=(
            "For loss=kto on pairwise/ranking data: split each pair into a desirable (chosen) "
            "and an undesirable (rejected) example."
        ),
    )
    eval_path: str | None = Field(None, description="Held-out preference file for eval metrics.")
    eval_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description=(
            "Hold out this fraction of records (or of prompts, online) for eval metrics when "
            "eval_path is unset; split before pairs are formed, so a ranking never spans both."
        ),
    )
    max_length: int = Field(512, ge=4, description="Maximum tokens of prompt + response.")
    max_prompt_length: int | None = Field(
        None, ge=1, description="Prompts longer than this keep their last tokens (None = half)."
    )
    chat_template: str = Field(
        "auto", description="auto | none | default | a Jinja template or .jinja path (as SFT)."
    )
    shared_prompt: bool = Field(True, description=SHARED_PROMPT_HELP)
    limit: int | None = Field(None, ge=1, description="Use only the first N records (debugging).")


class OnlineConfig(Section):
    prompts_per_iteration: int = Field(
        256, ge=1, description="Prompts sampled (two responses each) per iteration."
    )
    max_new_tokens: int = Field(64, ge=1, description="Maximum tokens per sampled response.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature of the policy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    generation_batch_size: int = Field(64, ge=1, description="Prompts per generate() call.")
    min_score_gap: float = Field(
        0.0,
        ge=0.0,
        description="Skip a pair when the judge's two scores differ by no more than this (ties).",
    )
    update_reference: bool = Field(
        False,
        description=(
            "Each iteration's reference is the policy at the iteration's start (Yuan et al. "
            "2024); false keeps the starting model as the reference throughout."
        ),
    )


class DPOConfig(Section):
    """Direct preference optimisation: one loop for every loss; offline or iterative/online."""

    model: ModelConfig = Field(
        default_factory=ModelConfig, description="Policy to align (usually the SFT model)."
    )
    data: PreferenceDataConfig = Field(
        default_factory=PreferenceDataConfig, description="Preference data."
    )
    loss: LossName = Field("dpo", description="Preference loss (see docs/preference.md).")
    beta: float | None = Field(
        None,
        gt=0.0,
        description="β (τ for IPO); None = paper default: 2.0 for simpo, 0.1 otherwise.",
    )
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=0.5, description="ε, assumed label-flip rate of cdpo and robust."
    )
    simpo_gamma: float = Field(0.5, description="γ, SimPO's target reward margin.")
    cpo_alpha: float = Field(1.0, ge=0.0, description="α, weight of CPO's NLL term.")
    orpo_lambda: float = Field(0.1, ge=0.0, description="λ, weight of ORPO's odds-ratio term.")
    kto_desirable_weight: float = Field(1.0, ge=0.0, description="λ_D of KTO.")
    kto_undesirable_weight: float = Field(1.0, ge=0.0, description="λ_U of KTO.")
    f_divergence: Literal["reverse_kl", "forward_kl", "js", "alpha"] = Field(
        "reverse_kl", description="Divergence of fdpo (reverse_kl is DPO)."
    )
    f_alpha: float = Field(0.5, gt=0.0, description="α of fdpo's alpha-divergence.")
    rpo_alpha: float = Field(
        0.0,
        ge=0.0,
        description=(
            "α of RPO: add α·NLL of the chosen response (token-averaged) to a paired loss "
            "with a reference (dpo, cdpo, robust, ipo, fdpo) or simpo. Keeps log π(chosen) "
            "from falling on off-policy pairs; 0 = off."
        ),
    )
    reference: Literal["auto", "precompute", "adapter", "live", "none"] = Field(
        "auto",
        description=(
            "Reference log-probs: precompute (once before training, cached in the run folder), "
            "adapter (LoRA policy with the adapter disabled; no second copy), live (a frozen "
            "copy), none. auto = precompute for losses that need one, none otherwise."
        ),
    )
    reference_model: str | None = Field(
        None, description="Reference checkpoint folder; None = the starting policy (model.path)."
    )
    iterations: int = Field(
        0,
        ge=0,
        description=(
            "Iterative/online DPO rounds: sample two responses per prompt from the current "
            "policy, rank them with `judge`, train, repeat. 0 = offline on data.path."
        ),
    )
    judge: str | None = Field(
        None,
        description=(
            "Judge of online pairs: a reward-model folder, or a sandbox world folder "
            "(world.json) for the gold oracle."
        ),
    )
    online: OnlineConfig = Field(
        default_factory=OnlineConfig, description="Sampling and pairing of online iterations."
    )
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(lr=1e-6, warmup_ratio=0.1, batch_size=8),
        description="Optimisation (lr 1e-6 is the full fine-tuning default; LoRA wants more).",
    )

    def resolved_beta(self) -> float:
        """β actually used: the configured one or the method's paper default."""
        return self.beta if self.beta is not None else DEFAULT_BETA.get(self.loss, 0.1)


COMMANDS = [
    RecipeSpec(
        "dpo",
        DPOConfig,
        "alignkit.recipes.preference:run_dpo",
        "Direct preference optimisation: dpo, ipo, cdpo, robust, kto, orpo, simpo, cpo, fdpo; "
        "offline or iterative/online with a judge.",
    ),
]
