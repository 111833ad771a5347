"""``alignkit rl`` and its presets ``ppo``, ``grpo``, ``rloo``, ``safe-rlhf``: one online loop.

The commands share :class:`RLConfig`; the presets only change defaults (the estimator, whether
a critic and a cost stream exist), exactly as the methods differ in the literature.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field, create_model, model_validator

from alignkit.config import ConfigError, ModelConfig, Section, TrainConfig
from alignkit.configs import RecipeSpec

SectionT = TypeVar("SectionT", bound=Section)

Estimator = Literal["ppo", "grpo", "rloo", "reinforce_pp", "remax", "fdpg"]


class RLData(Section):
    path: str = Field("", description="Prompt file (`prompt` + any extra fields).")
    split: str | None = Field(None, description="Split of a DatasetDict folder.")
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts.")
    chat_template: str = Field("auto", description="As in data.chat_template of SFT.")


class VLLMSettings(Section):
    gpu_memory_utilization: float = Field(
        0.3,
        gt=0.0,
        le=1.0,
        description="Share of the GPU vLLM may take (it sits beside the trainer on the same GPU).",
    )
    enforce_eager: bool = Field(
        False, description="Skip CUDA-graph capture (faster start, slower decoding)."
    )
    max_model_len: int | None = Field(
        None, ge=1, description="Context of the engine (default: prompt + response limits)."
    )


class Rollout(Section):
    backend: Literal["hf", "vllm"] = Field(
        "hf",
        description=(
            "'hf': transformers generate with KV cache; 'vllm': a vLLM engine on the same GPU "
            "(pip install 'alignkit[vllm]'; falls back to hf with a warning where it cannot run)."
        ),
    )
    vllm: VLLMSettings = Field(default_factory=VLLMSettings, description="vLLM engine settings.")
    split_prompts: bool = Field(
        False,
        description=(
            "Several processes: each generates and scores its own share of the prompts (whole "
            "groups) instead of every process generating the whole batch. Faster; equal to one "
            "process in distribution, not bit for bit."
        ),
    )
    prompts_per_step: int = Field(16, ge=1, description="Prompts sampled per RL iteration.")
    num_generations: int = Field(
        4, ge=1, description="Responses per prompt (a group; GRPO/RLOO need >= 2)."
    )
    max_new_tokens: int = Field(48, ge=1, description="Maximum response tokens.")
    max_prompt_length: int = Field(192, ge=1, description="Prompts keep their last N tokens.")
    temperature: float = Field(
        1.0, gt=0.0, description="Sampling temperature (also used in the ratio)."
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Top-k sampling (0 = off).")
    generation_batch_size: int = Field(64, ge=1, description="Sequences per generate() call.")


class RewardSource(Section):
    model: str | None = Field(None, description="Reward model folder (alignkit reward).")
    models: list[str] = Field(
        default_factory=list, description="Several reward models: an ensemble."
    )
    ensemble: Literal["mean", "min", "mean_minus_std"] = Field(
        "mean", description="How ensemble members combine."
    )
    ensemble_std_coef: float = Field(1.0, ge=0, description="k in mean − k·std.")
    function: str | None = Field(
        None,
        description="Python reward `module:function(prompts, responses, records) -> scores`.",
    )
    oracle: str | None = Field(None, description="Sandbox world folder: the gold oracle rewards.")
    clip: float | None = Field(10.0, description="Clip scores to ±clip (None = no clip).")
    normalize: bool = Field(
        False, description="Standardise scores with running mean/std before the KL penalty."
    )
    eos_penalty: float = Field(
        -1.0, description="Added to the score of responses that never emit EOS (0 = off)."
    )


class Safety(Section):
    enabled: bool = Field(False, description="Safe RLHF: a cost stream held under a threshold.")
    cost_model: str | None = Field(None, description="Cost model folder (alignkit cost).")
    cost_function: str | None = Field(None, description="Python cost `module:function`.")
    oracle: str | None = Field(
        None, description="Sandbox world folder: the gold oracle's harm label is the cost."
    )
    threshold: float = Field(0.0, description="d: the bound on expected episode cost.")
    lambda_init: float = Field(1.0, gt=0, description="Initial Lagrange multiplier λ.")
    lambda_lr: float = Field(0.1, gt=0, description="SGD step on log λ.")
    lambda_max: float | None = Field(5.0, description="Clamp λ ≤ λ_max (None = no clamp).")
    window: int = Field(128, ge=1, description="Recent episodes in the mean cost estimate.")
    delay: int = Field(0, ge=0, description="Iterations before λ starts to move.")
    cost_critic: str | None = Field(
        None, description="Initialise the cost critic from this folder (default: cost model)."
    )


class Algo(Section):
    estimator: Estimator = Field("grpo", description="Advantage estimator.")
    kl_coef: float = Field(0.05, ge=0, description="β: weight of the KL leash to the reference.")
    kl_penalty: Literal["reward", "loss"] = Field(
        "reward",
        description="'reward': per-token −β·k1 in the reward (PPO, RLOO, REINFORCE++); 'loss': β·k3 in the loss (GRPO).",
    )
    kl_target: float | None = Field(
        None, gt=0, description="Adaptive β (Ziegler): target KL per sequence; None = fixed."
    )
    kl_horizon_k: float = Field(0.1, gt=0, description="K_β of the adaptive controller.")
    clip_eps: float = Field(0.2, gt=0, description="PPO ratio clip ε.")
    value_clip: float = Field(0.2, gt=0, description="Value clip ε_v.")
    vf_coef: float = Field(0.1, ge=0, description="Value-loss weight (critic optimiser).")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount γ.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE λ.")
    whiten_advantages: bool = Field(True, description="Whiten advantages over the rollout batch.")
    scale_by_std: bool = Field(
        True, description="GRPO: divide by the group std (False = Dr. GRPO)."
    )
    aggregation: Literal["token", "sequence", "dr_grpo"] = Field(
        "token", description="Token aggregation of the policy loss (token = DAPO)."
    )
    epochs: int = Field(1, ge=1, description="Optimisation passes over each rollout batch.")
    minibatch_size: int = Field(
        64, ge=1, description="Sequences per optimizer step within an update."
    )
    fdpg_divergence: Literal["reverse_kl", "forward_kl", "js"] = Field(
        "reverse_kl", description="f-DPG: the f-divergence to π_ref·exp(r/β)."
    )
    ptx_coef: float = Field(0.0, ge=0, description="Weight of a pretraining (SFT) loss term.")
    ptx_data: str | None = Field(None, description="Demonstrations for the ptx term.")


class CriticConfig(Section):
    path: str | None = Field(None, description="Critic init (default: the reward model).")
    lr: float = Field(5e-5, gt=0, description="Critic learning rate.")


class Monitor(Section):
    world: str | None = Field(
        None, description="Sandbox world: log the gold oracle reward beside the proxy reward."
    )
    max_kl: float = Field(20.0, gt=0, description="Warn when the KL to the reference exceeds this.")
    max_length_ratio: float = Field(
        2.0, gt=0, description="Warn when mean response length grows past this × the start."
    )


class RLConfig(Section):
    """Online RL from feedback: rollout → score → advantage → update."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="Policy to train.")
    reference: str | None = Field(
        None,
        description="Reference model folder (default: model.path; a LoRA policy uses its base with the adapter off).",
    )
    data: RLData = Field(default_factory=RLData, description="Prompts.")
    rollout: Rollout = Field(default_factory=Rollout, description="Sampling.")
    reward: RewardSource = Field(
        default_factory=RewardSource, description="Where scores come from."
    )
    safety: Safety = Field(default_factory=Safety, description="Safe RLHF cost stream.")
    algo: Algo = Field(default_factory=Algo, description="Estimator and losses.")
    critic: CriticConfig = Field(default_factory=CriticConfig, description="PPO critic.")
    monitor: Monitor = Field(default_factory=Monitor, description="Reward-hacking monitors.")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(
            lr=1e-5, max_steps=50, batch_size=16, max_grad_norm=1.0
        ),
        description="max_steps = RL iterations; batch_size = sequences per micro-batch.",
    )

    @model_validator(mode="after")
    def _coherent(self) -> RLConfig:
        a = self.algo
        if a.estimator in ("grpo", "rloo") and self.rollout.num_generations < 2:
            raise ConfigError(
                f"algo.estimator={a.estimator} compares responses within a group: set "
                "rollout.num_generations >= 2"
            )
        return self


