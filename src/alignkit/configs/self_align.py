"""``alignkit self-align``: principle-driven self-alignment (Sun et al. 2023, ALGORITHMS.md §8).

Defaults follow the paper where it states them: answers sampled at temperature 0.5 / top_p
0.95, engraving with LoRA r 16 for one epoch with no loss on the prompt, near-duplicate
questions removed at ROUGE-L 0.7 (Self-Instruct's filter).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignkit.config import LoraConfig, ModelConfig, Section, TrainConfig
from alignkit.configs import RecipeSpec


class GenerationSampling(Section):
    """Sampling settings of one generating stage (converted to rollout's SamplingConfig)."""

    max_new_tokens: int = Field(64, ge=1, description="Maximum generated tokens.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0 = off).")
    batch_size: int = Field(64, ge=1, description="Sequences per generate() call.")


class EngraveModel(ModelConfig):
    """The base model: it writes the questions and answers, and is the one engraved."""

    lora: LoraConfig = Field(
        default_factory=lambda: LoraConfig(enabled=True, r=16, alpha=32),
        description="LoRA adapters; on by default (the paper engraves with LoRA r 16).",
    )


TOPIC_PROMPT = (
    'Here are example questions of the type "{type}" ({description}):\n{examples}\n'
    "Brainstorm {n} different topics such questions could be about. Write one topic per line."
)
QUESTION_PROMPT = (
    'Write one new question of the type "{type}" ({description}) about this topic: {topic}.\n'
    "Examples of the type:\n{examples}\nWrite only the question."
)
VERBOSE_PROMPT = (
    "You are a helpful, knowledgeable assistant. Give detailed, well-organised answers that "
    "explain the reasoning and cover the relevant aspects of the question."
)


class RedTeam(Section):
    mode: Literal["instruct", "continue"] = Field(
        "instruct",
        description=(
            "How the model brainstorms. 'instruct': topic_prompt and question_prompt are asked "
            "as chat turns (instruction-following models). 'continue': the model writes user "
            "turns itself; topics are question openings it continues from the seeds' first "
            "words, questions continue a topic to the end of the turn (base models that know "
            "only the chat format, e.g. the sandbox base)."
        ),
    )
    topics_per_type: int = Field(10, ge=1, description="Distinct topics kept per question type.")
    topic_attempts: int = Field(
        30, ge=1, description="Samples drawn per question type to brainstorm its topics."
    )
    questions_per_topic: int = Field(5, ge=1, description="Questions sampled per (type, topic).")
    include_seeds: bool = Field(True, description="Keep the seed questions in the question set.")
    near_duplicate_threshold: float | None = Field(
        0.7,
        gt=0,
        description="Drop a question whose ROUGE-L F1 to a kept one reaches this (None = exact only).",
    )
    min_words: int = Field(3, ge=1, description="Shortest question kept (words).")
    max_words: int = Field(60, ge=1, description="Longest question kept (words).")
    exclude: list[str] = Field(
        default_factory=list,
        description="Prompt files (e.g. an evaluation set) whose questions are never kept "
        "(decontamination; normalised exact match).",
    )
    max_questions: int | None = Field(
        None, ge=1, description="Keep at most this many questions (types interleaved)."
    )
    examples_in_prompt: int = Field(
        3, ge=0, description="'instruct': seed questions shown in the topic/question prompts."
    )
    topic_prompt: str = Field(
        TOPIC_PROMPT,
        description="'instruct': topic brainstorm prompt ({type} {description} {examples} {n}).",
    )
    question_prompt: str = Field(
        QUESTION_PROMPT,
        description="'instruct': question prompt ({type} {description} {topic} {examples}).",
    )
    stem_words: int = Field(
        2, ge=1, description="'continue': words of a seed question the model continues from."
    )
    topic_words: int = Field(
        2, ge=1, description="'continue': words the model adds to a stem to make a topic."
    )
    sampling: GenerationSampling = Field(
        default_factory=lambda: GenerationSampling(temperature=1.0, top_p=0.95, max_new_tokens=48),
        description="Sampling for topics and questions.",
    )


class Answers(Section):
    exemplars_per_prompt: int = Field(
        5,
        ge=0,
        description="Exemplars (with internal thoughts) in each answer prompt; fewer when the "
        "prompt would not fit max_prompt_length.",
    )
    match_question_type: bool = Field(
        True,
        description="Choose exemplars of the question's type first, then by word overlap.",
    )
    max_prompt_length: int | None = Field(
        None,
        ge=1,
        description="Token budget of an answer prompt (None = context length − max_new_tokens).",
    )
    sampling: GenerationSampling = Field(
        default_factory=lambda: GenerationSampling(temperature=0.5, top_p=0.95, max_new_tokens=256),
        description="Sampling of principle-driven answers (paper: temperature 0.5, top_p 0.95).",
    )


class Filters(Section):
    require_thoughts: bool = Field(
        True,
        description="Drop answers that did not open with internal thoughts (the prompt was not followed).",
    )
    drop_unfinished: bool = Field(True, description="Drop answers cut off before EOS.")
    min_words: int = Field(1, ge=1, description="Shortest answer kept (words).")
    max_words: int | None = Field(None, ge=1, description="Longest answer kept (None = any).")
    max_ngram_repeats: int = Field(
        3, ge=0, description="Drop answers repeating a word 3-gram this often (0 = off)."
    )
    leak_ngram: int = Field(
        8,
        ge=3,
        description="An answer copying this many consecutive words of a principle leaks it.",
    )


class Verbose(Section):
    enabled: bool = Field(
        False, description="Stage 4, verbose cloning: distil answers to a verbose prompt."
    )
    prompt: str = Field(VERBOSE_PROMPT, description="System turn asking for verbose answers.")
    questions: int | None = Field(
        None, ge=1, description="Use the first N stage-1 questions (None = all)."
    )
    sampling: GenerationSampling = Field(
        default_factory=lambda: GenerationSampling(temperature=0.7, top_p=0.95, max_new_tokens=512),
        description="Sampling of the verbose answers (by the engraved model).",
    )
    lr: float | None = Field(None, gt=0, description="Learning rate (None = train.lr).")


class SelfAlignConfig(Section):
    """Principle-driven self-alignment: red-teaming questions, principled answers, engraving."""

    model: EngraveModel = Field(default_factory=EngraveModel, description="Base model.")
    principles: str = Field(
        "", description="Principles YAML (docs/self_align.md); empty = alignkit's default set."
    )
    seeds: str | None = Field(
        None,
        description="Seed questions (JSONL: prompt + question_type or category), added to the "
        "principles file's own seeds.",
    )
    chat_template: str = Field(
        "auto",
        description="Chat template policy for generation and engraving (as data.chat_template).",
    )
    red_team: RedTeam = Field(default_factory=RedTeam, description="Stage 1: questions.")
    answers: Answers = Field(default_factory=Answers, description="Stage 2: principled answers.")
    filters: Filters = Field(
        default_factory=Filters, description="Between stage 2 and 3: which answers are kept."
    )
    max_length: int = Field(1024, ge=2, description="Engraving: maximum tokens per example.")
    packing: bool = Field(False, description="Engraving: padding-free packing.")
    verbose: Verbose = Field(default_factory=Verbose, description="Stage 4: verbose cloning.")
    stop_after: Literal["questions", "answers", "engrave_data", "engrave"] | None = Field(
        None,
        description="Stop after this stage (inspect or edit its file, then rerun to go on).",
    )
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(
            output_dir="runs/self_align", lr=2e-4, epochs=1, warmup_ratio=0.03
        ),
        description="Engraving optimisation; output_dir is the run folder (final model there).",
    )


COMMAND = RecipeSpec(
    "self-align",
    SelfAlignConfig,
    "alignkit.recipes.self_align:run_self_align",
    "Principle-driven self-alignment: self-instruct questions, principled answers, engraving.",
    flags={
        "model": "model.path",
        "principles": "principles",
        "seeds": "seeds",
        "out": "train.output_dir",
    },
)
