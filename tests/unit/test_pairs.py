from __future__ import annotations

from pathlib import Path

import pytest

from alignkit.data.pairs import (
    GroupTokenizer,
    collate_groups,
    tokenize_comparisons,
    tokenize_rankings,
)
from alignkit.data.records import Comparison, Ranking
from alignkit.data.tokenize import IGNORE_INDEX
from alignkit.models.load import load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_tokenizer: Path):
    return load_tokenizer(str(tiny_tokenizer))


def test_pair_shares_exact_prompt_tokens_and_one_forward_layout(tok) -> None:
    gt = GroupTokenizer(tok, max_length=64)
    groups = tokenize_comparisons(
        gt,
        [
            Comparison(prompt="what is two", chosen="two", rejected="i do not know"),
            Comparison(prompt="hi", chosen="hello", rejected="no"),
        ],
        "mem",
    )
    gb = collate_groups(groups, tok.pad_token_id)
    assert gb.batch.input_ids.shape[0] == 4 and gb.group_of.tolist() == [0, 0, 1, 1]
    assert gb.index_in_group.tolist() == [0, 1, 0, 1]
    g = groups[0]
    assert tok.decode(g.prompt_ids) == "<|user|>what is two<|assistant|>"
    assert (
        tok.decode(g.responses[0]) == "two<|end|>"
        and tok.decode(g.responses[1]) == "i do not know<|end|>"
    )
    row = gb.batch.labels[1]
    trained = [int(t) for t in row if t != IGNORE_INDEX]
    assert tok.decode(trained) == "i do not know<|end|>"


def test_rankings_keep_order_and_truncation_is_counted(tok) -> None:
    gt = GroupTokenizer(tok, max_length=12, max_prompt_length=6)
    [g] = tokenize_rankings(
        gt,
        [
            Ranking(
                prompt="one two three four five six seven",
                responses=["a b c d e f g h", "yes", "no"],
                ranking=[2, 0, 1],
            )
        ],
        "mem",
    )
    assert g.order == [2, 0, 1] and len(g.prompt_ids) == 6
    assert gt.stats.prompt_truncated == 1 and gt.stats.response_truncated == 1
    assert all(len(g.prompt_ids) + len(r) <= 12 for r in g.responses)
