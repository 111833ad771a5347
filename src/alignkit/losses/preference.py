"""Direct preference losses: the DPO family, KTO, ORPO, SimPO, CPO, f-DPO (ALGORITHMS.md §5, §9).

Two layers:

1. One pure function per method, of already-reduced sequence log-probs (``[B]`` tensors), each
   tested against the hand values of ALGORITHMS.md. They return the per-example loss ``[B]``.
2. :class:`PreferenceLoss`, an enum whose members say what a method needs (reference model,
   summed or averaged log-probs, paired or unpaired data), and :func:`preference_loss`, the one
   call a recipe makes: it takes *summed* completion log-probs plus completion lengths
   (:class:`PairedLogps` / :class:`UnpairedLogps`), reduces them the way the method wants, and
   returns ``(per-example loss [B], metrics)``.

Notation: h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)]; −log σ(z) is
computed as softplus(−z), which is exact and stable for any z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "FDivergence",
    "LogpReduction",
    "PairedLogps",
    "PreferenceConfig",
    "PreferenceLoss",
    "UnpairedLogps",
    "cdpo_loss",
    "cpo_loss",
    "dpo_loss",
    "fdpo_loss",
    "ipo_loss",
    "kto_loss",
    "kto_reference_point",
    "log1mexp",
    "logratio_margin",
    "orpo_loss",
    "preference_loss",
    "reduce_logps",
    "robust_dpo_loss",
    "simpo_loss",
]

LogpReduction = Literal["sum", "mean"]
FDivergence = Literal["reverse_kl", "forward_kl", "js", "alpha"]


# --------------------------------------------------------------------------- per-method losses


def logratio_margin(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor
) -> Tensor:
    """h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)] → ``[B]``."""
    return (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)


def dpo_loss(h: Tensor, beta: float) -> Tensor:
    """Sigmoid DPO: −log σ(βh). Example: h 2, β 0.1 → 0.59814."""
    return F.softplus(-beta * h)


def cdpo_loss(h: Tensor, beta: float, epsilon: float) -> Tensor:
    """Conservative DPO: (1−ε)·softplus(−βh) + ε·softplus(βh): DPO with labels flipped with
    probability ε (label smoothing). ε = 0 is DPO. Example: h 2, β 0.1, ε 0.1 → 0.61814."""
    return (1.0 - epsilon) * F.softplus(-beta * h) + epsilon * F.softplus(beta * h)


def robust_dpo_loss(h: Tensor, beta: float, epsilon: float) -> Tensor:
    """Robust DPO (Chowdhury et al.): ((1−ε)·softplus(−βh) − ε·softplus(βh))/(1−2ε).

    Unlike cDPO this is an unbiased estimate of the clean-label loss under flip rate ε < ½.
    """
    if not 0.0 <= epsilon < 0.5:
        raise ValueError(f"robust DPO needs 0 <= epsilon < 0.5 (label flip rate), got {epsilon}")
    return ((1.0 - epsilon) * F.softplus(-beta * h) - epsilon * F.softplus(beta * h)) / (
        1.0 - 2.0 * epsilon
    )


def ipo_loss(h: Tensor, tau: float) -> Tensor:
    """IPO: (h − 1/(2τ))², with h from *average* log-probs. Example: h 2, τ 0.1 → 9.0.

    A squared loss toward a finite target margin, so h cannot run to infinity on
    deterministic preferences as it can under DPO.
    """
    return (h - 1.0 / (2.0 * tau)) ** 2


def kto_reference_point(mismatched_policy_logps: Tensor, mismatched_ref_logps: Tensor) -> Tensor:
    """KTO's z₀ = max(0, mean(log π(y'|x) − log π_ref(y'|x))) over mismatched (x, y') pairs.

    A batch estimate of KL(π‖π_ref), detached: KTO treats it as a reference point, not as
    something to optimise (gradients through it make training unstable). Under data
    parallelism, average the difference over all ranks before the clamp.
    """
    return (mismatched_policy_logps - mismatched_ref_logps).detach().mean().clamp(min=0.0)


def kto_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    desirable: Tensor,
    reference_point: Tensor | float,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tensor:
    """KTO per example: λ_D(1 − σ(β(r − z₀))) if desirable, else λ_U(1 − σ(β(z₀ − r))).

    r = log π(y) − log π_ref(y) (summed log-probs); ``desirable`` bool ``[B]``; z₀ from
    :func:`kto_reference_point` (detached here again, whatever the caller passes).
    λ_D, λ_U rebalance unequal numbers of desirable and undesirable examples.
    Example: desirable, r 0.5, z₀ 0.2, β 0.1 → 0.49250.
    """
    z0 = torch.as_tensor(reference_point, dtype=policy_logps.dtype, device=policy_logps.device)
    z0 = z0.detach()
    r = policy_logps - ref_logps
    desirable_loss = desirable_weight * (1.0 - torch.sigmoid(beta * (r - z0)))
    undesirable_loss = undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - r)))
    return torch.where(desirable.bool(), desirable_loss, undesirable_loss)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 − eˣ) for x < 0, accurate everywhere (Mächler 2012).

    Near 0, 1 − eˣ cancels catastrophically, so use log(−expm1(x)); far below, eˣ is tiny and
    log1p(−eˣ) is exact. The switch point −log 2 is where both are accurate. Each branch sees
    only inputs from its own side (the other side gets a harmless −1): torch.where still
    back-propagates through the branch it did not pick, and log1p(−eˣ) has an infinite
    derivative at x ≈ 0, which would turn into a NaN gradient (0 · inf).
    """
    near_zero = x > -math.log(2.0)
    filler = torch.full_like(x, -1.0)
    small = torch.log(-torch.expm1(torch.where(near_zero, x, filler)))
    large = torch.log1p(-torch.exp(torch.where(near_zero, filler, x)))
    return torch.where(near_zero, small, large)


