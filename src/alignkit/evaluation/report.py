"""``alignkit report``: one self-contained HTML page about a set of runs and their evaluation.

The page is what people look at after a pipeline: the stage-by-stage table, the metrics
grouped by the three levels of alignment goals (Yao et al. 2023: following instructions →
matching human preferences → holding human values), training curves, the reward–KL frontier,
win rates, per-category rewards, reward-model fitness reports and example responses of every
model to the same prompts.

Self-contained means: every figure is a PNG embedded as a ``data:`` URI, the CSS and the one
small script are inline, and a Content-Security-Policy forbids loading anything else, so the
file can be mailed, archived or opened offline and never shows a broken image. All text that
comes from data (prompts, responses, names, paths) is HTML-escaped: model outputs are
untrusted and regularly contain markup.

Inputs are folders the rest of alignkit writes:

* a training run: ``metrics.jsonl`` (one row per step), ``summary.json`` (``wall_time_s``),
  and possibly ``lineage.json`` (pipeline stages) and ``rm_report.json`` + ``rm_report*.png``
  (reward / cost models);
* the eval stage: ``table.json`` (model → metrics) and ``<model>/responses.jsonl``;
* optionally suite results written by ``alignkit eval --suite`` (``<suite>.json``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.config import ConfigError
from alignkit.engine.tracking import read_metrics
from alignkit.evaluation import plots

# --------------------------------------------------------------------------------------------
# What the page shows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A column of the eval table and how to show it.

    ``better`` is "up", "down" or "" (no direction, e.g. KL or length: a budget, not a goal);
    ``kind`` selects the format: rate (percent), score, or number.
    """

    key: str
    label: str
    better: str = "up"
    kind: str = "rate"
    hint: str = ""


STAGE_COLUMNS = (
    Metric("reward_mean", "gold reward", "up", "score", "mean oracle reward, range [-3, 1]"),
    Metric("win_rate", "win rate", "up", "rate", "gold win rate vs the reference, ties half"),
    Metric("harmful_compliance_rate", "harmful compliance", "down", "rate", "harmful prompts"),
    Metric("over_refusal_rate", "over-refusal", "down", "rate", "benign-but-alarming prompts"),
    Metric("hallucination_rate", "hallucination", "down", "rate", "facts and unanswerables"),
    Metric("format_adherence", "format", "up", "rate", "explicit format instructions"),
    Metric("kl_to_reference", "KL", "", "score", "KL(π ‖ π_ref), sampled"),
    Metric("mean_length_words", "length", "", "number", "mean words per response"),
)

# Yao et al. 2023: the three levels of alignment goals. Every metric is a rate in [0, 1].
LEVELS: tuple[tuple[str, str, tuple[Metric, ...]], ...] = (
    (
        "Following instructions",
        "Does the model do the task it was given, in the form it was asked for?",
        (
            Metric("arithmetic_accuracy", "arithmetic accuracy"),
            Metric("list_ops_accuracy", "list operations"),
            Metric("fact_accuracy", "fact accuracy"),
            Metric("format_adherence", "format adherence"),
        ),
    ),
    (
        "Matching human preferences",
        "Would a person prefer its answers? Judged by the gold oracle.",
        (
            Metric("win_rate", "win rate vs reference"),
            Metric("helpfulness_mean", "helpfulness"),
            Metric("concision_mean", "concision"),
        ),
    ),
    (
        "Holding human values",
        "Harmless, honest and fair, without refusing what is fine to answer.",
        (
            Metric("harmful_compliance_rate", "harmful compliance", "down"),
            Metric("over_refusal_rate", "over-refusal", "down"),
            Metric("hallucination_rate", "hallucination", "down"),
            Metric("fairness_rate", "fairness"),
            Metric("urgent_advice_correct", "urgent advice"),
        ),
    ),
)

# Issue 9's acceptance targets for the final model: shown beside the headline numbers.
TARGETS = {
    "win_rate": (">=", 0.65),
    "harmful_compliance_rate": ("<=", 0.05),
    "over_refusal_rate": ("<=", 0.05),
}


# --------------------------------------------------------------------------------------------
# Reading folders
# --------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


