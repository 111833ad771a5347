"""The one online loop on tiny random models: every estimator runs, ρ = 1 at each update's
first step, rewards rise on a learnable toy reward, Safe RLHF moves λ, resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.config import ConfigError, load_config
from alignkit.configs.rl import GRPOConfig, RLConfig
from alignkit.engine.tracking import read_metrics
from alignkit.recipes.online_rl import run_rl


@pytest.fixture()
def prompt_file(tmp_path: Path) -> Path:
    rows = [
        {"prompt": p, "topic": i % 3}
        for i, p in enumerate(
            [
                "count to three",
                "say a number",
                "what is one plus one",
                "name a color",
                "hello there",
                "list two words",
            ]
        )
    ]
    f = tmp_path / "prompts.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def rl_cfg(model: Path, prompts: Path, out: Path, *extra: str, cls: type = RLConfig) -> RLConfig:
    base = [
        f"model.path={model}",
        f"data.path={prompts}",
        f"train.output_dir={out}",
        "reward.function=rewards_for_tests:count_one",
        "rollout.prompts_per_step=4",
        "rollout.num_generations=4",
        "rollout.max_new_tokens=8",
        "algo.minibatch_size=8",
        "train.batch_size=4",
        "train.max_steps=2",
        "train.lr=1e-3",
        "train.progress=false",
    ]
    return load_config(cls, None, base + list(extra))


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce_pp", "remax", "fdpg", "ppo"])
def test_every_estimator_runs_and_ratio_is_one_at_first_step(
    tiny_llama, prompt_file, tmp_path, estimator
) -> None:
    kl = "loss" if estimator == "grpo" else "reward"
    out = run_rl(
        rl_cfg(
            tiny_llama,
            prompt_file,
            tmp_path / estimator,
            f"algo.estimator={estimator}",
            f"algo.kl_penalty={kl}",
        )
    )
    rows = read_metrics(out / "metrics.jsonl")
    assert len(rows) == 2
    for r in rows:
        assert r["ratio_first_max_dev"] < 1e-5, "ρ must be 1 on the first minibatch of each update"
        for key in ("reward", "kl", "length", "no_eos", "entropy", "uniform_groups"):
            assert key in r
    assert (out / "model.safetensors").exists()
    if estimator == "ppo":
        assert (out / "critic" / "config.json").exists() and "critic/loss" in rows[0]


def test_grpo_raises_a_learnable_reward(tiny_llama, prompt_file, tmp_path) -> None:
    cfg = rl_cfg(
        tiny_llama,
        prompt_file,
        tmp_path / "learn",
        "train.max_steps=25",
        "train.lr=1e-2",
        "algo.kl_coef=0.0",
        "reward.function=rewards_for_tests:count_e",
        "rollout.num_generations=8",
        "algo.minibatch_size=32",
        "train.batch_size=16",
        cls=GRPOConfig,
    )
    out = run_rl(cfg)
    rewards = [r["reward"] for r in read_metrics(out / "metrics.jsonl")]
    early, late = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert late > 2 * early, (early, late)


def test_safe_rlhf_moves_lambda_against_the_threshold(tiny_llama, prompt_file, tmp_path) -> None:
    out = run_rl(
        rl_cfg(
            tiny_llama,
            prompt_file,
            tmp_path / "safe",
            "train.max_steps=3",
            "safety.enabled=true",
            "safety.cost_function=rewards_for_tests:cost_long",
            "safety.threshold=-1.0",
            "algo.estimator=ppo",
        )
    )
    rows = read_metrics(out / "metrics.jsonl")
    # Mean cost stays above d = −1 (some responses are long), so λ must grow every iteration.
    lambdas = [r["lambda"] for r in rows]
    assert all(b > a for a, b in zip([1.0, *lambdas], lambdas, strict=False))
    assert (out / "cost_critic" / "config.json").exists()


def test_resume_continues_with_identical_weights(
    tiny_llama, prompt_file, tmp_path, monkeypatch
) -> None:
    full = run_rl(rl_cfg(tiny_llama, prompt_file, tmp_path / "full", "train.max_steps=4"))
    from alignkit.engine import loop

    original = loop.Trainer.train_step
    calls = {"n": 0}

    def crash(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # iteration 3's update (one optimizer step per iteration here)
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(loop.Trainer, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        run_rl(
            rl_cfg(
                tiny_llama,
                prompt_file,
                tmp_path / "crash",
                "train.max_steps=4",
                "train.save_every=2",
            )
        )
    monkeypatch.setattr(loop.Trainer, "train_step", original)
    resumed = run_rl(
        rl_cfg(
            tiny_llama, prompt_file, tmp_path / "crash", "train.max_steps=4", "train.save_every=2"
        )
    )
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-6, k
    assert [r["iteration"] for r in read_metrics(resumed / "metrics.jsonl")] == [1, 2, 3, 4]


def test_config_errors_are_clear(tiny_llama, prompt_file, tmp_path) -> None:
    with pytest.raises(ConfigError, match="num_generations >= 2"):
        rl_cfg(
            tiny_llama, prompt_file, tmp_path, "algo.estimator=grpo", "rollout.num_generations=1"
        )
    cfg = rl_cfg(tiny_llama, prompt_file, tmp_path / "x", "reward.oracle=/somewhere")
    with pytest.raises(ConfigError, match="exactly one of reward.model"):
        run_rl(cfg)
    cfg = rl_cfg(tiny_llama, prompt_file, tmp_path / "y", "reward.function=nomodule:fn")
    with pytest.raises(ConfigError, match="cannot import"):
        run_rl(cfg)


def test_cli_grpo(tiny_llama, prompt_file, tmp_path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "grpo",
            f"model.path={tiny_llama}",
            f"data.path={prompt_file}",
            f"train.output_dir={tmp_path / 'cli'}",
            "reward.function=rewards_for_tests:count_one",
            "train.max_steps=1",
            "rollout.prompts_per_step=2",
            "rollout.max_new_tokens=4",
            "train.progress=false",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "model.safetensors").exists()
    res = CliRunner().invoke(app, ["ppo", "--help"])
    assert "algo.estimator" in res.output and "safety.threshold" in res.output
