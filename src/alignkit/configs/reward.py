"""``alignkit reward`` and ``alignkit cost``: reward and cost models (ALGORITHMS.md §2, §6)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alignkit.config import ModelConfig, Section, TrainConfig
from alignkit.configs import RecipeSpec

SHARED_PROMPT_HELP = (
    "Training batches hold each prompt once with all its responses after it (a block "
    "attention mask: each response sees the prompt and itself), groups packed into "
    "rows: the same numbers as padded rows at fewer token-positions. Checked against "
    "padded rows on the first groups; falls back to them (and says why) for "
    "attention implementations without custom masks, e.g. flash-attention."
)


class PreferenceDataConfig(Section):
    path: str = Field(
        "", description="Pairwise or ranking data: JSONL/JSON/parquet/CSV or a datasets folder."
    )
    split: str | None = Field(None, description="Split to read from a DatasetDict folder.")
    format: Literal["auto", "pairwise", "ranking"] = Field(
        "auto",
        description=(
            "'pairwise' (prompt/chosen/rejected, hh-rlhf implicit prompt, PKU-SafeRLHF), "
            "'ranking' (prompt/responses + ranking or scores), or 'auto' (from the first row)."
        ),
    )
    eval_path: str | None = Field(
        None, description="Held-out file (same format) for the fitness report."
    )
    eval_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Hold out this share of prompts of `path` when eval_path is unset (0 = report on train data).",
    )
    max_length: int = Field(512, ge=4, description="Maximum tokens of prompt + response.")
    max_prompt_length: int | None = Field(
        None, ge=2, description="Prompt tokens kept (from the end); None = max_length // 2."
    )
    chat_template: str = Field(
        "auto",
        description="auto | none | default | a Jinja template | a .jinja path (as for SFT); saved with the model.",
    )
    shared_prompt: bool = Field(True, description=SHARED_PROMPT_HELP)
    on_invalid: Literal["error", "skip"] = Field(
        "error",
        description="Malformed records (repeated ranking indices, identical pair, empty response): stop with the record named, or skip and count them.",
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N records (debugging).")


class RewardDataConfig(PreferenceDataConfig):
    irrelevant_negatives: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description=(
            "Training only: for this share of training records add a pair (the record's best "
            "response ≻ the best response of another prompt), so the model learns that a good "
            "answer to a different question is a bad answer to this one. Guards RL against "
            "collapsing onto one universal answer; 0 = off."
        ),
    )


class RewardLossConfig(Section):
    type: Literal["bt", "kwise", "plackett_luce"] = Field(
        "bt",
        description=(
            "bt: Bradley-Terry on pairs (rankings expand to all C(K,2) pairs); kwise: InstructGPT, "
            "all pairs of one prompt in one batch element; plackett_luce: likelihood of the whole ranking."
        ),
    )
    use_margin: bool = Field(
        False, description="Subtract each record's 'margin' field inside the BT sigmoid (Llama-2)."
    )
    center_coef: float = Field(
        0.0,
        ge=0.0,
        description="Centering η·(r_w + r_l)² (Eisenstein et al. use 0.01); BT only. Keeps scores near 0.",
    )
    length_control: bool = Field(
        False,
        description=(
            "Fit the labels' preference for longer answers with a learned b·log(1+tokens) term "
            "added to each score during training only, so the saved reward is not length-biased."
        ),
    )
    length_decorrelation: float = Field(
        1.0,
        ge=0.0,
        description="With length_control: weight of the squared slope of reward on log length per batch (after ODIN), which keeps the length preference out of the reward.",
    )
    length_step: float = Field(
        0.01,
        gt=0.0,
        description="With length_control: how far b may move per optimizer step at peak LR (its own learning rate).",
    )


class CostLossConfig(Section):
    reg_coef: float = Field(
        0.001, ge=0.0, description="L2 on costs, reg·mean(C²) (safe-rlhf's score regulariser)."
    )
    missing_safer: Literal["from_labels", "error"] = Field(
        "from_labels",
        description=(
            "Records without a 'safer' field: 'from_labels' takes the safe response as the safer "
            "one (an error when both labels agree); 'error' requires the field."
        ),
    )


class ReportConfig(Section):
    enabled: bool = Field(True, description="Write the fitness report at the end of training.")
    category_field: str = Field(
        "category", description="Record field used for per-category accuracy."
    )
    gold_field: str | None = Field(
        None,
        description="Optional per-response reference scores (e.g. the sandbox's gold_rewards): also report accuracy against that ordering.",
    )
    bins: int = Field(10, ge=2, le=50, description="Calibration bins over σ(r_w − r_l).")
    plot: bool = Field(True, description="Write rm_report.png (matplotlib).")
    batch_size: int = Field(32, ge=1, description="Scoring batch size.")


class RewardTrainConfig(TrainConfig):
    """Optimisation with safe-rlhf's reward-model defaults (lr 2e-5, 2 epochs, 3 % warm-up).

    A subclass rather than a default factory, so the defaults survive when a YAML or the
    command line sets only some ``train.*`` keys.
    """

    output_dir: str = Field(
        "runs/reward", description="Where checkpoints, metrics and the model go."
    )
    lr: float = Field(2e-5, gt=0, description="Peak learning rate (AdamW).")
    epochs: float = Field(2.0, gt=0, description="Passes over the data (fractions allowed).")
    warmup_ratio: float = Field(0.03, ge=0, le=1, description="Linear warm-up share of all steps.")


class CostTrainConfig(RewardTrainConfig):
    output_dir: str = Field("runs/cost", description="Where checkpoints, metrics and the model go.")


class RewardConfig(Section):
    """Train a reward model on pairwise preferences or K-response rankings."""

    model: ModelConfig = Field(
        default_factory=ModelConfig, description="Causal LM (or saved reward model) to start from."
    )
    data: RewardDataConfig = Field(default_factory=RewardDataConfig, description="Preferences.")
    loss: RewardLossConfig = Field(default_factory=RewardLossConfig, description="Reward loss.")
    train: RewardTrainConfig = Field(default_factory=RewardTrainConfig, description="Optimisation.")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Fitness report.")

    @model_validator(mode="after")
    def _centering_is_bt_only(self) -> RewardConfig:
        if self.loss.center_coef and self.loss.type != "bt":
            raise ValueError(
                f"loss.center_coef applies to loss.type=bt only (got {self.loss.type}); "
                "set it to 0 or use bt"
            )
        if self.loss.use_margin and self.loss.type != "bt":
            raise ValueError("loss.use_margin applies to loss.type=bt only")
        return self


class CostDataConfig(PreferenceDataConfig):
    prefix_copies: int = Field(
        0,
        ge=0,
        le=8,
        description=(
            "Training only: add this many truncated copies of every pair, each response cut "
            "after a random 1 to n-1 of its n tokens with its safety label kept, so the model also "
            "scores partial responses, as a decoding-time safety filter (CBF) asks of it. "
            "0 = complete responses only."
        ),
    )


class CostConfig(Section):
    """Train a Safe RLHF cost model on safety-labelled pairs (safe → negative cost)."""

    model: ModelConfig = Field(
        default_factory=ModelConfig, description="Causal LM (or saved model) to start from."
    )
    data: CostDataConfig = Field(
        default_factory=CostDataConfig,
        description="Pairs with chosen_safe/rejected_safe (and safer), or PKU-SafeRLHF rows.",
    )
    loss: CostLossConfig = Field(default_factory=CostLossConfig, description="Cost loss.")
    train: CostTrainConfig = Field(default_factory=CostTrainConfig, description="Optimisation.")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Fitness report.")

    @model_validator(mode="after")
    def _pairs_only(self) -> CostConfig:
        if self.data.format == "ranking":
            raise ValueError(
                "data.format=ranking: a cost model needs per-response safety labels on pairs "
                "(chosen_safe/rejected_safe); use pairwise data"
            )
        return self


COMMANDS = [
    RecipeSpec(
        "reward",
        RewardConfig,
        "alignkit.recipes.reward:run_reward",
        "Reward model on pairs or rankings (Bradley-Terry, K-wise, Plackett-Luce) + fitness report.",
    ),
    RecipeSpec(
        "cost",
        CostConfig,
        "alignkit.recipes.reward:run_cost",
        "Safe RLHF cost model on safety-labelled pairs (safe → negative cost) + fitness report.",
    ),
]