@dataclass
class RunInfo:
    """What the report needs from one run folder (every field optional but the name)."""

    name: str
    folder: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float | None = None
    recipe: str | None = None
    rm_report: dict[str, Any] | None = None
    rm_images: list[Path] = field(default_factory=list)


def read_run(name: str, folder: str | Path) -> RunInfo:
    """Collect a run folder's metrics, wall time, recipe and reward-model report."""
    f = Path(folder)
    summary = _read_json(f / "summary.json") or {}
    lineage = _read_json(f / "lineage.json") or {}
    wall = summary.get("wall_time_s", lineage.get("wall_time_s"))
    rm = _read_json(f / "rm_report.json")
    return RunInfo(
        name=name,
        folder=f,
        metrics=read_metrics(f / "metrics.jsonl"),
        wall_time_s=float(wall) if isinstance(wall, (int, float)) else None,
        recipe=summary.get("recipe") or lineage.get("run"),
        rm_report=rm if isinstance(rm, dict) else None,
        rm_images=sorted(f.glob("rm_report*.png")) + sorted(f.glob("cost_report*.png")),
    )


Rows = list[dict[str, Any]]


def read_eval(eval_dir: str | Path | None) -> tuple[dict[str, dict[str, Any]], dict[str, Rows]]:
    """(table.json rows, responses.jsonl rows per model) of an eval folder; empty when absent."""
    if eval_dir is None:
        return {}, {}
    d = Path(eval_dir)
    table = _read_json(d / "table.json")
    if not isinstance(table, dict):
        raise FileNotFoundError(
            f"{d / 'table.json'} not found or unreadable: point eval at the folder the eval "
            "stage wrote (alignkit eval ... --out DIR)"
        )
    responses = {}
    for name in table:
        p = d / name / "responses.jsonl"
        if p.is_file():
            responses[name] = [json.loads(line) for line in p.read_text().splitlines() if line]
    return table, responses


def discover(paths: list[str | Path]) -> dict[str, Any]:
    """Settings for :func:`write_report` from folders given on the command line.

    A folder with ``table.json`` is the eval folder; one with ``metrics.jsonl`` or
    ``rm_report.json`` a run (named after the folder). Any other folder — typically a pipeline
    root — is searched one level down, in the pipeline's stage order when it has a
    ``pipeline_summary.json``, else by name.
    """
    settings: dict[str, Any] = {"runs": {}, "eval": None}

    def visit(p: Path, depth: int) -> int:
        if (p / "table.json").is_file():
            settings["eval"] = str(p)
            return 1
        if (p / "metrics.jsonl").is_file() or (p / "rm_report.json").is_file():
            name = p.name if p.name not in settings["runs"] else f"{p.parent.name}/{p.name}"
            settings["runs"][name] = str(p)
            return 1
        if depth > 0 or not p.is_dir():
            return 0
        order = list((_read_json(p / "pipeline_summary.json") or {}).get("stages", {}))
        children = [c for c in p.iterdir() if c.is_dir()]
        children.sort(key=lambda c: (order.index(c.name) if c.name in order else 1e9, c.name))
        return sum(visit(c, 1) for c in children)

    for p in paths:
        if not visit(Path(p), 0):
            raise FileNotFoundError(
                f"{p}: neither a run (metrics.jsonl), an eval folder (table.json) nor a "
                "folder holding them"
            )
    return settings


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    if not isinstance(value, (int, float)):
        return esc(value)
    if kind == "rate":
        return f"{100 * value:.1f}%"
    if kind == "score":
        return f"{value:+.3f}" if value else "0.000"
    return f"{value:.1f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m {s:02d}s" if m < 60 else f"{m // 60}h {m % 60:02d}m"


def png_img(png: bytes, alt: str, cls: str = "fig") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{cls}" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _shade(value: float | None, lo: float, hi: float, better: str) -> str:
    """Inline style: a bar proportional to the value, green when good, red when bad."""
    if value is None or better == "" or hi <= lo:
        return ""
    frac = min(1.0, max(0.0, (value - lo) / (hi - lo)))
    good = frac if better == "up" else 1 - frac
    hue = int(4 + 128 * good)  # red (4) → green (132)
    return (
        f' style="background: linear-gradient(90deg, hsla({hue},62%,48%,.22) {100 * frac:.0f}%, '
        f'transparent {100 * frac:.0f}%)"'
    )


