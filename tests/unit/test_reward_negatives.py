"""Irrelevant negatives for reward models: best response ≻ another prompt's best response."""

from __future__ import annotations

import pytest

from alignkit.config import ConfigError, load_config
from alignkit.configs.reward import RewardConfig
from alignkit.data.pairs import Group
from alignkit.recipes.reward import add_irrelevant_negatives


def ranking(prompt: int, k: int = 3) -> Group:
    # Responses [prompt*10 + j]; order best first is reversed: the best is the last one.
    return Group([prompt], [[prompt * 10 + j] for j in range(k)], list(range(k))[::-1])


def test_added_pairs_put_this_prompts_best_above_another_prompts_best() -> None:
    groups = [ranking(p) for p in range(10)]
    out = add_irrelevant_negatives(groups, 0.5, seed=0)
    assert out[:10] == groups  # originals untouched, in order
    added = out[10:]
    assert len(added) == 5
    for g in added:
        (p,) = g.prompt_ids
        best, other = g.responses
        assert best == [p * 10 + 2]  # this prompt's best (order[0] = 2)
        assert other[0] % 10 == 2 and other[0] // 10 != p  # another prompt's best
        assert g.order == [0, 1] and g.extra["irrelevant"] is True
    assert add_irrelevant_negatives(groups, 0.5, seed=0) == out  # deterministic
    assert add_irrelevant_negatives(groups, 0.5, seed=1) != out


def test_no_pairs_when_off_or_when_every_prompt_is_the_same() -> None:
    groups = [ranking(1), ranking(1)]
    assert add_irrelevant_negatives(groups, 1.0, seed=0) == groups
    assert add_irrelevant_negatives([ranking(1), ranking(2)], 0.0, seed=0) == [
        ranking(1),
        ranking(2),
    ]
    assert len(add_irrelevant_negatives([ranking(1), ranking(2)], 1.0, seed=0)) == 4


def test_share_is_validated_with_the_key_named() -> None:
    with pytest.raises(ConfigError, match="irrelevant_negatives"):
        load_config(RewardConfig, None, ["data.irrelevant_negatives=1.5"])