def orpo_loss(
    chosen_avg_logps: Tensor, rejected_avg_logps: Tensor, lam: float = 0.1
) -> tuple[Tensor, Tensor]:
    """ORPO (no reference) → (total, odds-ratio term), both ``[B]``.

    P = exp(avg log π), log odds = log P − log(1 − P); odds-ratio term
    −log σ(log odds_w − log odds_l); total = NLL(y_w) + λ·term with NLL(y_w) = −avg log π(y_w)
    (the paper's token-averaged SFT loss). Computed in (at least) float32 with :func:`log1mexp`: in bf16,
    1 − P for P near 1 rounds to 0 and the log odds become inf.
    Example: avg logp (−0.5, −1.0) → term 0.32030.
    """
    # At least float32 (float64 stays float64). A sequence whose every token had probability
    # exactly 1 would give log odds = inf − inf; the cap at −1e-20 only moves averages that are
    # already within 1e-20 of 0 (log odds stay finite, about +46).
    dtype = torch.promote_types(chosen_avg_logps.dtype, torch.float32)
    chosen = chosen_avg_logps.to(dtype).clamp(max=-1e-20)
    rejected = rejected_avg_logps.to(dtype).clamp(max=-1e-20)
    log_odds = (chosen - log1mexp(chosen)) - (rejected - log1mexp(rejected))
    odds_ratio_term = F.softplus(-log_odds)
    nll = -chosen_avg_logps.to(dtype)
    total = nll + lam * odds_ratio_term
    return total, odds_ratio_term


def simpo_loss(
    chosen_avg_logps: Tensor, rejected_avg_logps: Tensor, beta: float = 2.0, gamma: float = 1.0
) -> Tensor:
    """SimPO (no reference): −log σ(β·avg log π(y_w) − β·avg log π(y_l) − γ).

    Length-normalised rewards with a target margin γ. Example: β 2, γ 1, avg (−1, −1.5) → log 2.
    """
    return F.softplus(-(beta * (chosen_avg_logps - rejected_avg_logps) - gamma))


def cpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    chosen_nll: Tensor,
    beta: float = 0.1,
    alpha: float = 1.0,
) -> Tensor:
    """CPO (no reference): −log σ(β(log π(y_w) − log π(y_l))) + α·NLL(y_w).

    Summed log-probs in the preference term; ``chosen_nll`` is the token-averaged NLL of y_w,
    the behaviour-cloning regulariser that stands in for the missing reference model.
    """
    return F.softplus(-beta * (chosen_logps - rejected_logps)) + alpha * chosen_nll


def _cap_exp(x: Tensor) -> Tensor:
    # exp with the exponent capped at log(max float): a huge ratio saturates instead of
    # becoming inf (and NaN after inf − inf).
    return torch.exp(x.clamp(max=math.log(torch.finfo(x.dtype).max)))


