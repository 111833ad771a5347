"""Reward over-optimisation study of an RL run: proxy and gold reward against √KL.

Gao et al. (2023) plot the gold reward of a policy optimised against a proxy reward model as a
function of d = √KL(π ‖ π_ref): the proxy keeps rising while the gold reward peaks and then
falls. An alignkit RL run whose ``monitor.world`` names a sandbox world logs, every iteration,
the proxy reward, the gold oracle's reward and the sequence KL of the same rollout samples.
This module bins those rows into windows of consecutive iterations (each window averages
``window`` × the rollout batch of samples of the current policy), and reports per window the
mean √KL, proxy and gold reward, where the gold reward peaked, and whether the proxy kept
rising after it: the over-optimisation signature.

``alignkit overopt RUN`` writes ``overopt.json`` and ``overopt.png`` beside the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignkit.data.readers import DataError


def read_rl_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The per-iteration rows of an RL run's metrics.jsonl that carry proxy, gold and KL."""
    path = Path(run) / "metrics.jsonl" if Path(run).is_dir() else Path(run)
    if not path.exists():
        raise DataError(f"{path}: not found; pass an RL run folder (alignkit grpo/ppo/rl ...)")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {i}: not JSON ({e.msg})") from None
        if all(isinstance(row.get(k), (int, float)) for k in ("reward", "gold_reward", "kl")):
            rows.append(row)
    if not rows:
        raise DataError(
            f"{path}: no row has reward, gold_reward and kl; the study needs an RL run with "
            "monitor.world set to a sandbox world (the gold oracle)"
        )
    return rows


def overoptimisation_curve(rows: Sequence[dict[str, Any]], window: int = 10) -> dict[str, Any]:
    """Window means of √KL, proxy and gold reward, the gold peak and the verdict.

    √KL is taken of the window's mean KL, clamped at 0 (the per-sample KL estimate can be
    slightly negative early on). ``proxy_gain_after_gold_peak`` is the proxy's rise from the
    window where gold peaked to the last window; ``gold_drop_after_peak`` the gold's fall over
    the same span. Over-optimisation is reported when both are positive beyond one standard
    error of the window means (estimated from the spread of per-iteration values).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    points = []
    for start in range(0, len(rows), window):
        chunk = rows[start : start + window]
        if len(chunk) < max(1, window // 2) and points:
            break  # a short tail window is noise; fold it away
        kl = sum(float(r["kl"]) for r in chunk) / len(chunk)
        proxy = [float(r["reward"]) for r in chunk]
        gold = [float(r["gold_reward"]) for r in chunk]
        points.append(
            {
                "iterations": [
                    int(chunk[0].get("iteration", start + 1)),
                    int(chunk[-1].get("iteration", start + len(chunk))),
                ],
                "kl": kl,
                "sqrt_kl": math.sqrt(max(kl, 0.0)),
                "proxy": sum(proxy) / len(proxy),
                "gold": sum(gold) / len(gold),
                "gold_se": _se(gold),
                "proxy_se": _se(proxy),
            }
        )
    peak = max(range(len(points)), key=lambda i: points[i]["gold"])
    first, last, top = points[0], points[-1], points[peak]
    proxy_gain = last["proxy"] - top["proxy"]
    gold_drop = top["gold"] - last["gold"]
    tol_gold = math.hypot(top["gold_se"], last["gold_se"])
    tol_proxy = math.hypot(top["proxy_se"], last["proxy_se"])
    return {
        "window": window,
        "points": points,
        "gold_peak": {"index": peak, **top},
        "start": {"proxy": first["proxy"], "gold": first["gold"]},
        "end": {"proxy": last["proxy"], "gold": last["gold"], "sqrt_kl": last["sqrt_kl"]},
        "proxy_gain_total": last["proxy"] - first["proxy"],
        "gold_gain_total": last["gold"] - first["gold"],
        "proxy_gain_after_gold_peak": proxy_gain,
        "gold_drop_after_peak": gold_drop,
        "over_optimised": bool(proxy_gain > tol_proxy and gold_drop > tol_gold),
    }


def _se(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return math.sqrt(var / len(xs))


def overopt_png(curve: dict[str, Any], title: str) -> bytes:
    """Proxy and gold reward against √KL, the gold peak marked."""
    from alignkit.evaluation.plots import PALETTE, STYLE, plt, to_png

    pts = curve["points"]
    x = [p["sqrt_kl"] for p in pts]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for key, label, color in (
            ("proxy", "proxy reward (reward model)", PALETTE[0]),
            ("gold", "gold reward (oracle)", PALETTE[1]),
        ):
            y = [p[key] for p in pts]
            se = [p[f"{key}_se"] for p in pts]
            ax.plot(x, y, marker="o", ms=3, color=color, label=label)
            lo = [a - b for a, b in zip(y, se, strict=True)]
            hi = [a + b for a, b in zip(y, se, strict=True)]
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)
        peak = curve["gold_peak"]
        ax.axvline(peak["sqrt_kl"], color="#7b8794", linestyle=":", linewidth=1)
        ax.annotate(
            "gold peak", (peak["sqrt_kl"], peak["gold"]), textcoords="offset points",
            xytext=(6, 8), fontsize=9, color="#7b8794",
        )  # fmt: skip
        ax.set_xlabel("√KL(π ‖ π_ref) of the rollout samples")
        ax.set_ylabel("mean reward per window")
        ax.set_title(title)
        ax.legend(loc="best")
        return to_png(fig)


def overopt_report(
    run: str | Path, out: str | Path | None = None, window: int = 10, plot: bool = True
) -> dict[str, Any]:
    """Study one RL run; writes overopt.json (and overopt.png) into ``out`` (default: the run)."""
    rows = read_rl_metrics(run)
    curve = overoptimisation_curve(rows, window)
    curve["run"] = str(run)
    folder = (
        Path(out) if out is not None else (Path(run) if Path(run).is_dir() else Path(run).parent)
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "overopt.json").write_text(json.dumps(curve, indent=2) + "\n")
    if plot:
        name = Path(run).name if Path(run).is_dir() else Path(run).parent.name
        (folder / "overopt.png").write_bytes(overopt_png(curve, f"over-optimisation: {name}"))
    return curve
