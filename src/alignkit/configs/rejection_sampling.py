"""``alignkit rejection-sampling``: best-of-N selection by a judge, then SFT (expert iteration)."""

from __future__ import annotations

from pydantic import Field

from alignkit.config import ModelConfig, Section, TrainConfig
from alignkit.configs import RecipeSpec
from alignkit.configs.self_align import GenerationSampling


class PromptData(Section):
    path: str = Field("", description="Prompt file (`prompt` + any extra fields for the judge).")
    split: str | None = Field(None, description="Split of a DatasetDict folder.")
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts.")
    chat_template: str = Field(
        "auto", description="Chat template policy for sampling and training."
    )
    max_length: int = Field(1024, ge=2, description="Training: maximum tokens per example.")


class Selection(Section):
    drop_unfinished: bool = Field(
        True, description="Never select a response cut off before EOS (it would teach rambling)."
    )
    min_score: float | None = Field(
        None, description="Skip prompts whose best score is below this (None = keep every prompt)."
    )


class RejectionSamplingConfig(Section):
    """Sample N responses per prompt, keep the judge's best, fine-tune on them; repeat."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="Starting policy.")
    judge: str = Field(
        "",
        description="Reward-model folder, sandbox world folder (gold oracle), or a Python "
        "`module:function(prompts, responses, records) -> scores`.",
    )
    n: int = Field(8, ge=1, description="Responses sampled per prompt (best of n is kept).")
    rounds: int = Field(
        1,
        ge=1,
        description="Expert-iteration rounds; each samples from the previous round's model.",
    )
    prompts_per_round: int | None = Field(
        None,
        ge=1,
        description="Prompts per round, consecutive windows of the file (None = all, every round).",
    )
    data: PromptData = Field(default_factory=PromptData, description="Prompts.")
    sampling: GenerationSampling = Field(
        default_factory=lambda: GenerationSampling(temperature=1.0, top_p=1.0, max_new_tokens=64),
        description="Sampling of the candidates.",
    )
    selection: Selection = Field(default_factory=Selection, description="Which samples are kept.")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(output_dir="runs/rejection_sampling", lr=1e-5),
        description="Fine-tuning on the selected responses; output_dir is the run folder.",
    )


COMMAND = RecipeSpec(
    "rejection-sampling",
    RejectionSamplingConfig,
    "alignkit.recipes.rejection_sampling:run_rejection_sampling",
    "Rejection-sampling fine-tuning: best of N by a judge, then SFT, for one or more rounds.",
    flags={
        "model": "model.path",
        "judge": "judge",
        "n": "n",
        "rounds": "rounds",
        "prompts": "data.path",
        "out": "train.output_dir",
    },
)
