"""Pipelines: stage references, lineage-based skipping, reruns of what a change affects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alignkit.config import ConfigError
from alignkit.pipeline import Pipeline, load_pipeline


def write_pipeline(tmp_path: Path, sft_steps: int = 3) -> Path:
    spec = {
        "recipe": "pipeline",
        "root": str(tmp_path / "runs"),
        "stages": [
            {"name": "world", "run": "sandbox", "with": {"preset": "micro", "seed": 1}},
            {
                "name": "base",
                "run": "pretrain",
                "with": {
                    "tokenizer": "${world}/tokenizer",
                    "data.path": "${world}/corpus.jsonl",
                    "data.max_length": 64,
                    "init.hidden_size": 32,
                    "init.intermediate_size": 64,
                    "init.num_hidden_layers": 2,
                    "init.num_attention_heads": 2,
                    "train.max_steps": 3,
                    "train.batch_size": 4,
                    "train.progress": False,
                },
            },
            {
                "name": "sft",
                "run": "sft",
                "with": {
                    "model.path": "${base}",
                    "data.path": "${world}/sft.jsonl",
                    "data.max_length": 96,
                    "train.max_steps": sft_steps,
                    "train.batch_size": 4,
                    "train.progress": False,
                },
            },
            {
                "name": "eval",
                "run": "eval",
                "with": {
                    "world": "${world}",
                    "models": {"base": "${base}", "sft": "${sft}"},
                    "reference": "${sft}",
                    "limit": 6,
                    "max_new_tokens": 6,
                },
            },
        ],
    }
    f = tmp_path / "pipe.yaml"
    f.write_text(yaml.safe_dump(spec))
    return f


def test_pipeline_runs_then_skips_then_reruns_only_what_changed(tmp_path: Path) -> None:
    f = write_pipeline(tmp_path)
    first = Pipeline(load_pipeline(f)).run(log=lambda s: None)
    assert {k: v["status"] for k, v in first["stages"].items()} == {
        "world": "ran",
        "base": "ran",
        "sft": "ran",
        "eval": "ran",
    }
    root = tmp_path / "runs"
    assert (root / "sft" / "model.safetensors").exists()
    table = json.loads((root / "eval" / "table.json").read_text())
    assert set(table) == {"base", "sft"} and table["sft"]["win_rate"] == 0.5
    assert 0.0 <= table["base"]["win_rate"] <= 1.0 and "kl_to_reference" in table["base"]
    lineage = json.loads((root / "sft" / "lineage.json").read_text())
    assert lineage["complete"] and set(lineage["inputs"]) == {"base", "world"}

    again = Pipeline(load_pipeline(f)).run(log=lambda s: None)
    assert all(v["status"] == "skipped" for v in again["stages"].values())

    changed = write_pipeline(tmp_path, sft_steps=4)
    third = Pipeline(load_pipeline(changed)).run(log=lambda s: None)
    status = {k: v["status"] for k, v in third["stages"].items()}
    assert status == {"world": "skipped", "base": "skipped", "sft": "ran", "eval": "ran"}

    forced = Pipeline(load_pipeline(changed)).run(force={"base"}, log=lambda s: None)
    status = {k: v["status"] for k, v in forced["stages"].items()}
    assert status == {"world": "skipped", "base": "ran", "sft": "ran", "eval": "ran"}


def test_unknown_reference_and_command_are_clear(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "root": str(tmp_path / "r"),
                "stages": [{"name": "a", "run": "sft", "with": {"model.path": "${nope}"}}],
            }
        )
    )
    with pytest.raises(ConfigError, match=r"\$\{nope\} does not name an earlier"):
        Pipeline(load_pipeline(f)).plan()
    f.write_text(
        yaml.safe_dump({"root": str(tmp_path / "r"), "stages": [{"name": "a", "run": "dance"}]})
    )
    with pytest.raises(ConfigError, match="unknown command 'dance'"):
        Pipeline(load_pipeline(f)).run(log=lambda s: None)


def test_a_nested_stage_override_sets_one_field_beside_dotted_ones(tmp_path: Path) -> None:
    """`alignkit pipeline q.yaml stages.N.with.data.ranking_pairs=all` arrives nested next to
    the file's flat ``data.path``: both must reach the recipe (the nested one once replaced the
    whole data section and the run failed with 'data.path is empty')."""
    from alignkit.config import load_config
    from alignkit.configs import all_recipes
    from alignkit.pipeline import recipe_overrides

    f = tmp_path / "p.yaml"
    f.write_text(
        yaml.safe_dump(
            {
                "root": str(tmp_path / "r"),
                "stages": [
                    {"name": "dpo", "run": "dpo", "with": {"data.path": "pairs.jsonl", "beta": 0.2}}
                ],
            }
        )
    )
    cfg = load_pipeline(
        f, ["stages.0.with.data.ranking_pairs=best_worst", "stages.0.with.train.lr=3e-4"]
    )
    settings = cfg.stages[0].with_
    out = tmp_path / "r" / "dpo"
    dpo = load_config(all_recipes()["dpo"].config, None, recipe_overrides(settings, out))
    assert dpo.data.path == "pairs.jsonl" and dpo.data.ranking_pairs == "best_worst"
    assert dpo.beta == 0.2 and dpo.train.lr == 3e-4 and dpo.train.output_dir == str(out)
