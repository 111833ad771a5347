"""Length decorrelation term (ODIN) against hand values."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close

from alignkit.losses.length import length_slope, pearson_correlation


def t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


def test_hand_values() -> None:
    assert_close(pearson_correlation(t(1, 2, 3), t(1, 2, 4)), 3 / math.sqrt(2 * 14 / 3))
    assert_close(pearson_correlation(t(1, 2, 3), t(3, 2, 1)), -1.0)
    assert_close(pearson_correlation(t(1, 2, 3), t(5, 5, 5)), 0.0)  # constant: no correlation


def test_gradient_pushes_towards_zero_correlation() -> None:
    x = t(1, 2, 3, 4).requires_grad_(True)
    y = t(1, 2, 3, 5)
    pearson_correlation(x, y).abs().backward()
    assert x.grad is not None
    step = x.detach() - 0.5 * x.grad
    assert abs(float(pearson_correlation(step, y))) < abs(float(pearson_correlation(x.detach(), y)))


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="1-D"):
        pearson_correlation(t(1, 2), t(1, 2, 3))


def test_slope_hand_values_and_scale() -> None:
    assert_close(length_slope(t(1, 2, 4), t(1, 2, 3)), 1.5)
    assert_close(length_slope(t(2, 4, 8), t(1, 2, 3)), 3.0)  # scales with the scores
    assert_close(length_slope(t(1, 2, 4), t(2, 2, 2)), 0.0)  # no length spread: no slope
    # the penalty's gradient vanishes with the scores' spread (|corr|'s does not)
    for scale in (1.0, 1e-3):
        r = (t(1, 2, 4) * scale).requires_grad_(True)
        length_slope(r, t(1, 2, 3)).square().backward()
        assert r.grad is not None
        assert float(r.grad.abs().max()) <= 3.0 * scale