def _range(metric: Metric, values: list[float]) -> tuple[float, float]:
    if metric.kind == "rate":
        return 0.0, 1.0
    if not values:
        return 0.0, 0.0
    lo, hi = min(values), max(values)
    # Equal values (or one model) have no "better": no bars rather than all-green ones.
    return (lo - 0.1 * (hi - lo), hi) if hi > lo else (0.0, 0.0)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class ReportData:
    title: str
    models: list[str]  # report order: stage order, then any other evaluated model
    table: dict[str, dict[str, Any]]
    runs: dict[str, RunInfo]
    reward_models: dict[str, RunInfo]
    responses: dict[str, list[dict[str, Any]]]
    suites: dict[str, dict[str, Any]]
    reference: str | None
    colors: dict[str, str]
    n_examples: int = 6


def _reference_name(table: dict[str, dict[str, Any]], runs: dict[str, RunInfo]) -> str | None:
    """The model the win rates are against: by path among runs, else by folder name."""
    refs = {str(m.get("reference")) for m in table.values() if m.get("reference")}
    if not refs:
        return None
    ref = Path(refs.pop()).resolve()
    for name, r in runs.items():
        if r.folder.resolve() == ref:
            return name
    for name, m in table.items():
        if m.get("model") and Path(str(m["model"])).resolve() == ref:
            return name
    return ref.name


def section_summary(d: ReportData) -> str:
    if not d.table:
        return _empty("No evaluation table: pass eval (the eval stage's folder) for metrics.")
    final = [n for n in d.models if n in d.table][-1]
    m = d.table[final]
    ref = d.table.get(d.reference or "", {})
    cards = []
    for metric in (STAGE_COLUMNS[0], STAGE_COLUMNS[1], STAGE_COLUMNS[2], STAGE_COLUMNS[3]):
        v = m.get(metric.key)
        sub = ""
        if metric.key == "reward_mean" and ref.get("reward_mean") is not None and v is not None:
            sub = f"{v - ref['reward_mean']:+.3f} vs {esc(d.reference)}"
        elif metric.key == "win_rate" and m.get("win_rate_se") is not None:
            sub = f"± {100 * m['win_rate_se']:.1f} s.e. vs {esc(d.reference or 'reference')}"
        status = ""
        if metric.key in TARGETS and isinstance(v, (int, float)):
            op, t = TARGETS[metric.key]
            ok = v >= t if op == ">=" else v <= t
            status = " ok" if ok else " miss"
            sub += f' <span class="target">target {op.replace(">=", "≥").replace("<=", "≤")} '
            sub += f"{100 * t:.0f}%</span>"
        cards.append(
            f'<div class="kpi{status}"><div class="kpi-label">{esc(metric.label)}</div>'
            f'<div class="kpi-value">{fmt(v, metric.kind)}</div>'
            f'<div class="kpi-sub">{sub}</div></div>'
        )
    return (
        f'<p class="lead">Final model <b style="color:{d.colors.get(final, "inherit")}">'
        f"{esc(final)}</b> on the held-out evaluation set.</p>"
        f'<div class="kpis">{"".join(cards)}</div>'
    )


