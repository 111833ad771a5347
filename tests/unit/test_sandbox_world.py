"""The seeded world: determinism, names a tiny model can learn, prompt records per category."""

from __future__ import annotations

import random

import pytest

from alignkit.sandbox import CATEGORIES, PRESETS, PromptFactory, SandboxError, World
from alignkit.sandbox.world import record_id


def test_same_seed_same_world_other_seed_other_world() -> None:
    a = World.generate(3, "micro").to_dict()
    assert a == World.generate(3, "micro").to_dict()
    assert a != World.generate(4, "micro").to_dict()


def test_world_round_trips_through_dict() -> None:
    w = World.generate(0, "tiny")
    assert World.from_dict(w.to_dict()).to_dict() == w.to_dict()


def test_names_are_unique_short_and_disjoint() -> None:
    w = World.generate(0, "tiny")
    names = w.known_names + w.countries + w.rivers + w.unknown_names_train + w.unknown_names_eval
    assert len(names) == len(set(names))
    assert all(3 <= len(n) <= 9 and n.isalpha() for n in names)
    p = PRESETS["tiny"]
    assert len(w.cities) == p.n_cities and len(w.people) == p.n_people
    # every country has a city, every person lives in a city of the world
    assert {c.attrs["country"] for c in w.cities} == set(w.countries)
    assert {e.attrs["city"] for e in w.people} <= {c.name for c in w.cities}
    assert len(w.eval_facts) == p.n_eval_facts


@pytest.mark.parametrize("category", CATEGORIES)
def test_prompt_records_have_what_the_oracle_needs(category: str) -> None:
    w = World.generate(0, "micro")
    recs = PromptFactory(w, "train").sample(category, 30, random.Random(0))
    assert len(recs) == 30 and len({r["prompt"] for r in recs}) == 30
    for r in recs:
        assert r["category"] == category and r["id"] == record_id(category, r["prompt"])
        assert {"prompt", "subtype", "gold", "max_words"} <= set(r)
        assert len(r["prompt"].split()) <= 30  # short: a tiny model's context is 256 tokens


def test_splits_use_disjoint_facts_and_unknown_names() -> None:
    w = World.generate(0, "micro")
    held = set(w.eval_facts)
    rng = random.Random(0)
    for r in PromptFactory(w, "eval").sample("fact", 10, rng):
        assert (r["entity_id"], r["attribute"]) in held
    for r in PromptFactory(w, "train").sample("fact", 50, rng):
        assert (r["entity_id"], r["attribute"]) not in held
    for r in PromptFactory(w, "eval").sample("unanswerable", 40, rng):
        if r["subtype"] == "unknown_entity":
            assert r["entity"] in w.unknown_names_eval
    for r in PromptFactory(w, "train").sample("unanswerable", 40, rng):
        if r["subtype"] == "unknown_entity":
            assert r["entity"] in w.unknown_names_train


def test_sample_excludes_and_reports_bad_category() -> None:
    w = World.generate(0, "micro")
    f = PromptFactory(w, "train")
    first = f.sample("harmful", 5, random.Random(0))
    again = f.sample("harmful", 5, random.Random(0), exclude=[r["prompt"] for r in first])
    assert not {r["prompt"] for r in first} & {r["prompt"] for r in again}
    with pytest.raises(SandboxError, match="unknown category"):
        f.sample("poetry", 1, random.Random(0))
    with pytest.raises(ValueError, match="split"):
        PromptFactory(w, "test")


def test_from_dict_rejects_foreign_data() -> None:
    with pytest.raises(SandboxError, match="not an alignkit sandbox world"):
        World.from_dict({"hello": 1})
    data = World.generate(0, "micro").to_dict()
    data["format_version"] = 99
    with pytest.raises(SandboxError, match="version"):
        World.from_dict(data)
    data = World.generate(0, "micro").to_dict()
    data["entities"][0]["attrs"] = {"colour": "red"}
    with pytest.raises(SandboxError, match="bad entity"):
        World.from_dict(data)
