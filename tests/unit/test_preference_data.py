"""Preference data transforms (rankings → pairs, pairs → KTO) and the dpo config's names."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from alignkit.configs.preference import DEFAULT_BETA, REFERENCE_FREE, DPOConfig, LossName
from alignkit.data.pairs import Group
from alignkit.data.preference import (
    detect_format,
    distinct_ranking,
    kto_groups,
    pair_groups,
    pairs_to_singles,
    ranked_pairs,
)
from alignkit.data.readers import DataError
from alignkit.data.records import Ranking
from alignkit.losses.preference import PreferenceLoss


def test_config_loss_names_are_the_enum() -> None:
    assert set(typing.get_args(LossName)) == {m.value for m in PreferenceLoss}
    assert set(REFERENCE_FREE) == {m.value for m in PreferenceLoss if not m.needs_reference}
    assert DPOConfig(loss="simpo").resolved_beta() == DEFAULT_BETA["simpo"] == 2.0
    assert DPOConfig(loss="dpo").resolved_beta() == 0.1
    assert DPOConfig(loss="simpo", beta=2.5).resolved_beta() == 2.5


def test_ranking_pairs_all_and_best_worst() -> None:
    g = Group(prompt_ids=[1], responses=[[10], [11], [12], [13]], order=[2, 0, 3, 1])
    all_pairs = pair_groups([g], "all")
    assert [(p.responses[0][0], p.responses[1][0]) for p in all_pairs] == [
        (12, 10), (12, 13), (12, 11), (10, 13), (10, 11), (13, 11),
    ]  # fmt: skip
    assert all(p.order == [0, 1] and p.prompt_ids == [1] for p in all_pairs)
    [bw] = pair_groups([g], "best_worst")
    assert bw.responses == [[12], [11]]
    # grouped: the ranking stays whole and the loss forms the same six pairs from it
    assert pair_groups([g], "grouped") == [g]
    assert ranked_pairs(g) == [(2, 0), (2, 3), (2, 1), (0, 3), (0, 1), (3, 1)]
    assert ranked_pairs(Group([1], [[5], [6]])) == [(0, 1)]  # no order: (chosen, rejected)


def test_distinct_ranking_keeps_the_better_copy_and_drops_degenerate() -> None:
    r = Ranking(prompt="p", responses=["a", "b", "a", "c"], ranking=[2, 1, 0, 3])
    d = distinct_ranking(r)
    assert d is not None and d.responses == ["a", "b", "c"] and d.ranking == [0, 1, 2]
    assert distinct_ranking(Ranking(prompt="p", responses=["a", "a"], ranking=[0, 1])) is None


def test_pairs_to_singles_labels_and_dedupes() -> None:
    pairs = [
        Group([1], [[5], [6]], [0, 1]),
        Group([1], [[5], [7]], [0, 1]),  # the same chosen again: one desirable example
        Group([2], [[9], [8]], [1, 0]),  # order says response 1 won
    ]
    singles = pairs_to_singles(pairs)
    got = [(s.prompt_ids[0], s.responses[0][0], s.labels[0]) for s in singles]
    assert got == [(1, 5, 1.0), (1, 6, 0.0), (1, 7, 0.0), (2, 8, 1.0), (2, 9, 0.0)]


def test_kto_groups_pair_each_example_with_another_completion() -> None:
    singles = [Group([p], [[100 + p]], [0], labels=[float(p % 2)]) for p in range(6)]
    groups = kto_groups(singles, seed=3, max_length=64)
    assert [g.responses[0] for g in groups] == [s.responses[0] for s in singles]
    assert [g.labels for g in groups] == [s.labels for s in singles]
    partners = [g.responses[1][0] - 100 for g in groups]
    assert sorted(partners) == list(range(6)), "every completion is someone's mismatch once"
    assert all(p != i for i, p in enumerate(partners)), "never the example's own completion"
    assert kto_groups(singles, seed=3, max_length=64)[0].responses == groups[0].responses


def test_detect_format(tmp_path: Path) -> None:
    from tiny import write_jsonl

    cases = {
        "pairwise": {"prompt": "p", "chosen": "a", "rejected": "b"},
        "ranking": {"prompt": "p", "responses": ["a", "b"], "ranking": [1, 0]},
        "unpaired": {"prompt": "p", "completion": "a", "label": True},
    }
    for kind, row in cases.items():
        assert detect_format(str(write_jsonl(tmp_path / f"{kind}.jsonl", [row])), None) == kind
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "answer": "a"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1.*data\.format"):
        detect_format(str(bad), None)
