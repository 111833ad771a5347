"""Direct preference losses against ALGORITHMS.md §5 and §9, plus properties that can fail."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close

from alignkit.losses.preference import (
    PairedLogps,
    PreferenceConfig,
    PreferenceLoss,
    UnpairedLogps,
    cdpo_loss,
    cpo_loss,
    dpo_loss,
    fdpo_loss,
    ipo_loss,
    kto_loss,
    kto_reference_point,
    log1mexp,
    logratio_margin,
    orpo_loss,
    preference_loss,
    robust_dpo_loss,
    simpo_loss,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# The §5 example: policy (−10, −12), reference (−11, −11), β 0.1 → h = 2.
POLICY_W, POLICY_L, REF_W, REF_L = t(-10.0), t(-12.0), t(-11.0), t(-11.0)


def example_h() -> torch.Tensor:
    return logratio_margin(POLICY_W, POLICY_L, REF_W, REF_L)


# ---------------------------------------------------------------- hand values (§5)


def test_margin_h_is_two() -> None:
    assert_close(example_h(), [2.0])


def test_dpo_hand_value() -> None:
    assert_close(dpo_loss(example_h(), beta=0.1), [0.59814])
    assert_close(dpo_loss(example_h(), beta=0.1), [softplus(-0.2)])


def test_cdpo_hand_value() -> None:
    expected = 0.9 * softplus(-0.2) + 0.1 * softplus(0.2)
    assert_close(cdpo_loss(example_h(), beta=0.1, epsilon=0.1), [expected])
    assert_close(cdpo_loss(example_h(), beta=0.1, epsilon=0.1), [0.61814])


def test_ipo_hand_value() -> None:
    assert_close(ipo_loss(example_h(), tau=0.1), [9.0])


def test_kto_desirable_hand_value() -> None:
    loss = kto_loss(t(0.5), t(0.0), torch.tensor([True]), reference_point=0.2, beta=0.1)
    assert_close(loss, [1.0 - sigmoid(0.03)])
    assert_close(loss, [0.49250])


def test_orpo_odds_ratio_hand_value() -> None:
    def log_odds(logp: float) -> float:
        return logp - math.log(1.0 - math.exp(logp))

    expected = softplus(-(log_odds(-0.5) - log_odds(-1.0)))
    total, odds_ratio_term = orpo_loss(t(-0.5), t(-1.0), lam=0.1)
    assert_close(odds_ratio_term, [expected])
    assert_close(odds_ratio_term, [0.32030])
    # total = NLL(y_w) + λ·term, NLL = −avg logp = 0.5
    assert_close(total, [0.5 + 0.1 * expected])


def test_simpo_hand_value() -> None:
    assert_close(simpo_loss(t(-1.0), t(-1.5), beta=2.0, gamma=1.0), [0.69315])
    assert_close(simpo_loss(t(-1.0), t(-1.5), beta=2.0, gamma=1.0), [math.log(2.0)])


# ---------------------------------------------------------------- further hand values


def test_robust_dpo_hand_value() -> None:
    expected = (0.9 * softplus(-0.2) - 0.1 * softplus(0.2)) / 0.8
    assert_close(robust_dpo_loss(example_h(), beta=0.1, epsilon=0.1), [expected])


def test_kto_undesirable_hand_value_and_weights() -> None:
    loss = kto_loss(
        t(-0.5, 0.5),
        t(0.0, 0.0),
        torch.tensor([False, True]),
        reference_point=0.2,
        beta=0.1,
        desirable_weight=1.5,
        undesirable_weight=2.0,
    )
    assert_close(loss, [2.0 * (1.0 - sigmoid(0.1 * 0.7)), 1.5 * (1.0 - sigmoid(0.03))])


def test_cpo_hand_value() -> None:
    # β(−10 − (−12)) = 0.2; NLL 10/5 = 2 with α 0.5 → softplus(−0.2) + 1
    loss = cpo_loss(POLICY_W, POLICY_L, chosen_nll=t(2.0), beta=0.1, alpha=0.5)
    assert_close(loss, [softplus(-0.2) + 1.0])


def test_fdpo_js_hand_value() -> None:
    # log u_w = 1, log u_l = −1: f′ difference = 2 − (softplus(1) − softplus(−1)) = 2 − 1 = 1
    loss = fdpo_loss(POLICY_W, POLICY_L, REF_W, REF_L, beta=0.1, divergence="js")
    assert_close(loss, [softplus(-0.1)])


def test_fdpo_forward_kl_hand_value() -> None:
    # f′(u) = −1/u: −e^{−1} + e^{1} = 2 sinh 1
    loss = fdpo_loss(POLICY_W, POLICY_L, REF_W, REF_L, beta=0.1, divergence="forward_kl")
    assert_close(loss, [softplus(-0.1 * 2.0 * math.sinh(1.0))])


def test_fdpo_alpha_hand_value() -> None:
    # f′(u) = (1 − u^−α)/α, α 0.5: (e^{0.5} − e^{−0.5})/0.5 = 4 sinh 0.5
    loss = fdpo_loss(POLICY_W, POLICY_L, REF_W, REF_L, beta=0.1, divergence="alpha", alpha=0.5)
    assert_close(loss, [softplus(-0.1 * 4.0 * math.sinh(0.5))])


# ---------------------------------------------------------------- properties


def random_logps(seed: int, n: int = 8) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(-torch.rand(n, generator=gen, dtype=torch.float64) * 20 for _ in range(4))


def test_dpo_gradient_raises_chosen_and_lowers_rejected() -> None:
    chosen = POLICY_W.clone().requires_grad_()
    rejected = POLICY_L.clone().requires_grad_()
    dpo_loss(logratio_margin(chosen, rejected, REF_W, REF_L), beta=0.1).sum().backward()
    assert chosen.grad is not None and rejected.grad is not None
    assert float(chosen.grad) < 0 < float(rejected.grad)
    # dL/dlogπ(y_w) = −β σ(−βh)
    assert_close(chosen.grad, [-0.1 * sigmoid(-0.2)])


def test_cdpo_and_robust_with_zero_epsilon_equal_dpo() -> None:
    h = logratio_margin(*random_logps(0))
    assert_close(cdpo_loss(h, 0.1, 0.0), dpo_loss(h, 0.1))
    assert_close(robust_dpo_loss(h, 0.1, 0.0), dpo_loss(h, 0.1))


def test_robust_dpo_rejects_half_flip_rate() -> None:
    with pytest.raises(ValueError, match="epsilon < 0.5"):
        robust_dpo_loss(example_h(), 0.1, 0.5)


def test_fdpo_reverse_kl_equals_dpo() -> None:
    pw, pl, rw, rl = random_logps(1)
    assert_close(
        fdpo_loss(pw, pl, rw, rl, 0.1, "reverse_kl"), dpo_loss(logratio_margin(pw, pl, rw, rl), 0.1)
    )


def test_fdpo_alpha_one_is_forward_kl_and_small_alpha_is_reverse_kl() -> None:
    pw, pl, rw, rl = (x / 10 for x in random_logps(2))
    forward = fdpo_loss(pw, pl, rw, rl, 0.1, "forward_kl")
    assert_close(fdpo_loss(pw, pl, rw, rl, 0.1, "alpha", alpha=1.0), forward)
    # (1 − u^−α)/α = log u − α(log u)²/2 + …: α 1e-7 is reverse KL well within 1e-5
    reverse = fdpo_loss(pw, pl, rw, rl, 0.1, "reverse_kl")
    assert_close(fdpo_loss(pw, pl, rw, rl, 0.1, "alpha", alpha=1e-7), reverse)


def test_fdpo_forward_kl_saturates_instead_of_overflowing() -> None:
    loss = fdpo_loss(t(0.0), t(-2000.0), t(0.0), t(0.0), 0.1, "forward_kl")
    assert bool(torch.isfinite(loss).all())


def test_kto_reference_point_is_detached_and_clamped() -> None:
    policy_kl = t(-1.0, -2.0).requires_grad_()
    ref_kl = t(-1.5, -1.9)
    z0 = kto_reference_point(policy_kl, ref_kl)
    assert not z0.requires_grad
    assert_close(z0, 0.2)  # mean(0.5, −0.1)
    assert_close(kto_reference_point(t(-3.0), t(-1.0)), 0.0)  # negative KL estimate → 0

    # Even a z₀ that carries a graph gets no gradient from the loss.
    z0_with_graph = (policy_kl - ref_kl).mean()
    policy = t(0.5).requires_grad_()
    kto_loss(policy, t(0.0), torch.tensor([True]), z0_with_graph, beta=0.1).sum().backward()
    assert policy_kl.grad is None
    assert policy.grad is not None


def test_log1mexp_is_accurate_near_zero_and_far_below() -> None:
    x = torch.tensor([-1e-8, -1e-3, -0.5, -5.0, -50.0], dtype=torch.float32)
    expected = [math.log(-math.expm1(v)) for v in x.double().tolist()]
    assert_close(log1mexp(x), expected)


def test_orpo_runs_in_float32_from_bf16_without_overflow() -> None:
    chosen = torch.tensor([-1e-4, -0.5], dtype=torch.bfloat16)
    rejected = torch.tensor([-2.0, -1.0], dtype=torch.bfloat16)
    total, term = orpo_loss(chosen, rejected)
    assert total.dtype == torch.float32 and term.dtype == torch.float32
    assert bool(torch.isfinite(total).all())
    exact_first = orpo_loss(chosen.double()[:1], rejected.double()[:1])[1]
    assert_close(term[0], exact_first[0])


def test_orpo_probability_near_one_gives_finite_values_and_gradients() -> None:
    chosen = torch.tensor([0.0, -1e-9, -0.3], requires_grad=True)
    rejected = torch.tensor([0.0, -2.0, -1e-9], requires_grad=True)
    total, term = orpo_loss(chosen, rejected)
    assert bool(torch.isfinite(total).all()) and bool(torch.isfinite(term).all())
    total.sum().backward()
    assert chosen.grad is not None and rejected.grad is not None
    assert bool(torch.isfinite(chosen.grad).all()) and bool(torch.isfinite(rejected.grad).all())


def test_log1mexp_gradient_matches_closed_form() -> None:
    # d/dx log(1 − eˣ) = −eˣ/(1 − eˣ) = −1/expm1(−x)
    x = torch.tensor(
        [-1e-6, -0.1, -0.69, -0.7, -3.0, -40.0], dtype=torch.float64, requires_grad=True
    )
    log1mexp(x).sum().backward()
    assert x.grad is not None
    assert_close(x.grad, -1.0 / torch.expm1(-x.detach()))


def test_simpo_margin_shifts_the_loss() -> None:
    without = simpo_loss(t(-1.0), t(-1.5), beta=2.0, gamma=0.0)
    assert_close(without, [softplus(-1.0)])


# ---------------------------------------------------------------- enum + dispatch


def test_enum_metadata() -> None:
    assert PreferenceLoss("dpo") is PreferenceLoss.DPO
    needs_ref = {k for k in PreferenceLoss if k.needs_reference}
    assert needs_ref == {
        PreferenceLoss.DPO,
        PreferenceLoss.CDPO,
        PreferenceLoss.ROBUST,
        PreferenceLoss.IPO,
        PreferenceLoss.KTO,
        PreferenceLoss.FDPO,
    }
    mean_reduced = {k for k in PreferenceLoss if k.logp_reduction == "mean"}
    assert mean_reduced == {PreferenceLoss.IPO, PreferenceLoss.ORPO, PreferenceLoss.SIMPO}
    assert [k for k in PreferenceLoss if not k.paired] == [PreferenceLoss.KTO]


def paired_example(lengths: float = 1.0, with_ref: bool = True) -> PairedLogps:
    n = t(lengths)
    return PairedLogps(
        policy_chosen=POLICY_W * lengths,
        policy_rejected=POLICY_L * lengths,
        chosen_lengths=n,
        rejected_lengths=n,
        ref_chosen=REF_W * lengths if with_ref else None,
        ref_rejected=REF_L * lengths if with_ref else None,
    )


def test_dispatch_dpo_value_and_metrics() -> None:
    loss, metrics = preference_loss("dpo", paired_example(), PreferenceConfig(beta=0.1))
    assert_close(loss, [0.59814])
    assert_close(metrics["rewards/chosen"], 0.1)
    assert_close(metrics["rewards/rejected"], -0.1)
    assert_close(metrics["rewards/margin"], 0.2)
    assert_close(metrics["rewards/accuracy"], 1.0)
    assert_close(metrics["logps/chosen"], -10.0)
    assert_close(metrics["logps/rejected"], -12.0)


def test_dispatch_cdpo_value() -> None:
    cfg = PreferenceConfig(beta=0.1, label_smoothing=0.1)
    assert_close(preference_loss(PreferenceLoss.CDPO, paired_example(), cfg)[0], [0.61814])


def test_dispatch_ipo_uses_average_logps() -> None:
    # Sums over 4 tokens; averages reproduce the §5 example, h = 2 → 9.0.
    loss, _ = preference_loss("ipo", paired_example(lengths=4.0), PreferenceConfig(beta=0.1))
    assert_close(loss, [9.0])


def test_dispatch_simpo_uses_average_logps() -> None:
    logps = PairedLogps(t(-3.0), t(-6.0), chosen_lengths=t(3.0), rejected_lengths=t(4.0))
    loss, metrics = preference_loss("simpo", logps, PreferenceConfig(beta=2.0, simpo_gamma=1.0))
    assert_close(loss, [math.log(2.0)])
    assert_close(metrics["rewards/chosen"], -2.0)  # β·avg logp
    assert_close(metrics["rewards/margin"], 1.0)


def test_dispatch_orpo_and_cpo() -> None:
    logps = PairedLogps(t(-1.0), t(-3.0), chosen_lengths=t(2.0), rejected_lengths=t(3.0))
    loss, metrics = preference_loss("orpo", logps, PreferenceConfig(orpo_lambda=0.1))
    total, term = orpo_loss(t(-0.5), t(-1.0), lam=0.1)
    assert_close(loss, total)
    assert_close(metrics["orpo/odds_ratio_loss"], 0.32030)
    assert_close(metrics["nll"], 0.5)

    loss, metrics = preference_loss("cpo", logps, PreferenceConfig(beta=0.1, cpo_alpha=1.0))
    assert_close(loss, [softplus(-0.2) + 0.5])
    assert_close(metrics["nll"], 0.5)


def test_rpo_adds_alpha_times_token_averaged_chosen_nll() -> None:
    # §5 example scaled to 4 tokens: DPO on the sums sees h = 8; NLL(y_w) = 40/4 = 10 per token.
    cfg = PreferenceConfig(beta=0.1, rpo_alpha=0.5)
    loss, metrics = preference_loss("dpo", paired_example(lengths=4.0), cfg)
    assert_close(loss, [softplus(-0.8) + 0.5 * 10.0])
    assert_close(metrics["nll"], 10.0)
    # The DPO metrics are those of the DPO part alone.
    assert_close(metrics["rewards/margin"], 0.8)


def test_rpo_gradient_raises_chosen_logp_more_than_dpo_alone() -> None:
    def chosen_grad(rpo_alpha: float) -> float:
        pc = torch.tensor([-40.0], dtype=torch.float64, requires_grad=True)
        logps = PairedLogps(
            pc, t(-48.0), chosen_lengths=t(4.0), rejected_lengths=t(4.0),
            ref_chosen=t(-44.0), ref_rejected=t(-44.0),
        )  # fmt: skip
        preference_loss("dpo", logps, PreferenceConfig(beta=0.1, rpo_alpha=rpo_alpha))[0].backward()
        assert pc.grad is not None
        return float(pc.grad)

    # Descent moves log π(y_w) by −grad: the NLL term adds exactly α/|y_w| to the push up.
    assert_close(chosen_grad(0.0) - chosen_grad(2.0), 2.0 / 4.0)


def test_rpo_with_orpo_or_cpo_is_refused() -> None:
    logps = PairedLogps(t(-1.0), t(-3.0), chosen_lengths=t(2.0), rejected_lengths=t(3.0))
    for name in ("orpo", "cpo"):
        with pytest.raises(ValueError, match="has one already"):
            preference_loss(name, logps, PreferenceConfig(rpo_alpha=1.0))
    with pytest.raises(ValueError, match="rpo_alpha must be >= 0"):
        PreferenceConfig(rpo_alpha=-1.0)


def test_dispatch_fdpo_uses_config_divergence() -> None:
    cfg = PreferenceConfig(beta=0.1, f_divergence="js")
    assert_close(preference_loss("fdpo", paired_example(), cfg)[0], [softplus(-0.1)])


def test_dispatch_kto_value_and_metrics() -> None:
    logps = UnpairedLogps(
        policy=t(0.5, -0.5),
        desirable=torch.tensor([True, False]),
        reference_point=0.2,
        ref=t(0.0, 0.0),
    )
    loss, metrics = preference_loss("kto", logps, PreferenceConfig(beta=0.1))
    assert_close(loss, [0.49250, 1.0 - sigmoid(0.07)])
    assert_close(metrics["rewards/chosen"], 0.05)
    assert_close(metrics["rewards/rejected"], -0.05)
    assert_close(metrics["rewards/accuracy"], 1.0)
    assert_close(metrics["kl"], 0.2)


def test_dispatch_kto_empty_side_is_nan_not_zero() -> None:
    logps = UnpairedLogps(
        policy=t(0.5), desirable=torch.tensor([True]), reference_point=0.0, ref=t(0.0)
    )
    _, metrics = preference_loss("kto", logps)
    assert math.isnan(float(metrics["rewards/rejected"]))
    assert_close(metrics["rewards/chosen"], 0.05)


def test_dispatch_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="needs reference log-probs"):
        preference_loss("dpo", paired_example(with_ref=False))
    with pytest.raises(ValueError, match="reference-free"):
        preference_loss("simpo", paired_example())
    with pytest.raises(TypeError, match="UnpairedLogps"):
        preference_loss("kto", paired_example())
    with pytest.raises(ValueError, match="use 'cdpo'"):
        preference_loss("dpo", paired_example(), PreferenceConfig(label_smoothing=0.1))
    with pytest.raises(ValueError, match="average log-probs"):
        preference_loss(
            "ipo", PairedLogps(POLICY_W, POLICY_L, ref_chosen=REF_W, ref_rejected=REF_L)
        )
    with pytest.raises(ValueError):
        preference_loss("not-a-loss", paired_example())


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="beta"):
        PreferenceConfig(beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        PreferenceConfig(label_smoothing=0.5)
    with pytest.raises(ValueError, match="f_divergence"):
        PreferenceConfig(f_divergence="hellinger")  # type: ignore[arg-type]


def test_dispatch_gradients_flow_for_every_paired_method() -> None:
    for kind in PreferenceLoss:
        if not kind.paired:
            continue
        chosen = t(-4.0, -6.0).requires_grad_()
        rejected = t(-5.0, -5.5).requires_grad_()
        ref = kind.needs_reference
        logps = PairedLogps(
            chosen,
            rejected,
            chosen_lengths=t(2.0, 3.0),
            rejected_lengths=t(2.0, 4.0),
            ref_chosen=t(-4.5, -6.0) if ref else None,
            ref_rejected=t(-4.5, -5.0) if ref else None,
        )
        cfg = PreferenceConfig(
            label_smoothing=0.1 if kind in (PreferenceLoss.CDPO, PreferenceLoss.ROBUST) else 0.0
        )
        loss, _ = preference_loss(kind, logps, cfg)
        loss.mean().backward()
        assert chosen.grad is not None and rejected.grad is not None, kind
        # Lowering the loss means raising log π(y_w) and lowering log π(y_l).
        assert bool((chosen.grad < 0).all()), kind
        assert bool((rejected.grad > 0).all()), kind
