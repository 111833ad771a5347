"""The Trainer's AdamW picks the fused kernel where it applies, with unchanged maths."""

from __future__ import annotations

import torch
from helpers import assert_close
from torch import nn

from alignkit.engine.loop import adamw_impl, param_groups


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 3))


def test_fused_on_cpu_and_not_when_sharded() -> None:
    groups = param_groups(_model(0), 0.01)
    assert adamw_impl(groups, sharded=False) == {"fused": True}
    assert adamw_impl(groups, sharded=True) == {}


def test_fused_adamw_equals_default() -> None:
    """Same parameters after a few steps with weight decay on two groups (fp32 tolerance)."""
    a, b = _model(0), _model(0)
    ga, gb = param_groups(a, 0.1), param_groups(b, 0.1)
    opt_a = torch.optim.AdamW(ga, lr=1e-2, **adamw_impl(ga, sharded=False))
    opt_b = torch.optim.AdamW(gb, lr=1e-2)
    x = torch.randn(32, 8)
    for _ in range(5):
        for m, opt in ((a, opt_a), (b, opt_b)):
            m(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert_close(pa, pb)
