"""CBF projection and best-of-N KL bound against ALGORITHMS.md §7 and §10."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close

from alignkit.losses.decoding import best_of_n_kl_bound, cbf_allowed, cbf_project, cbf_threshold


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_cbf_threshold_hand_value() -> None:
    assert_close(cbf_threshold(0.4, 0.3), 0.28)
    assert_close(cbf_threshold(t(0.4, -1.0), 0.3), [0.28, -0.7])


def test_cbf_projection_hand_value() -> None:
    allowed = cbf_allowed(t(0.5, 0.2, 0.3), 0.4, alpha=0.3)
    assert allowed.tolist() == [True, False, True]
    out = cbf_project(t(0.5, 0.3, 0.2), allowed)
    # ALGORITHMS.md quotes [0.7143, 0, 0.2857]: the exact values are 0.5/0.7 and 0.2/0.7.
    assert_close(out.probs, [0.5 / 0.7, 0.0, 0.2 / 0.7])
    assert not bool(out.nothing_allowed)
    assert_close(out.allowed_mass, 0.7)


def test_projection_is_the_kl_minimiser_with_kl_minus_log_mass() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(4, 10, generator=gen, dtype=torch.float64), dim=-1)
    allowed = torch.rand(4, 10, generator=gen) > 0.5
    allowed[:, 0] = True
    out = cbf_project(probs, allowed)
    q = out.probs
    assert_close(q.sum(-1), [1.0] * 4)
    kl = torch.where(q > 0, q * (q / probs).log(), 0.0).sum(-1)
    assert_close(kl, -out.allowed_mass.log())
    # Any other distribution on the allowed set is further from P.
    other = torch.where(allowed, torch.rand(4, 10, generator=gen, dtype=torch.float64), 0.0)
    other = other / other.sum(-1, keepdim=True)
    kl_other = torch.where(other > 0, other * (other / probs).log(), 0.0).sum(-1)
    assert bool((kl_other > kl).all())


def test_nothing_allowed_is_flagged_without_division_by_zero() -> None:
    probs = t(0.5, 0.3, 0.2, 0.6, 0.4, 0.0).reshape(2, 3)
    allowed = torch.tensor([[False, False, False], [False, False, True]])  # row 2: only a p=0 token
    out = cbf_project(probs, allowed)
    assert out.nothing_allowed.tolist() == [True, True]
    assert bool(torch.isfinite(out.probs).all())
    assert_close(out.probs, torch.zeros(2, 3))


def test_alpha_one_reproduces_the_blacklist_exactly() -> None:
    gen = torch.Generator().manual_seed(1)
    h_next = torch.randn(8, 16, generator=gen, dtype=torch.float64)
    h_next[0, :4] = 0.0  # boundary values: h(x ⊕ t) = 0 is allowed by both
    h_current = torch.randn(8, generator=gen, dtype=torch.float64)
    h_current[1] = float("inf")
    assert torch.equal(cbf_allowed(h_next, h_current, alpha=1.0), h_next >= 0)


def test_cbf_allows_a_controlled_decrease_but_no_crossing() -> None:
    # From h(x) = 0.4 with α 0.3, going to 0.29 is fine; 0.27 is a too-fast decrease.
    assert cbf_allowed(t(0.29, 0.27, -0.01), 0.4, alpha=0.3).tolist() == [True, False, False]
    # Outside the safe set (h(x) = −0.6 < 0) h must climb back by at least a fraction α:
    # threshold (1 − 0.5)·(−0.6) = −0.3, so staying at −0.5 is not allowed.
    assert cbf_allowed(t(-0.2, -0.3, -0.5), -0.6, alpha=0.5).tolist() == [True, True, False]


def test_cbf_alpha_validation() -> None:
    for alpha in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="alpha"):
            cbf_threshold(0.4, alpha)


def test_best_of_n_kl_bound_hand_values() -> None:
    assert_close(best_of_n_kl_bound(4), 0.63629)
    assert_close(best_of_n_kl_bound(16), 1.83509)
    assert_close(best_of_n_kl_bound(4), math.log(4) - 0.75)
    assert_close(best_of_n_kl_bound(1), 0.0)
    with pytest.raises(ValueError):
        best_of_n_kl_bound(0)