def _with_defaults(base: type[SectionT], name: str, **defaults: object) -> type[SectionT]:
    """A subclass of ``base`` whose listed fields default to ``defaults``. Field defaults, not a
    default instance: ``alignkit ppo algo.epochs=1`` must keep estimator=ppo, and a default
    instance would be replaced wholesale by any ``algo.*`` override."""
    fields: dict[str, Any] = {
        k: (base.model_fields[k].annotation, Field(v, description=base.model_fields[k].description))
        for k, v in defaults.items()
    }
    return create_model(name, __base__=base, **fields)


def _preset(name: str, **defaults: object) -> type[RLConfig]:
    """A subclass of RLConfig whose algo/safety defaults match the named method."""
    title = name.replace("-", "_").title().replace("_", "")
    algo_cls = _with_defaults(
        Algo, f"{title}Algo", **{k: v for k, v in defaults.items() if k in Algo.model_fields}
    )
    safety_cls = _with_defaults(Safety, f"{title}Safety", enabled=bool(defaults.get("safe", False)))

    class Preset(RLConfig):
        algo: algo_cls = Field(default_factory=algo_cls, description="Estimator and losses.")  # type: ignore[valid-type]
        safety: safety_cls = Field(  # type: ignore[valid-type]
            default_factory=safety_cls, description="Safe RLHF cost stream."
        )

    Preset.__name__ = Preset.__qualname__ = f"{name.replace('-', '_').upper()}Config"
    return Preset


PPOConfig = _preset("ppo", estimator="ppo", kl_penalty="reward", epochs=2)
GRPOConfig = _preset("grpo", estimator="grpo", kl_penalty="loss", kl_coef=0.04)
RLOOConfig = _preset("rloo", estimator="rloo", kl_penalty="reward")
SafeRLHFConfig = _preset(
    "safe-rlhf", estimator="ppo", kl_penalty="reward", kl_coef=0.01, epochs=2, safe=True
)

RUNNER = "alignkit.recipes.online_rl:run_rl"
COMMANDS = [
    RecipeSpec(
        "rl", RLConfig, RUNNER, "Online RL from feedback with any estimator (algo.estimator=...)."
    ),
    RecipeSpec(
        "ppo", PPOConfig, RUNNER, "PPO with a critic and a per-token KL penalty (classic RLHF)."
    ),
    RecipeSpec(
        "grpo", GRPOConfig, RUNNER, "GRPO: group-normalised advantages, KL (k3) in the loss."
    ),
    RecipeSpec(
        "rloo", RLOOConfig, RUNNER, "RLOO: leave-one-out baseline, sequence-level KL in the reward."
    ),
    RecipeSpec(
        "safe-rlhf",
        SafeRLHFConfig,
        RUNNER,
        "Safe RLHF: PPO-Lagrangian with a cost model and threshold.",
    ),
]
