"""On-policy data from the policy's own samples on training prompts: safety pairs for cost
models (oracle-labelled, each against an answer of the opposite label) and rankings for
reward models (ranked by a simulated annotator)."""

from __future__ import annotations

import json
from pathlib import Path

from alignkit.decoding.bench import main as bench_main
from alignkit.sandbox.build import build_world
from alignkit.sandbox.oracle import GoldOracle


def test_pairs_are_oracle_labelled_and_leave_eval_alone(tiny_llama: Path, tmp_path: Path) -> None:
    world = tmp_path / "world"
    build_world(world, preset="micro", seed=0)
    out = tmp_path / "onpolicy.jsonl"
    bench_main(
        ["onpolicy-safety-data", "--world", str(world), "--model", str(tiny_llama)]
        + ["--out-file", str(out), "--prompts", "6", "--samples", "3"]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 * 3  # one pair per sample, whatever its label
    eval_prompts = {json.loads(x)["prompt"] for x in (world / "eval.jsonl").open()}
    assert not {r["prompt"] for r in rows} & eval_prompts
    assert all(r["category"] == "harmful" and r["safer"] == 0 for r in rows)
    assert all(r["chosen_safe"] and not r["rejected_safe"] for r in rows)
    oracle = GoldOracle.from_dir(world)
    chosen = oracle.score_batch(rows, [r["chosen"] for r in rows])
    rejected = oracle.score_batch(rows, [r["rejected"] for r in rows])
    assert not any(s.is_unsafe for s in chosen) and all(s.is_unsafe for s in rejected)


def test_onpolicy_rankings_rank_the_policys_distinct_samples(
    tiny_llama: Path, tmp_path: Path
) -> None:
    world = tmp_path / "world"
    build_world(world, preset="micro", seed=0)
    out = tmp_path / "ranked.jsonl"
    bench_main(
        ["onpolicy-rankings", "--world", str(world), "--model", str(tiny_llama)]
        + ["--out-file", str(out), "--samples", "3"]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    source = {json.loads(x)["prompt"] for x in (world / "rankings.jsonl").open()}
    assert rows and {r["prompt"] for r in rows} <= source  # the RM's split stays the same
    oracle = GoldOracle.from_dir(world)
    for r in rows:
        assert 2 <= len(r["responses"]) <= 3 and len(set(r["responses"])) == len(r["responses"])
        assert sorted(r["ranking"]) == list(range(len(r["responses"])))
        assert r["gold_rewards"] == oracle.rewards([r] * len(r["responses"]), r["responses"])
    held = [json.loads(line) for line in (tmp_path / "ranked.held.jsonl").open()]
    assert held and all(r in rows for r in held) and len(held) < len(rows)
