"""The shared-prompt layout of group batches gives the padded layout's numbers and gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_close

from alignkit.config import ModelConfig
from alignkit.data.pairs import Group, collate_groups, collate_shared_prompt
from alignkit.models.heads import group_scores, load_scalar_model
from alignkit.models.load import load_causal_lm
from alignkit.models.reference import sequence_logps
from alignkit.models.shared_prompt import group_collator, shared_prompt_problem

PAD = 0


def _groups() -> list[Group]:
    """Pairs and a 3-way ranking with prompts and responses of different lengths."""
    g = torch.Generator().manual_seed(3)

    def ids(n: int) -> list[int]:
        return torch.randint(5, 90, (n,), generator=g).tolist()

    return [
        Group(prompt_ids=ids(7), responses=[ids(4), ids(9)], order=[0, 1]),
        Group(prompt_ids=ids(3), responses=[ids(11), ids(2)], order=[1, 0]),
        Group(prompt_ids=ids(12), responses=[ids(5), ids(5)], order=[0, 1]),
        Group(prompt_ids=ids(5), responses=[ids(6), ids(3)], order=[0, 1]),
    ]


def test_layout_by_hand() -> None:
    """prompt [11, 12], responses [13] and [14, 15], then a second group in the same row."""
    groups = [
        Group(prompt_ids=[11, 12], responses=[[13], [14, 15]]),
        Group(prompt_ids=[21], responses=[[22], [23]]),
    ]
    gb = collate_shared_prompt(groups, PAD, max_length=16)
    rows = gb.shared
    assert rows is not None and gb.batch is None
    assert rows.input_ids.tolist() == [[11, 12, 13, 14, 15, 21, 22, 23]]
    assert rows.position_ids.tolist() == [[0, 1, 2, 2, 3, 0, 1, 1]]
    allowed = rows.allowed[0, 0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],  # response 0 sees the prompt and itself
        [1, 1, 0, 1, 0, 0, 0, 0],  # response 1 does not see response 0
        [1, 1, 0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 0, 0],  # the next group sees nothing of the first
        [0, 0, 0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1, 0, 1],
    ]
    assert rows.last.tolist() == [2, 4, 6, 7]
    # Targets: 13 ← pos 1; 14 ← pos 1, 15 ← pos 3; 22 ← pos 5; 23 ← pos 5.
    assert rows.src.tolist() == [1, 1, 3, 5, 5]
    assert rows.tgt.tolist() == [13, 14, 15, 22, 23]
    assert rows.seg.tolist() == [0, 1, 1, 2, 3]
    assert gb.group_of.tolist() == [0, 0, 1, 1] and gb.index_in_group.tolist() == [0, 1, 0, 1]
    assert gb.num_real_tokens == collate_groups(groups, PAD).batch.num_real_tokens == 11


def test_rows_are_packed_and_padding_sees_only_itself() -> None:
    groups = _groups()
    gb = collate_shared_prompt(groups, PAD, max_length=40)
    rows = gb.shared
    sizes = [len(g.prompt_ids) + sum(map(len, g.responses)) for g in groups]
    assert rows.input_ids.shape[0] < len(groups)  # at least two groups share a row
    assert int((rows.input_ids != PAD).sum()) == sum(sizes)
    diag = rows.allowed[:, 0].diagonal(dim1=1, dim2=2)
    assert bool(diag.all())  # no empty attention row (padding attends to itself)
    pad_rows = rows.allowed[:, 0][rows.input_ids == PAD]
    assert (pad_rows.sum(-1) == 1).all()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logps_and_gradients_match_padded(
    tiny_models: dict[str, Path], arch: str, attn: str
) -> None:
    model, _ = load_causal_lm(ModelConfig(path=str(tiny_models[arch]), attn_implementation=attn))
    model.eval()
    groups = _groups()
    padded = collate_groups(groups, PAD)
    shared = collate_shared_prompt(groups, PAD, max_length=40)
    a_sum, a_len = sequence_logps(model, padded)
    b_sum, b_len = sequence_logps(model, shared)
    assert_close(b_len, a_len)
    assert_close(b_sum, a_sum, atol=1e-4, rtol=1e-5)
    params = [p for p in model.parameters() if p.requires_grad]
    weights = torch.linspace(0.5, 1.5, a_sum.numel()).view_as(a_sum)
    g_a = torch.autograd.grad((a_sum * weights).sum(), params)
    g_b = torch.autograd.grad((b_sum * weights).sum(), params)
    for x, y in zip(g_b, g_a, strict=True):
        assert_close(x, y, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_scalar_scores_match_padded(tiny_models: dict[str, Path], arch: str) -> None:
    model, _ = load_scalar_model(ModelConfig(path=str(tiny_models[arch])), for_training=False)
    groups = _groups()
    a = group_scores(model, collate_groups(groups, PAD))
    b = group_scores(model, collate_shared_prompt(groups, PAD, max_length=40))
    assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_collator_falls_back_with_a_reason(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = load_causal_lm(ModelConfig(path=str(tiny_models["llama"])))
    groups = _groups()
    said: list[str] = []
    collate = group_collator(model, groups, PAD, 40, True, "logps", said.append)
    assert collate(groups).shared is not None and not said
    assert (
        group_collator(model, groups, PAD, 40, False, "logps", said.append)(groups).shared is None
    )

    monkeypatch.setattr(model.config, "_attn_implementation", "flash_attention_2")
    assert "flash_attention_2" in (shared_prompt_problem(model, groups, PAD, 40, "logps") or "")
    monkeypatch.undo()

    # A mask the model does not honour (every response sees the other) is caught by the check.
    import alignkit.models.shared_prompt as sp

    def leaky(gs, pad_id, max_length):
        gb = collate_shared_prompt(gs, pad_id, max_length)
        n = gb.shared.allowed.shape[-1]
        gb.shared.allowed = torch.ones(n, n, dtype=torch.bool).tril().expand_as(gb.shared.allowed)
        return gb

    monkeypatch.setattr(sp, "collate_shared_prompt", leaky)
    collate = sp.group_collator(model, groups, PAD, 40, True, "logps", said.append)
    assert collate(groups).shared is None
    assert said and "disagrees with padded rows" in said[0]