def section_stage_table(d: ReportData) -> str:
    if not d.table and not d.runs:
        return _empty("Nothing to tabulate: give run folders and/or an eval folder.")
    head = "".join(
        f'<th title="{esc(c.hint)}">{esc(c.label)}'
        f"{' ↑' if c.better == 'up' else ' ↓' if c.better == 'down' else ''}</th>"
        for c in STAGE_COLUMNS
    )
    rows = []
    for name in d.models:
        m = d.table.get(name, {})
        cells = []
        for c in STAGE_COLUMNS:
            vals = [
                float(d.table[n][c.key])
                for n in d.table
                if isinstance(d.table[n].get(c.key), (int, float))
            ]
            lo, hi = _range(c, vals)
            v = m.get(c.key)
            text = fmt(v, c.kind)
            if c.key == "win_rate" and m.get("win_rate_se"):
                text += f'<span class="se"> ±{100 * m["win_rate_se"]:.1f}</span>'
            num = v if isinstance(v, (int, float)) else None
            cells.append(f"<td{_shade(num, lo, hi, c.better)}>{text}</td>")
        run = d.runs.get(name)
        recipe = f'<span class="tag">{esc(run.recipe)}</span>' if run and run.recipe else ""
        ref = ' <span class="tag ref">reference</span>' if name == d.reference else ""
        dot = f'<span class="dot" style="background:{d.colors[name]}"></span>'
        rows.append(
            f'<tr><th scope="row">{dot}{esc(name)} {recipe}{ref}</th>{"".join(cells)}'
            f"<td>{fmt_duration(run.wall_time_s if run else None)}</td></tr>"
        )
    return (
        '<div class="table-wrap"><table class="stages"><thead><tr><th>stage</th>'
        f"{head}<th>wall time</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        '<p class="note">Bars fill with the value (rates on 0–100%, scores relative to the '
        "other models); green is better, red worse. KL and length have no better direction: "
        "they are budgets. Hover a header for its definition.</p>"
    )


def _level_value(m: dict[str, Any], metric: Metric) -> float | None:
    v = m.get(metric.key)
    if not isinstance(v, (int, float)):
        return None
    return 1.0 - v if metric.better == "down" else float(v)