def _f_prime(log_ratio: Tensor, divergence: FDivergence, alpha: float) -> Tensor:
    """f′(u) at u = π/π_ref, up to an additive constant (constants cancel in f′(u_w) − f′(u_l))."""
    if divergence == "reverse_kl":  # f(u) = u log u → f′ = log u + 1
        return log_ratio
    if divergence == "forward_kl":  # f(u) = −log u → f′ = −1/u
        return -_cap_exp(-log_ratio)
    if divergence == "js":  # f′(u) = log(2u/(1 + u)) = log 2 + log u − softplus(log u)
        return log_ratio - F.softplus(log_ratio)
    if divergence == "alpha":  # f′(u) = (1 − u^(−α))/α
        return -_cap_exp(-alpha * log_ratio) / alpha
    raise ValueError(
        f"f_divergence must be 'reverse_kl', 'forward_kl', 'js' or 'alpha', got {divergence!r}"
    )


def fdpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
    divergence: FDivergence = "reverse_kl",
    alpha: float = 0.5,
) -> Tensor:
    """f-DPO (Wang et al. 2023, "Beyond Reverse KL"): −log σ(β[f′(u_w) − f′(u_l)]), u = π/π_ref.

    Reverse KL gives DPO exactly; forward KL f′ = −1/u; Jensen–Shannon f′ = log(2u/(1+u));
    α-divergence f′ = (1 − u^(−α))/α, α ∈ (0, 1) (α → 0 is reverse KL, α = 1 forward KL).
    """
    if divergence == "alpha" and alpha <= 0.0:
        raise ValueError(f"the alpha-divergence needs alpha > 0, got {alpha}")
    log_u_w = policy_chosen - ref_chosen
    log_u_l = policy_rejected - ref_rejected
    logits = _f_prime(log_u_w, divergence, alpha) - _f_prime(log_u_l, divergence, alpha)
    return F.softplus(-beta * logits)


# --------------------------------------------------------------------------- dispatch


class PreferenceLoss(str, Enum):
    """Direct preference methods. Each member carries what a recipe must prepare:

    - ``needs_reference``: compute reference log-probs (frozen model, or LoRA adapter disabled);
    - ``logp_reduction``: "sum" or "mean" over completion tokens (it changes what β means);
    - ``paired``: chosen/rejected pairs (:class:`PairedLogps`) or labelled singles
      (:class:`UnpairedLogps`).
    """

    needs_reference: bool
    logp_reduction: LogpReduction
    paired: bool

    def __new__(
        cls, value: str, needs_reference: bool, logp_reduction: LogpReduction, paired: bool
    ) -> PreferenceLoss:
        member = str.__new__(cls, value)
        member._value_ = value
        member.needs_reference = needs_reference
        member.logp_reduction = logp_reduction
        member.paired = paired
        return member

    DPO = ("dpo", True, "sum", True)
    CDPO = ("cdpo", True, "sum", True)
    ROBUST = ("robust", True, "sum", True)
    IPO = ("ipo", True, "mean", True)
    KTO = ("kto", True, "sum", False)
    ORPO = ("orpo", False, "mean", True)
    SIMPO = ("simpo", False, "mean", True)
    CPO = ("cpo", False, "sum", True)
    FDPO = ("fdpo", True, "sum", True)


