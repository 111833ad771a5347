from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alignkit.config import (
    ConfigError,
    PretrainConfig,
    SFTConfig,
    describe_fields,
    load_config,
    parse_override,
)
from alignkit.configs import all_recipes

REPO = Path(__file__).resolve().parents[2]


def test_overrides_parse_yaml_scalars() -> None:
    assert parse_override("train.lr=1e-4") == (["train", "lr"], 1e-4)
    assert parse_override("model.lora.enabled=true") == (["model", "lora", "enabled"], True)
    assert parse_override("model.lora.target_modules=[q_proj,v_proj]")[1] == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("train.lr")


def test_yaml_plus_overrides(tmp_path: Path) -> None:
    f = tmp_path / "run.yaml"
    f.write_text("model: {path: m}\ntrain: {lr: 0.001, batch_size: 4}\n")
    cfg = load_config(SFTConfig, f, ["train.batch_size=2", "data.packing=true"])
    assert cfg.model.path == "m"
    assert cfg.train.lr == 1e-3 and cfg.train.batch_size == 2 and cfg.data.packing


def test_unknown_key_names_the_key_and_allowed_keys() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, None, ["train.learning_rate=1"])
    assert "train.learning_rate" in str(e.value) and "lr" in str(e.value)


def test_bad_literal_names_allowed_values() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(SFTConfig, None, ["train.scheduler=exp"])
    assert "train.scheduler" in str(e.value) and "cosine" in str(e.value)


def test_stage_list_overrides() -> None:
    cfg = load_config(
        SFTConfig, None, ["stages=[{name: a, data: {path: x}}, {name: b}]", "stages.1.lr=0.5"]
    )
    assert [s.name for s in cfg.stages] == ["a", "b"] and cfg.stages[1].lr == 0.5


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(SFTConfig, "nope.yaml")


def test_describe_fields_covers_every_leaf() -> None:
    keys = {row[0] for row in describe_fields(SFTConfig)}
    assert {"train.lr", "model.lora.r", "data.packing", "stages.N.data.path"} <= keys
    assert all(row[3] for row in describe_fields(SFTConfig)), "every field needs a description"
    assert "init.hidden_size" in {row[0] for row in describe_fields(PretrainConfig)}


def test_every_recipe_yaml_validates() -> None:
    files = sorted((REPO / "recipes").rglob("*.yaml"))
    assert files, "the repository ships example recipes"
    for f in files:
        if "accelerate" in f.parts:
            continue
        head = yaml.safe_load(f.read_text()) or {}
        kind = head.get("recipe") if isinstance(head, dict) else None
        if kind == "pipeline":
            from alignkit.pipeline import Pipeline, load_pipeline

            Pipeline(load_pipeline(f)).plan()  # stage references and config files resolve
            continue
        recipes = all_recipes()
        assert kind in recipes, f"{f}: top-level 'recipe' must be one of {list(recipes)}"
        load_config(recipes[kind].config, f)


def test_recipe_key_must_match_command(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("recipe: pretrain\n")
    with pytest.raises(ConfigError, match="alignkit pretrain"):
        load_config(SFTConfig, f)
