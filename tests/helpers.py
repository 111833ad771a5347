"""Shared test helpers. One tolerance policy for every numeric check (STYLE.md habit 1)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

RTOL = 1e-5
ATOL = 1e-6


def assert_close(actual: Any, expected: Any, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Assert numbers or tensors agree to the project's tolerance (1e-5 relative by default).

    Accepts tensors, floats or (nested) sequences. Never loosen the default to make a test pass;
    pass an explicit tolerance only where ALGORITHMS.md quotes fewer digits (and say why).
    """
    if isinstance(actual, torch.Tensor) or isinstance(expected, torch.Tensor):
        a = torch.as_tensor(actual, dtype=torch.float64)
        e = torch.as_tensor(expected, dtype=torch.float64)
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)
        return
    if isinstance(actual, Sequence) and not isinstance(actual, str):
        assert len(actual) == len(expected), f"length {len(actual)} != {len(expected)}"
        for a, e in zip(actual, expected, strict=True):
            assert_close(a, e, rtol=rtol, atol=atol)
        return
    assert math.isclose(float(actual), float(expected), rel_tol=rtol, abs_tol=atol), (
        f"{actual} != {expected} (rtol={rtol}, atol={atol})"
    )
