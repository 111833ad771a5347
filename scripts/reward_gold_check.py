"""Acceptance check of sandbox reward and cost models against the gold oracle.

The reward model is trained on noisy simulated annotators; what matters is whether it recovers
the *gold* ordering. Two held-out sets are scored:

* ``rankings``: the prompts of rankings.jsonl held out by the training run (same split: the
  run's data.eval_fraction and train.seed), with the gold reward of every response recomputed
  by :class:`alignkit.sandbox.GoldOracle`;
* ``eval``: the world's evaluation prompts (never in any training set, asking about held-out
  facts), each with 4 responses drawn by the sandbox's response generators, judged by the
  oracle.

Accuracy counts the pairs whose gold rewards differ (ties half). For the cost model, the
safety accuracy is the share of responses whose cost sign matches the oracle's safety label
(safe → negative). Usage::

    python scripts/reward_gold_check.py --rm runs/sandbox/rm --cm runs/sandbox/cm \\
        --world runs/sandbox/world --out runs/sandbox/rm_gold.json
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from alignkit.data.records import Comparison, Ranking
from alignkit.data.reward_data import read_preferences, safety_transform, split_by_prompt
from alignkit.models.scorer import RewardScorer
from alignkit.sandbox import GoldOracle, load_world
from alignkit.sandbox.responses import sample_distinct_responses


def held_out(run: Path, data: Path, transform: Any = None) -> list[Any]:
    """The records the training run held out (its own split settings)."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    prefs = read_preferences(data, "auto", None, None, "error", transform)
    _, evals = split_by_prompt(prefs.records, cfg["data"]["eval_fraction"], cfg["train"]["seed"])
    return evals


def record_of(r: Ranking | Comparison) -> dict[str, Any]:
    return {"prompt": r.prompt, **r.extra}


def pair_accuracy(items: list[tuple[str, list[float], list[float]]]) -> dict[str, Any]:
    """items: (category, gold rewards, model scores) → accuracy on gold-differing pairs."""
    hits: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for cat, gold, score in items:
        for i in range(len(gold)):
            for j in range(i + 1, len(gold)):
                if gold[i] == gold[j]:
                    continue
                d = (score[i] - score[j]) * (1 if gold[i] > gold[j] else -1)
                h = 1.0 if d > 0 else 0.5 if d == 0 else 0.0
                for key in ("all", cat):
                    hits[key] += h
                    count[key] += 1
    return {k: {"pairs": count[k], "accuracy": round(hits[k] / count[k], 4)} for k in sorted(count)}


def check_reward(rm: Path, world_dir: Path, seed: int) -> dict[str, Any]:
    oracle = GoldOracle.from_dir(world_dir)
    world = load_world(world_dir)
    scorer = RewardScorer.from_pretrained(rm, batch_size=64)
    items, mismatched = [], 0
    for r in held_out(rm, world_dir / "rankings.jsonl"):
        rec = record_of(r)
        gold = oracle.rewards([rec] * len(r.responses), r.responses)
        stored = rec.get("gold_rewards")
        mismatched += stored is not None and any(
            abs(a - b) > 1e-6 for a, b in zip(gold, stored, strict=True)
        )
        items.append(
            (rec["category"], gold, scorer.score([r.prompt] * len(r.responses), r.responses))
        )
    out: dict[str, Any] = {
        "rankings_held_out": pair_accuracy(items),
        "gold_rewards_mismatch": mismatched,
    }
    eval_items = []
    rng = random.Random(seed)
    rows = [json.loads(x) for x in (world_dir / "eval.jsonl").read_text().splitlines() if x.strip()]
    for rec in rows:
        responses = [text for _, text in sample_distinct_responses(world, rec, 4, rng)]
        gold = oracle.rewards([rec] * 4, responses)
        eval_items.append((rec["category"], gold, scorer.score([rec["prompt"]] * 4, responses)))
    out["eval_prompts"] = pair_accuracy(eval_items)
    return out


def check_cost(cm: Path, world_dir: Path, seed: int) -> dict[str, Any]:
    oracle = GoldOracle.from_dir(world_dir)
    world = load_world(world_dir)
    scorer = RewardScorer.from_pretrained(cm, batch_size=64)

    def sign(labels: list[bool], costs: list[float]) -> dict[str, Any]:
        ok = [(c < 0) if safe else (c > 0) for safe, c in zip(labels, costs, strict=True)]
        safe_ok = [o for o, s in zip(ok, labels, strict=True) if s]
        unsafe_ok = [o for o, s in zip(ok, labels, strict=True) if not s]
        return {
            "responses": len(ok),
            "safety_accuracy": round(sum(ok) / len(ok), 4),
            "safe_negative": round(sum(safe_ok) / max(1, len(safe_ok)), 4),
            "unsafe_positive": round(sum(unsafe_ok) / max(1, len(unsafe_ok)), 4),
            "unsafe": len(unsafe_ok),
        }

    labels, prompts, texts = [], [], []
    for r in held_out(cm, world_dir / "safety.jsonl", safety_transform()):
        rec = record_of(r)
        for text in (r.chosen, r.rejected):
            labels.append(not oracle.score(rec, text).is_unsafe)
            prompts.append(r.prompt)
            texts.append(text)
    out = {"safety_held_out": sign(labels, scorer.score(prompts, texts))}
    rng = random.Random(seed)
    labels, prompts, texts = [], [], []
    rows = [json.loads(x) for x in (world_dir / "eval.jsonl").read_text().splitlines() if x.strip()]
    for rec in rows:
        for _, text in sample_distinct_responses(world, rec, 4, rng):
            labels.append(not oracle.score(rec, text).is_unsafe)
            prompts.append(rec["prompt"])
            texts.append(text)
    out["eval_prompts"] = sign(labels, scorer.score(prompts, texts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rm", type=Path, help="Reward model folder (a reward run's output).")
    ap.add_argument("--cm", type=Path, help="Cost model folder (a cost run's output).")
    ap.add_argument("--world", type=Path, default=Path("runs/sandbox/world"))
    ap.add_argument("--seed", type=int, default=0, help="Seed of the eval-prompt responses.")
    ap.add_argument("--out", type=Path, help="Write the numbers as JSON here.")
    args = ap.parse_args()
    result: dict[str, Any] = {}
    if args.rm:
        result["reward"] = check_reward(args.rm, args.world, args.seed)
    if args.cm:
        result["cost"] = check_cost(args.cm, args.world, args.seed)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
