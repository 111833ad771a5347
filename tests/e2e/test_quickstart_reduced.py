"""The main job, reduced: world → base → SFT → DPO → eval on the real tiny sandbox.

The quickstart (recipes/quickstart.yaml) with a shorter pretraining and one epoch per
alignment stage; the claim it checks is the README's: on the held-out prompts, judged by the
gold oracle, base < SFT < preference-aligned in gold reward, and DPO beats SFT head to head.
About 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from alignkit.pipeline import Pipeline, load_pipeline

REPO = Path(__file__).resolve().parents[2]
PRETRAIN_STEPS = 250


def reduced_quickstart(root: Path) -> dict:
    quiet = {"train.progress": False}
    return {
        "recipe": "pipeline",
        "root": str(root),
        "stages": [
            {"name": "world", "run": "sandbox", "with": {"preset": "tiny", "seed": 0}},
            {
                "name": "base",
                "run": "pretrain",
                "config": "recipes/sandbox/pretrain.yaml",
                "with": {
                    "tokenizer": "${world}/tokenizer",
                    "data.path": "${world}/corpus.jsonl",
                    "train.max_steps": PRETRAIN_STEPS,
                    **quiet,
                },
            },
            {
                "name": "sft",
                "run": "sft",
                "config": "recipes/sandbox/sft.yaml",
                "with": {
                    "model.path": "${base}",
                    "data.path": "${world}/sft_helpful.jsonl",
                    "train.epochs": 1,
                    **quiet,
                },
            },
            {
                "name": "dpo",
                "run": "dpo",
                "config": "recipes/sandbox/dpo.yaml",
                "with": {
                    "model.path": "${sft}",
                    "data.path": "${world}/rankings.jsonl",
                    "train.epochs": 1,
                    "train.lr": 2e-4,
                    **quiet,
                },
            },
            {
                "name": "eval",
                "run": "eval",
                "with": {
                    "world": "${world}",
                    "reference": "${sft}",
                    "models": {"base": "${base}", "sft": "${sft}", "dpo": "${dpo}"},
                },
            },
        ],
    }


def test_reduced_quickstart_orders_base_sft_dpo_by_gold_reward(tmp_path: Path) -> None:
    f = tmp_path / "quickstart.yaml"
    f.write_text(yaml.safe_dump(reduced_quickstart(tmp_path / "runs")))
    Pipeline(load_pipeline(f), base_dir=REPO).run(log=lambda s: None)
    table = json.loads((tmp_path / "runs" / "eval" / "table.json").read_text())
    gold = {name: table[name]["reward_mean"] for name in ("base", "sft", "dpo")}
    assert gold["base"] < gold["sft"] < gold["dpo"], gold
    assert table["dpo"]["win_rate"] > 0.55, table["dpo"]["win_rate"]
    harmful = {n: table[n]["harmful_compliance_rate"] for n in ("base", "sft", "dpo")}
    refused = {n: table[n]["harmful_refusal_rate"] for n in ("base", "sft", "dpo")}
    assert harmful["base"] >= 0.5, harmful  # the base model is unaligned
    # Refusing is learnt from the rankings (the SFT data has no refusals), and DPO complies no
    # more than SFT, whose 0-8 % here is off-topic text rather than refusals. With best-vs-worst
    # pairs DPO picked up "Sure!" openings from the ~20 % of harmful rankings where annotators
    # put compliance first (12-22 % compliance); all pairs of each ranking (the recipe's
    # ranking_pairs: grouped) outvote them (docs/preference.md).
    assert refused["dpo"] > refused["sft"], refused
    assert harmful["dpo"] <= min(harmful["sft"], harmful["base"] / 2), harmful
