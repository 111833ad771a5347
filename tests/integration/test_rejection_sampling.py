"""alignkit rejection-sampling: the judge's argmax is kept, trained on, and rounds chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.config import ConfigError, load_config
from alignkit.configs.rejection_sampling import RejectionSamplingConfig
from alignkit.data.readers import read_jsonl_dicts, write_jsonl
from alignkit.recipes.rejection_sampling import build_judge, round_prompts, select_best
from alignkit.recipes.rejection_sampling import run_rejection_sampling as run
from alignkit.rollout.judges import OracleJudge

runner = CliRunner()


@pytest.fixture(scope="module")
def micro_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from alignkit.sandbox.build import build_world

    out = tmp_path_factory.mktemp("world") / "micro"
    build_world(out, "micro", 0)
    return out


def config(model: Path, judge: str, prompts: Path, out: Path, *extra: str):
    return load_config(
        RejectionSamplingConfig,
        None,
        [
            f"model.path={model}",
            f"judge={judge}",
            f"data.path={prompts}",
            f"train.output_dir={out}",
            "data.limit=8",
            "data.max_length=96",
            "n=4",
            "sampling.max_new_tokens=10",
            "selection.drop_unfinished=false",
            "train.max_steps=2",
            "train.lr=1e-2",
            "train.progress=false",
            *extra,
        ],
    )


def test_select_best_is_the_judges_argmax() -> None:
    rows = [
        {"prompt": "a", "id": 1, "responses": ["x", "y", "z"], "scores": [0.1, 0.9, 0.5]},
        {"prompt": "b", "responses": ["x", "y"], "scores": [0.3, 0.3]},  # tie: the first
        {
            "prompt": "c",
            "responses": ["long", "short"],
            "scores": [2.0, 1.0],
            "finished": [False, True],
        },
        {"prompt": "d", "responses": ["x"], "scores": [5.0], "finished": [False]},
        {"prompt": "e", "responses": ["x", "y"], "scores": [-1.0, -2.0]},
    ]
    chosen, stats = select_best(rows, drop_unfinished=True, min_score=0.0)
    assert [(c["prompt"], c["completion"], c["score"]) for c in chosen] == [
        ("a", "y", 0.9),
        ("b", "x", 0.3),
        ("c", "short", 1.0),  # the unfinished higher-scored one is never chosen
    ]
    assert chosen[0]["id"] == 1 and chosen[0]["sample_index"] == 1
    assert stats["all_unfinished"] == 1 and stats["below_min_score"] == 1
    assert stats["all_equal_groups"] == 1 and stats["selected"] == 3
    chosen, _ = select_best(rows, drop_unfinished=False, min_score=None)
    assert [c["completion"] for c in chosen] == ["y", "x", "long", "x", "x"]


def test_round_prompts_windows() -> None:
    recs = list(range(5))
    assert round_prompts(recs, None, 3) == recs  # type: ignore[arg-type]
    assert round_prompts(recs, 2, 1) == [0, 1]  # type: ignore[arg-type]
    assert round_prompts(recs, 2, 3) == [4, 0]  # type: ignore[arg-type]


def test_oracle_argmax_is_trained_on_and_rounds_chain(
    tiny_llama: Path, micro_world: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rs"
    prompts = micro_world / "rl_prompts.jsonl"
    run(config(tiny_llama, str(micro_world), prompts, out, "rounds=2"))
    oracle = OracleJudge(micro_world)
    for r in (1, 2):
        samples = read_jsonl_dicts(out / f"round-{r}" / "samples.jsonl")
        selected = read_jsonl_dicts(out / f"round-{r}" / "selected.jsonl")
        assert len(samples) == 8 and all(len(s["responses"]) == 4 for s in samples)
        for s, c in zip(samples, selected, strict=True):
            # the stored scores are the oracle's, and the selected response is their argmax
            rescored = oracle.score([s["prompt"]] * 4, s["responses"], [s] * 4)
            assert rescored == s["scores"]
            assert c["completion"] == s["responses"][s["scores"].index(max(s["scores"]))]
            assert c["prompt"] == s["prompt"] and c["category"] == s["category"]
    # round 2 starts from round 1's model, and each round changed the weights
    cfg2 = (out / "round-2" / "model" / "config.yaml").read_text()
    assert f"path: {out / 'round-1' / 'model'}" in cfg2
    w0 = load_file(str(tiny_llama / "model.safetensors"))
    w1 = load_file(str(out / "round-1" / "model" / "model.safetensors"))
    w2 = load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    assert summary["rounds"][0]["mean_selected_score"] >= summary["rounds"][0]["mean_sample_score"]

    # rerun: nothing resampled or retrained; filter round 1's data: round 1 retrains, and
    # round 2, whose samples come from that model, is sampled again
    stamp = {
        f: (out / f).stat().st_mtime_ns
        for f in (
            "round-1/samples.jsonl",
            "round-1/model/model.safetensors",
            "round-2/samples.jsonl",
        )
    }
    run(config(tiny_llama, str(micro_world), prompts, out, "rounds=2"))
    assert all((out / f).stat().st_mtime_ns == t for f, t in stamp.items())
    write_jsonl(out / "round-1" / "selected.jsonl", selected[:3])
    run(config(tiny_llama, str(micro_world), prompts, out, "rounds=2"))
    assert (out / "round-1/samples.jsonl").stat().st_mtime_ns == stamp["round-1/samples.jsonl"]
    for f in ("round-1/model/model.safetensors", "round-2/samples.jsonl"):
        assert (out / f).stat().st_mtime_ns != stamp[f], f


def test_function_judge_and_cli(tiny_llama: Path, micro_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = runner.invoke(
        app,
        [
            "rejection-sampling",
            "--model",
            str(tiny_llama),
            "--judge",
            "rewards_for_tests:count_e",
            "--n",
            "3",
            "--prompts",
            str(micro_world / "rl_prompts.jsonl"),
            "--out",
            str(out),
            "data.limit=6",
            "sampling.max_new_tokens=10",
            "selection.drop_unfinished=false",
            "train.max_steps=1",
            "train.progress=false",
        ],
    )
    assert res.exit_code == 0, res.output
    for s, c in zip(
        read_jsonl_dicts(out / "round-1" / "samples.jsonl"),
        read_jsonl_dicts(out / "round-1" / "selected.jsonl"),
        strict=True,
    ):
        assert s["scores"] == [float(t.count("e")) for t in s["responses"]]
        assert c["score"] == max(s["scores"]) and c["completion"].count("e") == max(s["scores"])
    assert (out / "model.safetensors").is_file()
    res = runner.invoke(app, ["rejection-sampling", "--model", str(tiny_llama), "--prompts", "x"])
    assert res.exit_code == 2 and "judge is empty" in res.output


def test_judge_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot import"):
        build_judge("no_such_module_xyz:fn")
    with pytest.raises(ConfigError, match="not a sandbox world"):
        build_judge(str(tmp_path))