@dataclass(frozen=True)
class PreferenceConfig:
    """Hyper-parameters of the direct preference losses (each field is read by the methods named).

    beta: β of DPO/cDPO/robust/KTO/SimPO/CPO/f-DPO, and τ of IPO (TRL's convention); also scales
        the implicit rewards in the metrics.
    label_smoothing: ε, the assumed label-flip rate of cDPO and robust DPO.
    simpo_gamma: γ, SimPO's target reward margin.
    cpo_alpha: α, weight of CPO's NLL term.
    orpo_lambda: λ, weight of ORPO's odds-ratio term.
    kto_desirable_weight / kto_undesirable_weight: λ_D / λ_U of KTO.
    f_divergence / f_alpha: the divergence of f-DPO and α of its α-divergence.
    rpo_alpha: α of RPO (Pang et al. 2024; TRL's ``rpo_alpha``): adds α·NLL(y_w), the
        token-averaged negative log-likelihood of the chosen response, to any paired loss but
        ORPO and CPO (which have their own). It keeps log π(y_w) from falling while the margin
        grows, the failure of DPO on off-policy pairs that a policy would rarely sample.
    """

    beta: float = 0.1
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5
    cpo_alpha: float = 1.0
    orpo_lambda: float = 0.1
    kto_desirable_weight: float = 1.0
    kto_undesirable_weight: float = 1.0
    f_divergence: FDivergence = "reverse_kl"
    f_alpha: float = 0.5
    rpo_alpha: float = 0.0

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        for name in (
            "cpo_alpha",
            "orpo_lambda",
            "kto_desirable_weight",
            "kto_undesirable_weight",
            "rpo_alpha",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.f_divergence not in ("reverse_kl", "forward_kl", "js", "alpha"):
            raise ValueError(
                "f_divergence must be one of 'reverse_kl', 'forward_kl', 'js', 'alpha', "
                f"got {self.f_divergence!r}"
            )
        if self.f_alpha <= 0:
            raise ValueError(f"f_alpha must be > 0, got {self.f_alpha}")


@dataclass(frozen=True)
class PairedLogps:
    """Summed completion log-probs (``[B]``) of chosen/rejected, with completion token counts.

    Lengths are needed by methods with ``logp_reduction == "mean"`` and by CPO's NLL; reference
    log-probs by methods with ``needs_reference``.
    """

    policy_chosen: Tensor
    policy_rejected: Tensor
    chosen_lengths: Tensor | None = None
    rejected_lengths: Tensor | None = None
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None


@dataclass(frozen=True)
class UnpairedLogps:
    """KTO inputs: summed completion log-probs ``[B]``, labels, and the reference point z₀."""

    policy: Tensor
    desirable: Tensor
    reference_point: Tensor | float
    ref: Tensor | None = None
    lengths: Tensor | None = None


def reduce_logps(summed: Tensor, lengths: Tensor | None, reduction: LogpReduction) -> Tensor:
    """Sequence log-prob as the method wants it: the sum itself, or sum / completion length."""
    if reduction == "sum":
        return summed
    if lengths is None:
        raise ValueError("this loss uses average log-probs: pass completion token counts (lengths)")
    return summed / lengths.to(summed.dtype).clamp(min=1.0)


def _paired_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor) -> dict[str, Tensor]:
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margin": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracy": (chosen_rewards > rejected_rewards).float().mean(),
    }


def _chosen_nll(logps: PairedLogps) -> Tensor:
    """Token-averaged NLL of each chosen response, −log π(y_w)/|y_w| → ``[B]``."""
    if logps.chosen_lengths is None:
        raise ValueError("the NLL term (CPO, rpo_alpha) is token-averaged: pass chosen_lengths")
    lengths = logps.chosen_lengths.to(logps.policy_chosen.dtype).clamp(min=1.0)
    return -logps.policy_chosen / lengths