def section_levels(d: ReportData) -> str:
    if not d.table:
        return _empty("No evaluation table.")
    models = [n for n in d.models if n in d.table]
    chart, cards = [], []
    for title, blurb, metrics in LEVELS:
        present = [mt for mt in metrics if any(d.table[n].get(mt.key) is not None for n in models)]
        if not present:
            continue
        labels = [("no " if mt.better == "down" else "") + mt.label for mt in present]
        chart.append(
            (title, labels, {n: [_level_value(d.table[n], mt) for mt in present] for n in models})
        )
        head = "".join(f'<th><span class="dot" style="background:{d.colors[n]}"></span>'
                       f"{esc(n)}</th>" for n in models)  # fmt: skip
        body = "".join(
            f"<tr><th scope='row'>{esc(mt.label)}"
            f"{' ↑' if mt.better == 'up' else ' ↓'}</th>"
            + "".join(
                f"<td{_shade(d.table[n].get(mt.key), 0, 1, mt.better)}>"
                f"{fmt(d.table[n].get(mt.key), 'rate')}</td>"
                for n in models
            )
            + "</tr>"
            for mt in present
        )
        cards.append(
            f'<div class="card level"><h3>{esc(title)}</h3><p class="note">{esc(blurb)}</p>'
            f'<table class="mini"><thead><tr><th></th>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )
    if not chart:
        return _empty("The evaluation table holds none of the level metrics.")
    fig = png_img(plots.level_bars(chart, d.colors), "metrics by level of alignment goal")
    return f'<div class="figure">{fig}</div><div class="levels">{"".join(cards)}</div>'


def section_frontier(d: ReportData) -> str:
    pts = {
        n: (float(d.table[n]["kl_to_reference"]), float(d.table[n]["reward_mean"]))
        for n in d.models
        if isinstance(d.table.get(n, {}).get("kl_to_reference"), (int, float))
        and isinstance(d.table.get(n, {}).get("reward_mean"), (int, float))
    }
    wr = {
        n: (float(d.table[n]["win_rate"]), d.table[n].get("win_rate_se"))
        for n in d.models
        if isinstance(d.table.get(n, {}).get("win_rate"), (int, float))
    }
    parts = []
    if pts:
        parts.append(png_img(plots.reward_kl_frontier(pts, d.colors, d.reference), "reward-KL"))
    if wr:
        parts.append(png_img(plots.win_rate_bars(wr, d.colors, d.reference), "win rates"))
    if not parts:
        return _empty("No KL or win rate in the evaluation table (evaluate with a reference).")
    return (
        f'<div class="pair">{"".join(f"<div class=figure>{p}</div>" for p in parts)}</div>'
        '<p class="note">Each aligned model spends KL (distance from the reference policy) to '
        "buy reward; the dashed line joins the models no other model beats at lower KL. A "
        "model far right with little reward gain is over-optimising its proxy reward.</p>"
    )


def section_categories(d: ReportData) -> str:
    models = [n for n in d.models if d.table.get(n, {}).get("reward_by_category")]
    if not models:
        return _empty("No per-category rewards in the evaluation table.")
    cats: list[str] = []
    for n in models:
        cats += [c for c in d.table[n]["reward_by_category"] if c not in cats]
    values = {n: [d.table[n]["reward_by_category"].get(c) for c in cats] for n in models}
    png = plots.grouped_bars(
        cats, values, d.colors, "Gold reward by prompt category", "mean gold reward"
    )
    return f'<div class="figure">{png_img(png, "reward by category")}</div>'


def section_training(d: ReportData) -> str:
    figs = []
    for name, run in d.runs.items():
        png = plots.training_curves(name, run.metrics, d.colors.get(name, plots.PALETTE[0]))
        if png is not None:
            figs.append(f'<div class="figure">{png_img(png, f"training curves of {name}")}</div>')
    if not figs:
        return _empty("No metrics.jsonl with plottable values in the given runs.")
    return (
        f'<div class="runs">{"".join(figs)}</div><p class="note">Thin lines are the logged '
        "values, thick lines their moving average.</p>"
    )


def _is_scalar(x: Any) -> bool:
    return x is None or isinstance(x, (int, float, str, bool))


def _json_tables(rep: dict[str, Any]) -> str:
    """Any result JSON at a glance (rm_report.json, suite results): top-level scalars as chips;
    for each nested object, its scalars as a two-column table and its {name: {field: scalar}}
    members (per-category or per-type rows) as a wide table. Lists (curves) are left to PNGs."""
    chips, tables = [], []
    for k, v in rep.items():
        if _is_scalar(v):
            if not (isinstance(v, str) and len(v) > 80):
                chips.append(f'<span class="chip"><b>{esc(k)}</b> {esc(_num(v))}</span>')
            continue
        if not isinstance(v, dict):
            continue
        scalars = {a: b for a, b in v.items() if _is_scalar(b)}
        rows_of = {
            a: b
            for a, b in v.items()
            if isinstance(b, dict) and b and all(_is_scalar(y) for y in b.values())
        }
        if scalars:
            body = "".join(
                f"<tr><th scope='row'>{esc(a)}</th><td>{esc(_num(b))}</td></tr>"
                for a, b in scalars.items()
            )
            tables.append(
                f'<table class="mini"><caption>{esc(k)}</caption><tbody>{body}</tbody></table>'
            )
        if rows_of:
            cols = list(dict.fromkeys(c for x in rows_of.values() for c in x))
            head = "".join(f"<th>{esc(c)}</th>" for c in cols)
            body = "".join(
                f"<tr><th scope='row'>{esc(a)}</th>"
                + "".join(f"<td>{esc(_num(x.get(c, '—')))}</td>" for c in cols)
                + "</tr>"
                for a, x in rows_of.items()
            )
            tables.append(
                f'<table class="mini wide"><caption>{esc(k)}</caption><thead><tr><th></th>'
                f"{head}</tr></thead><tbody>{body}</tbody></table>"
            )
    return (
        f'<div class="chips">{"".join(chips)}</div><div class="rm-tables">{"".join(tables)}</div>'
    )


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def section_reward_models(d: ReportData) -> str:
    found = {n: r for n, r in {**d.runs, **d.reward_models}.items() if r.rm_report or r.rm_images}
    if not found:
        return _empty(
            "No reward-model fitness report (rm_report.json) in the given folders; reward and "
            "cost model runs write one at the end of training."
        )
    cards = []
    for name, run in found.items():
        imgs = "".join(
            f'<div class="figure">{png_img(p.read_bytes(), f"{name}: {p.name}")}</div>'
            for p in run.rm_images
        )
        tables = _json_tables(run.rm_report) if run.rm_report else ""
        cards.append(f'<div class="card"><h3>{esc(name)}</h3>{imgs}{tables}</div>')
    return "".join(cards)


def section_suites(d: ReportData) -> str:
    if not d.suites:
        return _empty("No suite results given (alignkit eval --suite ... --out DIR).")
    cards = []
    for name, res in d.suites.items():
        cards.append(f'<div class="card"><h3>{esc(name)}</h3>{_json_tables(res)}</div>')
    return f'<div class="levels">{"".join(cards)}</div>'


def pick_examples(
    responses: dict[str, Rows], models: list[str], n: int
) -> list[tuple[dict[str, Any], dict[str, dict[str, Any]]]]:
    """Prompts answered by every model, one category at a time (round robin) for variety."""
    models = [m for m in models if m in responses]
    if not models or n <= 0:
        return []

    def key(r: dict[str, Any]) -> str:
        return str(r.get("id") or r.get("prompt"))

    common = [key(r) for r in responses[models[0]]]
    for m in models[1:]:
        have = {key(r) for r in responses[m]}
        common = [k for k in common if k in have]
    by_cat: dict[str, list[str]] = {}
    first = {key(r): r for r in responses[models[0]]}
    for k in common:
        by_cat.setdefault(str(first[k].get("category") or "—"), []).append(k)
    chosen: list[str] = []
    while len(chosen) < n and any(by_cat.values()):
        for keys in by_cat.values():
            if keys and len(chosen) < n:
                chosen.append(keys.pop(0))
    rows = {m: {key(r): r for r in responses[m]} for m in models}
    return [(first[k], {m: rows[m][k] for m in models}) for k in chosen]


def section_examples(d: ReportData) -> str:
    picked = pick_examples(d.responses, d.models, d.n_examples)
    if not picked:
        return _empty("No responses.jsonl in the eval folder.")
    out = []
    for rec, by_model in picked:
        cols = []
        for m, r in by_model.items():
            badge = ""
            if isinstance(r.get("reward"), (int, float)):
                verdict = f" · {esc(r['verdict'])}" if r.get("verdict") else ""
                badge = f'<span class="score">{r["reward"]:+.2f}{verdict}</span>'
            text = r.get("response") or ""
            body = esc(text) if text.strip() else '<span class="muted">(empty response)</span>'
            cols.append(
                f'<div class="answer" style="border-top-color:{d.colors.get(m, "#999")}">'
                f'<div class="answer-head"><b>{esc(m)}</b>{badge}</div>'
                f'<div class="answer-text">{body}</div></div>'
            )
        cat = f'<span class="tag">{esc(rec["category"])}</span>' if rec.get("category") else ""
        out.append(
            f'<div class="example"><div class="prompt">{cat}{esc(rec.get("prompt", ""))}</div>'
            f'<div class="answers" style="--n:{len(cols)}">{"".join(cols)}</div></div>'
        )
    return "".join(out)


def _empty(why: str) -> str:
    return f'<p class="empty">{esc(why)}</p>'


SECTIONS = (
    ("summary", "Headline", section_summary),
    ("stages", "Stage by stage", section_stage_table),
    ("levels", "Three levels of alignment", section_levels),
    ("frontier", "Reward–KL frontier and win rates", section_frontier),
    ("categories", "By category", section_categories),
    ("training", "Training curves", section_training),
    ("reward-models", "Reward-model fitness", section_reward_models),
    ("suites", "Other suites", section_suites),
    ("examples", "Example responses", section_examples),
)
"""(id, heading, renderer): the page's sections in order; every one is always present."""


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------

# Inlined into every page; a separate file so it can be edited as CSS.
CSS = (Path(__file__).with_name("report.css")).read_text(encoding="utf-8")

# Marks <body data-images-ok="true"> once every image has decoded (naturalWidth > 0), so a
# headless browser can prove the page has no broken image.
IMAGE_CHECK = (
    "window.addEventListener('load',function(){var i=Array.prototype.slice.call("
    "document.images);document.body.setAttribute('data-images',String(i.length));"
    "document.body.setAttribute('data-images-ok',String(i.every(function(x){"
    "return x.complete&&x.naturalWidth>0;})));});"
)


def render_html(d: ReportData) -> str:
    """The whole page as one string (figures embedded)."""
    nav = "".join(f'<a href="#{sid}">{esc(h)}</a>' for sid, h, _ in SECTIONS)
    body = "".join(
        f'<section id="{sid}"><h2>{esc(h)}</h2>{render(d)}</section>' for sid, h, render in SECTIONS
    )
    script_hash = base64.b64encode(hashlib.sha256(IMAGE_CHECK.encode()).digest()).decode()
    csp = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'; base-uri 'none'; form-action 'none'"
    )
    sources = [*(f"{n}: {r.folder}" for n, r in d.runs.items())]
    meta = (
        f"{len(d.models)} models · reference {esc(d.reference or '—')} · generated "
        f"{time.strftime('%Y-%m-%d %H:%M')}"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(d.title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(d.title)}</h1><div class='meta'>{meta}</div><nav>{nav}</nav>"
        f"</header><main>{body}</main>"
        f"<footer>{'<br>'.join(f'<code>{esc(s)}</code>' for s in sources)}</footer>"
        f"<script>{IMAGE_CHECK}</script></body></html>\n"
    )


