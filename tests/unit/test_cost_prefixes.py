"""Cost-model prefix copies: truncated responses that keep their safety labels."""

from __future__ import annotations

import pytest

from alignkit.config import ConfigError, load_config
from alignkit.configs.reward import CostConfig
from alignkit.data.pairs import Group
from alignkit.recipes.reward import add_prefixes


def _pairs() -> list[Group]:
    return [
        Group([1, 2], [[10, 11, 12, 13], [20, 21, 22, 23, 24]], [0, 1], safe=[1, -1]),
        Group([3], [[30, 31, 32], [40, 41]], [0, 1], safe=[1, -1]),
        Group([4], [[50], [60, 61]], [0, 1], safe=[1, -1]),  # one-token response stays whole
    ]


def test_prefixes_are_proper_prefixes_with_the_labels_kept() -> None:
    groups = _pairs()
    out = add_prefixes(groups, copies=3, seed=0)
    assert out[: len(groups)] == groups
    added = out[len(groups) :]
    assert added and all(g.extra.get("prefix") for g in added)
    originals = {tuple(g.prompt_ids): g for g in groups}
    for g in added:
        o = originals[tuple(g.prompt_ids)]
        assert g.safe == o.safe and g.order == o.order
        for cut, full in zip(g.responses, o.responses, strict=True):
            assert full[: len(cut)] == cut and 1 <= len(cut) <= max(1, len(full) - 1)
    assert add_prefixes(groups, copies=3, seed=0) == out  # deterministic
    assert add_prefixes(groups, copies=0, seed=0) == groups


def test_prefix_copies_is_validated_with_the_key_named() -> None:
    with pytest.raises(ConfigError, match="data.prefix_copies"):
        load_config(CostConfig, None, ["data.path=x.jsonl", "data.prefix_copies=-1"])
