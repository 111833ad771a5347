"""The report's figures: matplotlib (Agg backend, no display needed) to PNG bytes.

Each function takes plain numbers and returns the PNG, so the figures can be tested without
run folders and embedded anywhere. A model keeps one colour across every figure of a report
(``model_colors``), which is what lets a reader follow "the DPO model" from the table to the
frontier to the category bars without reading legends.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

# Red comes last: early models would otherwise look like warnings.
PALETTE = (
    "#4361ee",
    "#f77f00",
    "#2a9d8f",
    "#7b2cbf",
    "#d81b60",
    "#0096c7",
    "#8d6e63",
    "#b5a000",
    "#6c757d",
    "#e63946",
)
INK = "#1f2933"
MUTED = "#7b8794"
GRID = "#e4e7eb"
DPI = 110

STYLE: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.edgecolor": "#cbd2d9",
    "axes.labelcolor": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "text.color": INK,
    "legend.frameon": False,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
}


def model_colors(names: Sequence[str]) -> dict[str, str]:
    """One stable colour per model, in report order."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvePanel:
    title: str
    pattern: re.Pattern[str]


# Which metrics.jsonl keys go in which panel, in the order panels are drawn. Recipes log
# different names (loss / policy_loss, reward / rewards/chosen / gold_reward, kl / kl_ref ...),
# so panels are chosen by pattern, not by exact key.
CURVE_PANELS = (
    CurvePanel("loss", re.compile(r"loss")),
    CurvePanel("reward", re.compile(r"reward|score|margin")),
    CurvePanel("KL to reference", re.compile(r"(?:^|[/_])kl(?:$|[/_])")),
    CurvePanel("cost and λ", re.compile(r"cost|lambda")),
    CurvePanel("accuracy", re.compile(r"acc")),
    CurvePanel("response length", re.compile(r"length|no_eos")),
)
MAX_PANELS = 4
MAX_LINES = 4


def _numeric_series(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, r in enumerate(rows):
        step = r.get("step", i)
        for k, v in r.items():
            if k in ("step", "time") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(float(v)):
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(float(step))
            ys.append(float(v))
    return series


def curve_groups(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(panel title, keys) for the panels a run's metrics.jsonl can fill, at most 4."""
    series = _numeric_series(rows)
    used: set[str] = set()
    out = []
    for panel in CURVE_PANELS:
        keys = [k for k in series if k not in used and panel.pattern.search(k.lower())]
        keys = keys[:MAX_LINES]
        if keys:
            used.update(keys)
            out.append((panel.title, keys))
    return out[:MAX_PANELS]


def _ema(ys: Sequence[float], alpha: float) -> list[float]:
    out, acc = [], ys[0]
    for y in ys:
        acc = alpha * y + (1 - alpha) * acc
        out.append(acc)
    return out


def training_curves(run: str, rows: Sequence[dict[str, Any]], color: str) -> bytes | None:
    """Panels (loss, reward, KL, ...) for one run, two per row; None when nothing to plot."""
    groups = curve_groups(rows)
    if not groups:
        return None
    series = _numeric_series(rows)
    ncols = min(2, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols + 0.3, 2.3 * nrows + 0.35))
        flat = list(axes.flat) if hasattr(axes, "flat") else [axes]
        for ax, (title, keys) in zip(flat, groups, strict=False):
            for j, k in enumerate(keys):
                xs, ys = series[k]
                c = color if j == 0 else PALETTE[(PALETTE.index(color) + 4 * j) % len(PALETTE)]
                if len(ys) > 20:
                    ax.plot(xs, ys, color=c, alpha=0.25, linewidth=0.8)
                    ax.plot(xs, _ema(ys, 2 / (1 + len(ys) / 10)), color=c, linewidth=1.8, label=k)
                else:
                    ax.plot(xs, ys, color=c, linewidth=1.8, marker="o", markersize=3, label=k)
            named = len(keys) == 1 and keys[0].lower() != title.lower()
            ax.set_title(f"{title} ({keys[0]})" if named else title)
            ax.set_xlabel("step", color=MUTED)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
            if len(keys) > 1:
                ax.legend(fontsize=8, loc="best")
        for ax in flat[len(groups) :]:
            ax.set_visible(False)
        fig.suptitle(run, x=0.01, ha="left", fontsize=12, fontweight="bold", color=color)
        fig.tight_layout()
        return to_png(fig)


# --------------------------------------------------------------------------------------------
# Comparisons across models
# --------------------------------------------------------------------------------------------


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by one with lower (or equal) KL and higher reward, by KL."""
    front: list[tuple[float, float]] = []
    for kl, r in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or r > front[-1][1]:
            front.append((kl, r))
    return front


def reward_kl_frontier(
    points: dict[str, tuple[float, float]], colors: dict[str, str], reference: str | None
) -> bytes:
    """Gold reward against KL to the reference, one dot per model, with the Pareto front."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.2, 4.0))
        front = pareto_front(list(points.values()))
        if len(front) > 1:
            ax.step(
                [p[0] for p in front],
                [p[1] for p in front],
                where="post",
                color=MUTED,
                linestyle="--",
                linewidth=1.2,
                label="frontier",
            )
        for name, (kl, r) in points.items():
            ax.scatter([kl], [r], s=110, color=colors[name], zorder=3, edgecolor="white")
            ax.annotate(
                name,
                (kl, r),
                xytext=(8, 6),
                textcoords="offset points",
                fontsize=10,
                fontweight="bold",
                color=colors[name],
            )
        ax.set_xlabel(f"KL to {reference or 'reference'} (nats per response)")
        ax.set_ylabel("gold reward (mean)")
        ax.set_title("Reward–KL frontier: up and to the left is better")
        ax.margins(x=0.18, y=0.18)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
        if len(front) > 1:
            ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        return to_png(fig)


def win_rate_bars(
    rates: dict[str, tuple[float, float | None]], colors: dict[str, str], reference: str | None
) -> bytes:
    """Horizontal bars of win rate vs the reference with ±1.96 s.e. whiskers and the 50 % line."""
    names = list(rates)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.2, 0.55 * len(names) + 1.3))
        ys = range(len(names))
        vals = [100 * rates[n][0] for n in names]
        errs = [196 * (rates[n][1] or 0.0) for n in names]
        ax.barh(ys, vals, color=[colors[n] for n in names], height=0.6, zorder=2)
        lo = [min(e, v) for v, e in zip(vals, errs, strict=True)]
        hi = [min(e, 100 - v) for v, e in zip(vals, errs, strict=True)]
        ax.errorbar(vals, ys, xerr=[lo, hi], fmt="none", ecolor=INK, capsize=3, zorder=3)
        ax.axvline(50, color=MUTED, linestyle="--", linewidth=1.2, zorder=1)
        for y, v, h in zip(ys, vals, hi, strict=True):
            ax.text(v + h + 1.5, y, f"{v:.0f}%", va="center", ha="left", fontsize=9, color=INK)
        ax.set_yticks(list(ys), names)
        ax.invert_yaxis()
        ax.set_xlim(0, 112)
        ax.set_xticks([0, 25, 50, 75, 100])
        ax.set_xlabel(f"gold win rate vs {reference or 'reference'} (%), ties count half")
        ax.set_title("Win rate (95 % interval)")
        ax.grid(axis="y", visible=False)
        fig.tight_layout()
        return to_png(fig)


