"""Safe RLHF maths against ALGORITHMS.md §6."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close

from alignkit.losses.safety import cost_model_loss, lagrange_update, safe_rlhf_advantage


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_combined_advantage_hand_value() -> None:
    assert_close(safe_rlhf_advantage(t(1.0), t(2.0), 1.0), [-0.5])


def test_combined_advantage_limits() -> None:
    # λ = 0: pure reward; λ → ∞: pure −A_C.
    assert_close(safe_rlhf_advantage(t(1.0), t(2.0), 0.0), [1.0])
    assert_close(safe_rlhf_advantage(t(1.0), t(2.0), 1e9), [-2.0])
    assert_close(
        safe_rlhf_advantage(t(1.0), t(2.0), torch.tensor(3.0, dtype=torch.float64)), [-1.25]
    )


def test_lagrange_update_hand_value() -> None:
    new_log_lambda = lagrange_update(0.0, mean_cost=0.5, threshold=0.0, lr=0.1)
    assert_close(new_log_lambda, 0.05)
    assert_close(math.exp(new_log_lambda), 1.05127)


def test_lagrange_update_matches_autograd_sgd_step() -> None:
    # The closed form is exactly one torch.optim.SGD step on loss_λ = −(Ĵ_C − d)·exp(log λ).
    log_lambda = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([log_lambda], lr=0.1)
    loss = -(0.7 - 0.2) * log_lambda.exp()
    loss.backward()
    opt.step()
    assert_close(
        lagrange_update(0.3, mean_cost=0.7, threshold=0.2, lr=0.1), float(log_lambda.detach())
    )


def test_lagrange_multiplier_shrinks_when_safe_and_is_capped() -> None:
    assert lagrange_update(0.0, mean_cost=-0.5, threshold=0.0, lr=0.1) < 0.0
    capped = lagrange_update(math.log(4.9), mean_cost=10.0, threshold=0.0, lr=1.0, lambda_max=5.0)
    assert_close(capped, math.log(5.0))
    with pytest.raises(ValueError, match="lambda_max"):
        lagrange_update(0.0, 1.0, 0.0, 0.1, lambda_max=0.0)


def test_cost_model_loss_hand_value() -> None:
    # Safer response safe with cost −1, unsafer unsafe with cost +1:
    # softplus(−2) + softplus(−1)·2 (both sign terms satisfied) + 0.001·mean(1, 1)
    loss = cost_model_loss(t(-1.0), t(1.0), torch.tensor([True]), torch.tensor([False]))
    assert_close(loss, [softplus(-2.0) + 2 * softplus(-1.0) + 0.001])


def test_cost_model_sign_terms_push_safe_costs_negative() -> None:
    safer = t(0.5).requires_grad_()
    unsafer = t(0.5).requires_grad_()
    cost_model_loss(
        safer, unsafer, torch.tensor([True]), torch.tensor([False]), reg_coef=0.0
    ).sum().backward()
    assert safer.grad is not None and unsafer.grad is not None
    assert float(safer.grad) > 0 > float(unsafer.grad)  # descent lowers C(safe), raises C(unsafe)


def test_cost_model_both_unsafe_hand_value() -> None:
    # Both unsafe (c = +1): the sign terms want both costs positive.
    loss = cost_model_loss(
        t(0.0), t(2.0), torch.tensor([False]), torch.tensor([False]), reg_coef=0.01
    )
    expected = softplus(-2.0) + softplus(0.0) + softplus(-2.0) + 0.01 * (0.0 + 4.0) / 2
    assert_close(loss, [expected])


def test_cost_regulariser_batch_mean_is_mean_of_squared_costs() -> None:
    safer, unsafer = t(1.0, -2.0), t(3.0, 0.5)
    safe, unsafe = torch.tensor([True, True]), torch.tensor([False, False])
    with_reg = cost_model_loss(safer, unsafer, safe, unsafe, reg_coef=0.5).mean()
    without = cost_model_loss(safer, unsafer, safe, unsafe, reg_coef=0.0).mean()
    assert_close(with_reg - without, 0.5 * torch.cat([safer, unsafer]).pow(2).mean())
