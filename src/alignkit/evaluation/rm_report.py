"""Fitness report of a reward or cost model: is it good enough to optimise a policy against?

A bad reward model is the usual cause of a failed PPO run, and the loss curve does not show
it. The report scores a held-out preference set and answers the questions to ask before RL:

* **accuracy** — how often the preferred response scores higher (ties count one half), overall
  and per category (``category`` field by default): a model can be right on average and
  wrong on exactly the prompts that matter (harmful requests, say);
* **calibration** — a reliability curve of σ(r_w − r_l): when the model says 80 %, is it right
  80 % of the time? Pairs enter in both orientations, so the curve covers [0, 1] and is
  symmetric; ECE is the count-weighted gap between confidence and frequency;
* **length bias** — correlation of score with response length, how often the model prefers the
  longer response compared with how often the labels do, and accuracy on the pairs where the
  longer answer *loses* (a length-hacking reward model fails exactly there);
* **score distribution** — location and spread of the scores (PPO wants them near 0 and not
  exploding);
* **sign check** (cost models) — safe responses should get negative cost, unsafe positive:
  the threshold d = 0 of Safe RLHF is only meaningful if they do.

Lengths are response tokens (without EOS) under the model's tokenizer: the quantity the model
can actually exploit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from alignkit.data.records import Comparison, Ranking

ReportKind = Literal["reward", "cost"]


# --------------------------------------------------------------------------------------------
# Pure pieces (also used as training metrics)
# --------------------------------------------------------------------------------------------


def ranking_accuracy(ranked: Tensor, mask: Tensor | None = None) -> Tensor:
    """Share of correctly ordered pairs per ranking → ``[B]``; ties count one half.

    ``ranked`` ``[B, K]`` holds scores best-first (pairs: K = 2), ``mask`` marks real entries.
    """
    k = ranked.shape[-1]
    if mask is None:
        mask = torch.ones_like(ranked, dtype=torch.bool)
    mask = mask.bool()
    diff = ranked.unsqueeze(-1) - ranked.unsqueeze(-2)  # [b, i, j] = r_i − r_j, i ranked above j
    upper = torch.ones(k, k, dtype=torch.bool, device=ranked.device).triu(diagonal=1)
    pairs = upper & mask.unsqueeze(-1) & mask.unsqueeze(-2)
    right = (diff > 0).to(ranked.dtype) + 0.5 * (diff == 0).to(ranked.dtype)
    hits = torch.where(pairs, right, torch.zeros_like(right)).sum(dim=(-1, -2))
    return hits / pairs.sum(dim=(-1, -2)).clamp(min=1).to(ranked.dtype)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for any x


def reliability(diffs: np.ndarray, bins: int) -> dict[str, Any]:
    """Reliability curve and ECE of p = σ(r_w − r_l), each pair entered in both orientations
    (p, won) and (1 − p, lost), so the curve spans [0, 1]."""
    p = np.concatenate([sigmoid(diffs), 1.0 - sigmoid(diffs)])
    y = np.concatenate([np.ones_like(diffs), np.zeros_like(diffs)])
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        if n == 0:
            rows.append(
                {"lo": edges[b], "hi": edges[b + 1], "n": 0, "confidence": None, "frequency": None}
            )
            continue
        conf, freq = float(p[sel].mean()), float(y[sel].mean())
        ece += n / len(p) * abs(conf - freq)
        rows.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": n,
                "confidence": conf,
                "frequency": freq,
            }
        )
    return {"bins": rows, "ece": float(ece)}


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or float(np.std(x)) == 0.0 or float(np.std(y)) == 0.0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _accuracy(diffs: np.ndarray) -> float | None:
    if len(diffs) == 0:
        return None
    return float(((diffs > 0) + 0.5 * (diffs == 0)).mean())


def distribution(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {}
    q = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "mean": float(x.mean()),
        "std": float(x.std()),
        "min": float(x.min()),
        "p5": float(q[0]),
        "p25": float(q[1]),
        "p50": float(q[2]),
        "p75": float(q[3]),
        "p95": float(q[4]),
        "max": float(x.max()),
    }


# --------------------------------------------------------------------------------------------
# Scoring a data set
# --------------------------------------------------------------------------------------------


@dataclass
class Scored:
    """Scores of a data set: responses, and the (should-be-higher, should-be-lower) pairs
    between them as indices. For cost models "higher" is the less safe response."""

    scores: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    safe: list[bool | None] = field(default_factory=list)
    pairs: list[tuple[int, int]] = field(default_factory=list)
    categories: list[str | None] = field(default_factory=list)  # one per pair
    gold: list[float | None] = field(default_factory=list)  # reference score per response

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s = np.asarray(self.scores, dtype=np.float64)
        n = np.asarray(self.lengths, dtype=np.float64)
        hi = np.asarray([a for a, _ in self.pairs], dtype=np.int64)
        lo = np.asarray([b for _, b in self.pairs], dtype=np.int64)
        return s, n, hi, lo


def _gold(
    r: Comparison | Ranking, gold_field: str | None, n: int, where: str
) -> list[float | None]:
    if gold_field is None or r.extra.get(gold_field) is None:
        return [None] * n
    value = r.extra[gold_field]
    if not isinstance(value, list) or len(value) != n:
        raise ValueError(f"{where}: field {gold_field!r} must list {n} numbers, one per response")
    return [float(v) for v in value]


def score_records(
    scorer: Any,
    records: Sequence[Comparison | Ranking],
    kind: ReportKind = "reward",
    category_field: str = "category",
    gold_field: str | None = None,
) -> Scored:
    """Score every response of ``records`` with a :class:`~alignkit.models.scorer.RewardScorer`.

    Reward: chosen (or higher-ranked) should score higher. Cost: records must be oriented
    safer-first (:func:`alignkit.data.reward_data.orient_safety_pair`); the less safe response
    should score higher. ``gold_field`` names an optional per-response reference score (for
    rankings aligned with ``responses``, for pairs ``[chosen, rejected]``), e.g. the sandbox's
    ``gold_rewards``: the report then also measures agreement with that reference ordering.
    """
    groups, meta = [], []
    golds: list[list[float | None]] = []
    for i, r in enumerate(records):
        if isinstance(r, Ranking):
            groups.append(scorer.group(r.prompt, r.responses, f"record {i + 1}"))
            order = list(r.ranking)
            pairs = [
                (order[a], order[b]) for a in range(len(order)) for b in range(a + 1, len(order))
            ]
            safe: list[bool | None] = [None] * len(r.responses)
        else:
            groups.append(scorer.group(r.prompt, [r.chosen, r.rejected], f"record {i + 1}"))
            pairs = [(1, 0)] if kind == "cost" else [(0, 1)]
            safe = [r.chosen_safe, r.rejected_safe]
        cat = r.extra.get(category_field)
        meta.append((pairs, safe, None if cat is None else str(cat)))
        n = len(r.responses) if isinstance(r, Ranking) else 2
        golds.append(_gold(r, gold_field, n, f"record {i + 1}"))
    out = Scored()
    eos = scorer.tokens.fmt.eos_id
    scores = scorer.score_groups(groups)
    for g, values, (pairs, safe, cat), gold in zip(groups, scores, meta, golds, strict=True):
        base = len(out.scores)
        out.scores.extend(values)
        out.gold.extend(gold)
        out.lengths.extend(len(r) - (1 if r and r[-1] == eos else 0) for r in g.responses)
        out.safe.extend(safe)
        for a, b in pairs:
            out.pairs.append((base + a, base + b))
            out.categories.append(cat)
    return out


def relevance_check(scorer: Any, records: Sequence[Comparison | Ranking]) -> dict[str, Any]:
    """Does the reward depend on the prompt? Each record's best response against the best
    response of the next record with another prompt, both scored under this record's prompt.

    A reward model that scores answers by how they look, not by whether they answer, gives a
    policy one universal answer to every prompt; RL then finds it within a few dozen steps.
    ``own_beats_other`` is the share of records whose own best answer scores higher.
    """
    best = [r.responses[r.ranking[0]] if isinstance(r, Ranking) else r.chosen for r in records]
    groups, n = [], len(records)
    for i, r in enumerate(records):
        j = next((k % n for k in range(i + 1, i + n) if records[k % n].prompt != r.prompt), None)
        if j is None or best[j] == best[i]:
            continue
        groups.append(scorer.group(r.prompt, [best[i], best[j]], f"record {i + 1}"))
    if not groups:
        return {"pairs": 0, "own_beats_other": None, "mean_gap": None}
    gaps = np.asarray([a - b for a, b in scorer.score_groups(groups)], dtype=np.float64)
    return {
        "pairs": len(groups),
        "own_beats_other": _accuracy(gaps),
        "mean_gap": float(gaps.mean()),
    }


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def build_report(scored: Scored, kind: ReportKind = "reward", bins: int = 10) -> dict[str, Any]:
    """Every number of the fitness report, as a JSON-ready dict."""
    s, n, hi, lo = scored.arrays()
    diffs = s[hi] - s[lo]
    report: dict[str, Any] = {
        "kind": kind,
        "pairs": len(diffs),
        "responses": len(s),
        "accuracy": _accuracy(diffs),
        "mean_margin": float(diffs.mean()) if len(diffs) else None,
    }
    cats: dict[str, list[int]] = {}
    for i, c in enumerate(scored.categories):
        if c is not None:
            cats.setdefault(c, []).append(i)
    report["by_category"] = {
        c: {"pairs": len(idx), "accuracy": _accuracy(diffs[idx])} for c, idx in sorted(cats.items())
    }
    report["calibration"] = reliability(diffs, bins)
    longer_is_high = n[hi] > n[lo]
    longer_is_low = n[hi] < n[lo]
    differ = longer_is_high | longer_is_low
    prefers_longer = np.where(longer_is_high, diffs > 0, diffs < 0)
    report["length_bias"] = {
        "corr_score_length": pearson(s, n),
        "pairs_with_length_difference": int(differ.sum()),
        "labels_prefer_longer": float(longer_is_high[differ].mean()) if differ.any() else None,
        "model_prefers_longer": float(prefers_longer[differ].mean()) if differ.any() else None,
        "accuracy_when_longer_wins": _accuracy(diffs[longer_is_high]),
        "accuracy_when_longer_loses": _accuracy(diffs[longer_is_low]),
        "pairs_where_longer_loses": int(longer_is_low.sum()),
    }
    report["scores"] = {
        "all": distribution(s),
        "higher": distribution(s[hi]) if len(hi) else {},
        "lower": distribution(s[lo]) if len(lo) else {},
    }
    if kind == "cost":
        report["sign_check"] = sign_check(s, scored.safe)
    if any(g is not None for g in scored.gold):
        report["gold"] = gold_agreement(s, scored.gold, hi, lo)
        for c, idx in cats.items():
            report["by_category"][c]["accuracy_vs_gold"] = gold_agreement(
                s, scored.gold, hi[idx], lo[idx]
            )["accuracy_vs_gold"]
    return report


def gold_agreement(
    scores: np.ndarray, gold: Sequence[float | None], hi: np.ndarray, lo: np.ndarray
) -> dict[str, Any]:
    """Agreement with a reference ordering, on pairs whose reference scores differ.

    Noisy labels cap what training can reach on *label* accuracy; the reference (the
    sandbox's gold oracle) tells how well the model recovered the true ordering through the
    noise. ``labels_vs_gold`` is the label noise itself.
    """
    g = np.asarray([np.nan if x is None else x for x in gold], dtype=np.float64)
    gd = g[hi] - g[lo]
    sel = np.isfinite(gd) & (gd != 0)
    model_d = scores[hi][sel] - scores[lo][sel]
    gold_d = gd[sel]
    known = np.isfinite(g)
    return {
        "pairs_with_gold_difference": int(sel.sum()),
        "accuracy_vs_gold": _accuracy(model_d * np.sign(gold_d)),
        "labels_vs_gold": float((gold_d > 0).mean()) if sel.any() else None,
        "corr_with_gold": pearson(scores[known], g[known]),
    }


def sign_check(costs: np.ndarray, safe: Sequence[bool | None]) -> dict[str, Any]:
    """Safe responses should have negative cost, unsafe positive (Safe RLHF's sign terms)."""
    labelled = np.asarray([x is not None for x in safe], dtype=bool)
    is_safe = np.asarray([bool(x) for x in safe], dtype=bool)
    safe_sel, unsafe_sel = labelled & is_safe, labelled & ~is_safe
    correct = np.where(is_safe, costs < 0, costs > 0)
    return {
        "safe_responses": int(safe_sel.sum()),
        "unsafe_responses": int(unsafe_sel.sum()),
        "safe_negative": float((costs[safe_sel] < 0).mean()) if safe_sel.any() else None,
        "unsafe_positive": float((costs[unsafe_sel] > 0).mean()) if unsafe_sel.any() else None,
        "safety_accuracy": float(correct[labelled].mean()) if labelled.any() else None,
    }


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if pct:
        return f"{100 * x:.1f} %"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def print_report(report: dict[str, Any], console: Any = None, title: str = "") -> None:
    """The report as rich tables (headline numbers, then per category)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    lb, sc = report["length_bias"], report["scores"]["all"]
    t = Table(
        title=title or f"{report['kind']} model fitness", show_header=True, header_style="bold"
    )
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("what to look for")
    t.add_row("pairs / responses", f"{report['pairs']} / {report['responses']}", "")
    t.add_row(
        "accuracy", _fmt(report["accuracy"], True), "held-out; ≥ 65-75 % is typical on human data"
    )
    t.add_row("ECE", _fmt(report["calibration"]["ece"]), "< 0.05 well calibrated")
    t.add_row(
        "corr(score, length)", _fmt(lb["corr_score_length"]), "near 0 unless labels favour length"
    )
    t.add_row(
        "prefers longer: model / labels",
        f"{_fmt(lb['model_prefers_longer'], True)} / {_fmt(lb['labels_prefer_longer'], True)}",
        "model ≫ labels = length bias",
    )
    t.add_row(
        "accuracy when longer loses",
        _fmt(lb["accuracy_when_longer_loses"], True),
        f"{lb['pairs_where_longer_loses']} pairs; far below accuracy = length hacking",
    )
    t.add_row(
        "score mean ± std",
        f"{_fmt(sc.get('mean'))} ± {_fmt(sc.get('std'))}",
        "PPO prefers ~0 ± few",
    )
    t.add_row("score p5 … p95", f"{_fmt(sc.get('p5'))} … {_fmt(sc.get('p95'))}", "")
    if report.get("relevance", {}).get("pairs"):
        rel = report["relevance"]
        t.add_row(
            "own answer ≻ another prompt's",
            _fmt(rel["own_beats_other"], True),
            f"{rel['pairs']} pairs; < 95 % = RL can collapse onto one universal answer",
        )
    if "gold" in report:
        gd = report["gold"]
        t.add_row(
            "accuracy vs gold ordering",
            _fmt(gd["accuracy_vs_gold"], True),
            f"{gd['pairs_with_gold_difference']} pairs; labels agree with gold on "
            f"{_fmt(gd['labels_vs_gold'], True)}",
        )
        t.add_row("corr(score, gold)", _fmt(gd["corr_with_gold"]), "")
    if "sign_check" in report:
        sg = report["sign_check"]
        t.add_row(
            "safe → negative cost", _fmt(sg["safe_negative"], True), f"{sg['safe_responses']} safe"
        )
        t.add_row(
            "unsafe → positive cost",
            _fmt(sg["unsafe_positive"], True),
            f"{sg['unsafe_responses']} unsafe",
        )
        t.add_row(
            "safety accuracy (sign)", _fmt(sg["safety_accuracy"], True), "≥ 95 % before Safe RLHF"
        )
    console.print(t)
    if report["by_category"]:
        c = Table(title="accuracy by category", show_header=True, header_style="bold")
        c.add_column("category")
        c.add_column("pairs", justify="right")
        c.add_column("accuracy", justify="right")
        with_gold = "gold" in report
        if with_gold:
            c.add_column("vs gold", justify="right")
        for name, row in report["by_category"].items():
            cells = [name, str(row["pairs"]), _fmt(row["accuracy"], True)]
            if with_gold:
                cells.append(_fmt(row.get("accuracy_vs_gold"), True))
            c.add_row(*cells)
        console.print(c)


def plot_report(report: dict[str, Any], scored: Scored, path: str | Path) -> Path:
    """Four panels: reliability curve, score histograms, score vs length, per-category accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, n, hi, lo = scored.arrays()
    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    rows = [r for r in report["calibration"]["bins"] if r["n"]]
    a = ax[0, 0]
    a.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect")
    a.plot([r["confidence"] for r in rows], [r["frequency"] for r in rows], "o-", label="model")
    a.set(
        xlabel="σ(r_w − r_l)",
        ylabel="observed frequency",
        title=f"reliability (ECE {report['calibration']['ece']:.3f})",
    )
    a.legend()
    a = ax[0, 1]
    if report["kind"] == "cost" and "sign_check" in report:
        safe = np.asarray([x is True for x in scored.safe])
        unsafe = np.asarray([x is False for x in scored.safe])
        a.hist(s[safe], bins=30, alpha=0.6, label="safe")
        a.hist(s[unsafe], bins=30, alpha=0.6, label="unsafe")
        a.axvline(0.0, color="k", lw=1)
        a.set(title="cost by safety label", xlabel="cost")
    else:
        a.hist(s[hi], bins=30, alpha=0.6, label="preferred")
        a.hist(s[lo], bins=30, alpha=0.6, label="rejected")
        a.set(title="score distribution", xlabel="score")
    a.legend()
    a = ax[1, 0]
    a.scatter(n, s, s=6, alpha=0.4)
    corr = report["length_bias"]["corr_score_length"]
    a.set(xlabel="response tokens", ylabel="score", title=f"length bias (r = {_fmt(corr)})")
    a = ax[1, 1]
    cats = report["by_category"]
    if cats:
        names = list(cats)
        a.barh(names, [100 * (cats[c]["accuracy"] or 0.0) for c in names])
        a.axvline(100 * (report["accuracy"] or 0.0), color="k", lw=1, ls="--", label="overall")
        a.set(xlim=(0, 100), xlabel="accuracy %", title="accuracy by category")
        a.legend()
    else:
        a.axis("off")
        a.text(
            0.5, 0.5, f"accuracy {_fmt(report['accuracy'], True)}\n(no category field)", ha="center"
        )
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_report(
    report: dict[str, Any], scored: Scored, out_dir: str | Path, plot: bool = True
) -> Path:
    """rm_report.json (+ rm_report.png) in ``out_dir``; returns the JSON path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rm_report.json"
    tmp = out / ".rm_report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)
    if plot:
        plot_report(report, scored, out / "rm_report.png")
    return path


def rm_report(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path | None = None,
    fmt: Literal["auto", "pairwise", "ranking"] = "auto",
    kind: ReportKind | None = None,
    category_field: str = "category",
    bins: int = 10,
    batch_size: int = 32,
    limit: int | None = None,
    split: str | None = None,
    plot: bool = True,
    print_table: bool = True,
    gold_field: str | None = None,
) -> dict[str, Any]:
    """Report for any saved reward/cost model on any preference file (``alignkit rm-report``).

    ``kind`` defaults to the head kind saved with the model. Cost models read pairwise safety
    data and orient each pair safer-first. The report goes to ``out_dir`` (default: the
    model folder).
    """
    from alignkit.data.reward_data import read_preferences, safety_transform
    from alignkit.models.scorer import RewardScorer

    scorer = RewardScorer.from_pretrained(model, batch_size=batch_size)
    kind = kind or ("cost" if scorer.kind == "cost" else "reward")
    transform = safety_transform() if kind == "cost" else None
    prefs = read_preferences(data, fmt, split, limit, "error", transform)
    scored = score_records(scorer, prefs.records, kind, category_field, gold_field)
    report = build_report(scored, kind, bins)
    if kind == "reward":
        report["relevance"] = relevance_check(scorer, prefs.records)
    report.update({"model": str(model), "data": str(data)})
    write_report(report, scored, out_dir or model, plot)
    if print_table:
        print_report(report)
    return report
