"""Decoding-aid training sets: counterfactual reading practice and the arithmetic curriculum."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from alignkit.decoding.bench import main as bench_main
from alignkit.sandbox.build import build_world, load_world
from alignkit.sandbox.world import World, stem


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_world(out, preset="micro", seed=0)
    return out


def test_invented_entities_are_new_and_from_the_worlds_domains() -> None:
    w = World.generate(0, "micro")
    new = w.invent(5, 7, random.Random(1))
    old = {stem(n) for n in (*w.countries, *w.rivers, *(e.name for e in w.entities))}
    old |= {stem(n) for n in (*w.unknown_names_train, *w.unknown_names_eval)}
    assert len(new) == 12 and len({stem(e.name) for e in new}) == 12
    assert not {stem(e.name) for e in new} & old
    cities = {e.name for e in w.cities}
    for e in new:
        if e.kind == "city":
            assert e.attrs["country"] in w.countries and e.attrs["river"] in w.rivers
        else:
            assert e.attrs["city"] in cities


def test_rows_answer_from_passages_and_leave_eval_alone(world_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cf.jsonl"
    bench_main(
        ["counterfactual-data", "--world", str(world_dir), "--out-file", str(out)]
        + ["--invented", "24", "--real", "12", "--others", "10"]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    eval_prompts = {json.loads(x)["prompt"] for x in (world_dir / "eval.jsonl").open()}
    assert not {r["prompt"] for r in rows} & eval_prompts
    invented = [r for r in rows if r.get("subtype") == "invented"]
    assert len(invented) == 24 * 3  # every fact of the 24 invented entities with a passage
    for r in invented:
        question = r["prompt"].rsplit("Question: ", 1)[1]
        # The answer is stated by a passage in the prompt, never by the world itself.
        assert r["completion"] in r["prompt"].split("Question: ")[0]
        name = r["completion"].split()[0] if not r["completion"].startswith("The ") else None
        assert name is None or name in question
    unknown = [r for r in rows if r.get("subtype") == "unknown_entity"]
    assert unknown and all(r["completion"].startswith("I don't know") for r in unknown)
    # Abstaining is taught through passages only; fact questions also come plain.
    unanswerable = [r for r in rows if r["category"] == "unanswerable"]
    assert all("Question: " in r["prompt"] for r in unanswerable)
    assert any(r["category"] == "fact" and "Question: " not in r["prompt"] for r in rows)
    world = load_world(world_dir)
    names = {e.name for e in world.entities}
    assert not {r["completion"].split()[0] for r in invented} & names


def test_arithmetic_curriculum_is_right_and_held_out(world_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "arith.jsonl"
    bench_main(
        ["arithmetic-data", "--world", str(world_dir), "--out-file", str(out)]
        + ["--drills", "50", "--chains", "10", "--others-repeat", "1"]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    eval_prompts = {json.loads(x)["prompt"] for x in (world_dir / "eval.jsonl").open()}
    assert not {r["prompt"] for r in rows} & eval_prompts
    drills = [r for r in rows if r.get("subtype") == "drill"]
    assert len(drills) == 100  # each operation directly and written out
    for r in drills:
        assert r["completion"].endswith(f"The answer is {r['gold']}.")
        if "=" in r["completion"]:
            a, op, b, _, c = r["completion"].split(".")[0].split()
            x, y = int(a), int(b)
            assert (x + y if op == "+" else x - y if op == "-" else x * y) == int(c)
    chains = [r for r in rows if r.get("subtype") in ("multi", "word")]
    direct = [r for r in chains if "=" not in r["completion"]]
    assert len(direct) == len(chains) // 2 == 10
    assert any(r["category"] not in ("arithmetic",) for r in rows)  # the SFT demonstrations