def _paired_loss(
    kind: PreferenceLoss, logps: PairedLogps, config: PreferenceConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    reduction = kind.logp_reduction
    pc = reduce_logps(logps.policy_chosen, logps.chosen_lengths, reduction)
    pr = reduce_logps(logps.policy_rejected, logps.rejected_lengths, reduction)
    metrics: dict[str, Tensor] = {}
    beta = config.beta

    if kind.needs_reference:
        assert logps.ref_chosen is not None and logps.ref_rejected is not None
        rc = reduce_logps(logps.ref_chosen, logps.chosen_lengths, reduction)
        rr = reduce_logps(logps.ref_rejected, logps.rejected_lengths, reduction)
        h = logratio_margin(pc, pr, rc, rr)
        chosen_rewards, rejected_rewards = beta * (pc - rc), beta * (pr - rr)
        if kind is PreferenceLoss.DPO:
            loss = dpo_loss(h, beta)
        elif kind is PreferenceLoss.CDPO:
            loss = cdpo_loss(h, beta, config.label_smoothing)
        elif kind is PreferenceLoss.ROBUST:
            loss = robust_dpo_loss(h, beta, config.label_smoothing)
        elif kind is PreferenceLoss.IPO:
            loss = ipo_loss(h, tau=beta)
        else:  # FDPO
            loss = fdpo_loss(pc, pr, rc, rr, beta, config.f_divergence, config.f_alpha)
    else:
        # Reference-free methods: the implicit reward is β × the (reduced) policy log-prob.
        chosen_rewards, rejected_rewards = beta * pc, beta * pr
        if kind is PreferenceLoss.SIMPO:
            loss = simpo_loss(pc, pr, beta, config.simpo_gamma)
        elif kind is PreferenceLoss.ORPO:
            loss, odds_ratio_term = orpo_loss(pc, pr, config.orpo_lambda)
            metrics["orpo/odds_ratio_loss"] = odds_ratio_term.detach().mean()
            metrics["nll"] = (-pc).detach().mean()
        else:  # CPO
            chosen_nll = _chosen_nll(logps)
            loss = cpo_loss(pc, pr, chosen_nll, beta, config.cpo_alpha)
            metrics["nll"] = chosen_nll.detach().mean()

    if config.rpo_alpha:
        if kind in (PreferenceLoss.ORPO, PreferenceLoss.CPO):
            raise ValueError(
                f"rpo_alpha adds an NLL term, and {kind.value} has one already: use "
                f"{'orpo' if kind is PreferenceLoss.ORPO else 'cpo_alpha'} weights instead"
            )
        loss = loss + config.rpo_alpha * _chosen_nll(logps)
        metrics["nll"] = _chosen_nll(logps).detach().mean()

    metrics.update(_paired_metrics(chosen_rewards.detach(), rejected_rewards.detach()))
    metrics["logps/chosen"] = pc.detach().mean()
    metrics["logps/rejected"] = pr.detach().mean()
    return loss, metrics


def _unpaired_loss(
    logps: UnpairedLogps, config: PreferenceConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    assert logps.ref is not None
    reduction = PreferenceLoss.KTO.logp_reduction
    policy = reduce_logps(logps.policy, logps.lengths, reduction)
    ref = reduce_logps(logps.ref, logps.lengths, reduction)
    z0 = torch.as_tensor(logps.reference_point, dtype=policy.dtype, device=policy.device)
    loss = kto_loss(
        policy,
        ref,
        logps.desirable,
        z0,
        config.beta,
        config.kto_desirable_weight,
        config.kto_undesirable_weight,
    )
    desirable = logps.desirable.bool()
    rewards = (config.beta * (policy - ref)).detach()
    # Plain sum/count, no clamp: a side with no example gives 0/0 = NaN on purpose (a batch
    # without undesirable examples has no rejected reward; a tracker skips NaN rather than log
    # a misleading 0), and no host sync is needed to find out.
    weight = desirable.to(rewards.dtype)
    chosen = (rewards * weight).sum() / weight.sum()
    rejected = (rewards * (1.0 - weight)).sum() / (1.0 - weight).sum()
    # "Correct" = the example is on the right side of the reference point (its loss < ½ λ).
    correct = torch.where(desirable, rewards > config.beta * z0, rewards < config.beta * z0)
    metrics = {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margin": chosen - rejected,
        "rewards/accuracy": correct.float().mean(),
        "kl": z0.detach(),
    }
    return loss, metrics


def preference_loss(
    kind: PreferenceLoss | str,
    logps: PairedLogps | UnpairedLogps,
    config: PreferenceConfig | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The one call a preference recipe makes → (per-example loss ``[B]``, metrics).

    ``logps`` holds *summed* completion log-probs; they are reduced as ``kind.logp_reduction``
    says. Metrics are detached scalar tensors (no host sync): ``rewards/chosen``,
    ``rewards/rejected`` (implicit rewards β·(log π − log π_ref), or β·log π without a
    reference), ``rewards/margin``, ``rewards/accuracy`` (share with chosen reward > rejected),
    ``logps/chosen``, ``logps/rejected`` (log π(y_w) can fall while the margin grows: watch
    both), plus ``nll`` (ORPO, CPO), ``orpo/odds_ratio_loss`` and ``kl`` (KTO's z₀).
    Take the mean of the loss (or all-reduce it) in the recipe.
    """
    kind = PreferenceLoss(kind)
    config = config or PreferenceConfig()
    if kind is PreferenceLoss.DPO and config.label_smoothing:
        raise ValueError(
            "label_smoothing is set but loss is 'dpo', which ignores it: use 'cdpo' (conservative) "
            "or 'robust' for noisy labels, or set label_smoothing to 0"
        )
    if kind.paired and not isinstance(logps, PairedLogps):
        raise TypeError(f"{kind.value} is a paired loss: pass PairedLogps (chosen and rejected)")
    if not kind.paired and not isinstance(logps, UnpairedLogps):
        raise TypeError(
            f"{kind.value} takes unpaired data: pass UnpairedLogps (split each pair into a "
            "desirable and an undesirable example)"
        )
    refs = (
        (logps.ref_chosen, logps.ref_rejected) if isinstance(logps, PairedLogps) else (logps.ref,)
    )
    has_refs = [r is not None for r in refs]
    if kind.needs_reference and not all(has_refs):
        raise ValueError(
            f"{kind.value} needs reference log-probs: compute them with the reference model"
        )
    if not kind.needs_reference and any(has_refs):
        raise ValueError(
            f"{kind.value} is reference-free but reference log-probs were passed: drop the "
            "reference model (or choose a method that uses one, e.g. dpo)"
        )
    if isinstance(logps, PairedLogps):
        return _paired_loss(kind, logps, config)
    return _unpaired_loss(logps, config)