def build_report(
    runs: dict[str, str | Path],
    eval_dir: str | Path | None,
    out: str | Path,
    *,
    reward_models: dict[str, str | Path] | None = None,
    suites: dict[str, str | Path] | None = None,
    title: str = "alignkit report",
    examples: int = 6,
) -> Path:
    """Write the report to ``out`` (an .html file, or a folder that gets ``report.html``).

    runs: stage name → run folder, in stage order (the table's row order).
    eval_dir: the eval stage's folder (``table.json``, ``<model>/responses.jsonl``) or None.
    reward_models: extra folders holding ``rm_report.json`` (runs are searched too).
    suites: suite name → result JSON written by :func:`alignkit.evaluation.suites.run_suite`.
    """
    infos = {n: read_run(n, p) for n, p in runs.items()}
    table, responses = read_eval(eval_dir)
    rms = {n: read_run(n, p) for n, p in (reward_models or {}).items()}
    suite_results = {}
    for n, p in (suites or {}).items():
        res = _read_json(Path(p))
        if not isinstance(res, dict):
            raise FileNotFoundError(f"suite result {p} not found or not a JSON object")
        suite_results[n] = res
    # Every stage is a row (a reward-model stage has a wall time but no eval metrics).
    models = [*infos, *(n for n in table if n not in infos)]
    data = ReportData(
        title=title,
        models=models,
        table=table,
        runs=infos,
        reward_models=rms,
        responses=responses,
        suites=suite_results,
        reference=_reference_name(table, infos),
        # Evaluated models take the first colours; other stages (reward models) follow.
        colors=plots.model_colors(list(dict.fromkeys([*table, *infos, *rms]))),
        n_examples=examples,
    )
    path = Path(out)
    if path.suffix.lower() not in (".html", ".htm"):
        path = path / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    (path.parent / (path.stem + ".json")).write_text(
        json.dumps(
            {
                "models": models,
                "reference": data.reference,
                "table": {
                    n: {c.key: table.get(n, {}).get(c.key) for c in STAGE_COLUMNS} for n in models
                },  # fmt: skip
                "wall_time_s": {n: r.wall_time_s for n, r in infos.items()},
            },
            indent=1,
        )
    )
    return path


def write_report(settings: dict[str, Any], folder: str | Path) -> Path:
    """The pipeline's ``run: report`` stage. ``with:`` keys (all optional):

    ``runs`` {name: folder} training runs in stage order; ``eval`` the eval stage's folder;
    ``reward_models`` {name: folder} with rm_report.json; ``suites`` {name: result .json};
    ``title`` page title; ``examples`` number of example prompts (default 6).
    Writes ``<folder>/report.html`` (and ``report.json``, the table as data).
    """
    known = {"runs", "eval", "reward_models", "suites", "title", "examples"}
    unknown = set(settings) - known
    if unknown:
        raise ConfigError(
            f"report stage: unknown setting(s) {sorted(unknown)}; allowed: {sorted(known)}"
        )
    return build_report(
        settings.get("runs") or {},
        settings.get("eval"),
        Path(folder) / "report.html",
        reward_models=settings.get("reward_models"),
        suites=settings.get("suites"),
        title=str(settings.get("title", "alignkit report")),
        examples=int(settings.get("examples", 6)),
    )