def grouped_bars(
    groups: Sequence[str],
    values: dict[str, Sequence[float | None]],
    colors: dict[str, str],
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
    width: float = 9.5,
) -> bytes:
    """Vertical grouped bars: one group per category, one bar per model (None = no bar)."""
    models = list(values)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(width, 3.6))
        bar_w = 0.8 / max(1, len(models))
        for j, m in enumerate(models):
            xs = [i + (j - (len(models) - 1) / 2) * bar_w for i in range(len(groups))]
            ys = [float("nan") if v is None else v for v in values[m]]
            ax.bar(xs, ys, width=bar_w * 0.92, color=colors[m], label=m, zorder=2)
        labels = [textwrap.fill(g.replace("_", " "), 12, break_long_words=False) for g in groups]
        ax.set_xticks(range(len(groups)), labels)
        ax.axhline(0, color="#9aa5b1", linewidth=0.8)
        if ylim:
            ax.set_ylim(*ylim)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(axis="x", visible=False)
        # Legend beside the (left-aligned) title, clear of the wrapped category labels.
        ax.legend(ncol=min(len(models), 6), loc="lower right", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        return to_png(fig)


def level_bars(
    levels: Sequence[tuple[str, list[str], dict[str, list[float | None]]]],
    colors: dict[str, str],
) -> bytes:
    """The three levels of alignment goals side by side; every bar is 'higher is better'.

    levels: (title, metric labels, {model: value per metric in [0, 1]}).
    """
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(levels), figsize=(4.0 * len(levels), 3.5), sharex=True)
        axes = [axes] if len(levels) == 1 else list(axes)
        for ax, (title, labels, values) in zip(axes, levels, strict=True):
            models = list(values)
            h = 0.8 / max(1, len(models))
            for j, m in enumerate(models):
                ys = [i + (j - (len(models) - 1) / 2) * h for i in range(len(labels))]
                xs = [float("nan") if v is None else 100 * v for v in values[m]]
                ax.barh(ys, xs, height=h * 0.9, color=colors[m], label=m, zorder=2)
            ax.set_yticks(range(len(labels)), labels)
            ax.invert_yaxis()
            ax.set_xlim(0, 100)
            ax.set_title(title)
            ax.set_xlabel("% (higher is better)", color=MUTED)
            ax.grid(axis="y", visible=False)
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), fontsize=9)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        return to_png(fig)
