"""``data.ranking_pairs=grouped``: a ranking's C(K, 2) pairs from one forward per response give
the loss, metrics and gradients of the same pairs expanded into separate batch elements."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_close

from alignkit.config import ModelConfig
from alignkit.data.pairs import Group, collate_groups, collate_shared_prompt
from alignkit.data.preference import pair_groups
from alignkit.engine.distributed import Dist
from alignkit.losses.preference import PreferenceConfig, PreferenceLoss
from alignkit.models.load import load_causal_lm
from alignkit.models.reference import Reference, sequence_logps
from alignkit.recipes.preference import PrefBatch, PreferenceStep

PAD = 0


def _rankings() -> list[Group]:
    """A 4-way and a 3-way ranking (a repeated response dropped): K differs in one batch."""
    g = torch.Generator().manual_seed(5)

    def ids(n: int) -> list[int]:
        return torch.randint(5, 90, (n,), generator=g).tolist()

    return [
        Group(prompt_ids=ids(6), responses=[ids(4), ids(7), ids(2), ids(5)], order=[2, 0, 3, 1]),
        Group(prompt_ids=ids(3), responses=[ids(3), ids(8), ids(6)], order=[1, 2, 0]),
    ]


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("rpo", [0.0, 1.0])
def test_grouped_equals_expanded_pairs(tiny_llama: Path, shared: bool, rpo: float) -> None:
    model, _ = load_causal_lm(ModelConfig(path=str(tiny_llama)), for_training=False)
    model.train()
    ranks = _rankings()
    pairs = pair_groups(ranks, "all")
    assert len(pairs) == 6 + 3

    def collate(groups: list[Group]):
        return collate_shared_prompt(groups, PAD, 64) if shared else collate_groups(groups, PAD)

    # Reference log-probs: the frozen starting policy shifted, so log-ratios are not zero.
    with torch.no_grad():
        ref_ranks = sequence_logps(model, collate(ranks))[0] - 0.7
    ref_pairs = torch.stack(
        [
            ref_ranks[gi, [w, l_]]
            for gi, g in enumerate(ranks)
            for w, l_ in [
                (g.order[i], g.order[j])
                for i in range(len(g.order))
                for j in range(i + 1, len(g.order))
            ]
        ]
    )
    step = PreferenceStep(
        PreferenceLoss.DPO,
        PreferenceConfig(beta=0.1, rpo_alpha=rpo),
        Reference("precompute", model, None),
        Dist.create(),
    )
    out = {}
    for name, groups, ref in (("grouped", ranks, ref_ranks), ("expanded", pairs, ref_pairs)):
        model.zero_grad()
        mb = PrefBatch.of(collate(groups), ref)
        assert step.units(mb) == 9
        loss, metrics = step(model, mb, 9.0)
        loss.backward()
        out[name] = (float(loss.detach()), {k: float(v) for k, v in metrics.items()}, _grads(model))
    (lg, mg, gg), (le, me, ge) = out["grouped"], out["expanded"]
    assert_close(lg, le)
    assert mg.keys() == me.keys()
    for k in mg:
        if k != "kl":  # per response: grouped counts each response once, expanded per pair
            assert_close(mg[k], me[k])
    assert len(gg) == len(ge) and len(gg) > 0
    for a, b in zip(gg, ge, strict=True):
        assert_close(a, b, atol=1e-6)


def test_padding_of_a_shorter_ranking_is_never_read(tiny_llama: Path) -> None:
    """Log-probs of the 3-way ranking come back zero-padded to 4 columns; its pairs index
    columns 0..2 only."""
    model, _ = load_causal_lm(ModelConfig(path=str(tiny_llama)), for_training=False)
    ranks = _rankings()
    summed, lengths = sequence_logps(model, collate_groups(ranks, PAD))
    assert summed.shape == (2, 4) and summed[1, 3] == 0 and lengths[1, 3] == 0
    assert (lengths[0] > 0).all() and (lengths[1, :3] > 0).all()
    mb = PrefBatch.of(collate_groups(ranks, PAD), None)
    assert mb.pairs[mb.pairs[:, 0] == 1, 1:].max() == 2
