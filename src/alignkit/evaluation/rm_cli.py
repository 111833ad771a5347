"""``alignkit rm-report`` and ``alignkit score``: inspect and use any saved reward/cost model.

Kept apart from the training commands because they take a model and a data file rather than
a run config. Heavy imports (torch, transformers) happen inside the commands so that
``alignkit --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def rm_report_command(
    model: str = typer.Option(..., "--model", "-m", help="Saved reward/cost model folder."),
    data: str = typer.Option(..., "--data", "-d", help="Pairwise or ranking file (held out!)."),
    out: str = typer.Option(None, "--out", "-o", help="Report folder (default: the model folder)."),
    fmt: str = typer.Option("auto", "--format", help="auto | pairwise | ranking."),
    kind: str = typer.Option(None, help="reward | cost (default: saved with the model)."),
    category_field: str = typer.Option("category", help="Record field for per-category accuracy."),
    bins: int = typer.Option(10, help="Calibration bins."),
    batch_size: int = typer.Option(32, help="Scoring batch size."),
    limit: int = typer.Option(None, help="Use only the first N records."),
    split: str = typer.Option(None, help="Split of a DatasetDict folder."),
    plot: bool = typer.Option(True, help="Write rm_report.png."),
    gold_field: str = typer.Option(
        None, help="Per-response reference scores field (e.g. gold_rewards) to compare with."
    ),
) -> None:
    """Fitness report of a reward or cost model on a preference set (JSON + table + PNG)."""
    from alignkit.cli import run_guarded

    def go() -> None:
        from alignkit.evaluation.rm_report import rm_report

        if fmt not in ("auto", "pairwise", "ranking"):
            raise typer.BadParameter(f"--format must be auto, pairwise or ranking, not {fmt!r}")
        if kind not in (None, "reward", "cost"):
            raise typer.BadParameter(f"--kind must be reward or cost, not {kind!r}")
        rm_report(
            model,
            data,
            out,
            fmt,  # type: ignore[arg-type]
            kind,  # type: ignore[arg-type]
            category_field,
            bins,
            batch_size,
            limit,
            split,
            plot,
            gold_field=gold_field,
        )

    run_guarded(go)


def _items(rows: list[dict[str, Any]], source: str) -> list[tuple[Any, list[Any]]]:
    """(prompt, responses) per row: ``response``/``completion`` (one) or ``responses`` (K)."""
    from alignkit.data.readers import DataError

    items = []
    for i, row in enumerate(rows, start=1):
        if "prompt" not in row:
            raise DataError(f"{source}: row {i}: field 'prompt' missing")
        if "responses" in row and isinstance(row["responses"], list):
            items.append((row["prompt"], list(row["responses"])))
            continue
        for key in ("response", "completion", "chosen"):
            if key in row:
                items.append((row["prompt"], [row[key]]))
                break
        else:
            raise DataError(
                f"{source}: row {i}: needs 'response', 'completion' or 'responses' beside 'prompt'"
            )
    return items


def score_command(
    model: list[str] = typer.Option(
        ..., "--model", "-m", help="Model folder; repeat for an ensemble."
    ),
    data: str = typer.Option(None, "--data", "-d", help="Rows with prompt + response(s)."),
    prompt: str = typer.Option(None, "--prompt", "-p", help="Score one prompt ..."),
    response: list[str] = typer.Option(None, "--response", "-r", help="... with these responses."),
    out: str = typer.Option(None, "--out", "-o", help="Write rows with 'score(s)' added (JSONL)."),
    ensemble: str = typer.Option("mean", help="mean | min | mean_minus_std (several models)."),
    std_coef: float = typer.Option(1.0, help="k in mean − k·std."),
    batch_size: int = typer.Option(16, help="Scoring batch size."),
) -> None:
    """Score (prompt, response) pairs with a reward/cost model or an ensemble of them."""
    from alignkit.cli import run_guarded

    def go() -> None:
        from alignkit.data.readers import read_jsonl_dicts, write_jsonl
        from alignkit.models.scorer import RewardEnsemble, RewardScorer, Scorer

        if (data is None) == (prompt is None):
            raise typer.BadParameter("give either --data FILE or --prompt TEXT --response TEXT")
        if ensemble not in ("mean", "min", "mean_minus_std"):
            raise typer.BadParameter(
                f"--ensemble must be mean, min or mean_minus_std, not {ensemble!r}"
            )
        scorer: Scorer
        if len(model) == 1:
            scorer = RewardScorer.from_pretrained(model[0], batch_size=batch_size)
        else:
            scorer = RewardEnsemble.from_pretrained(
                model,
                ensemble,  # type: ignore[arg-type]
                std_coef,
                batch_size=batch_size,
            )
        if prompt is not None:
            if not response:
                raise typer.BadParameter("--prompt needs at least one --response")
            for r, s in zip(
                response, scorer.score([prompt] * len(response), response), strict=True
            ):
                typer.echo(json.dumps({"response": r, "score": round(s, 6)}))
            return
        rows = read_jsonl_dicts(data)
        items = _items(rows, data)
        flat_p = [p for p, rs in items for _ in rs]
        flat_r = [r for _, rs in items for r in rs]
        flat = iter(scorer.score(flat_p, flat_r))
        for row, (_, rs) in zip(rows, items, strict=True):
            scores = [next(flat) for _ in rs]
            if "responses" in row:
                row["scores"] = scores
            else:
                row["score"] = scores[0]
        all_scores = [s for row in rows for s in row.get("scores", [row.get("score")])]
        mean = sum(all_scores) / len(all_scores)
        typer.echo(f"scored {len(all_scores)} responses of {len(rows)} rows; mean {mean:.4f}")
        if out:
            write_jsonl(Path(out), rows)
            typer.echo(f"wrote {out}")

    run_guarded(go)


def register(app: typer.Typer) -> None:
    app.command("rm-report")(rm_report_command)
    app.command("score")(score_command)
    app.command("overopt")(overopt_command)


def overopt_command(
    run: str = typer.Argument(..., help="RL run folder (or its metrics.jsonl) with gold_reward."),
    out: str = typer.Option(
        None, "--out", "-o", help="Folder for overopt.json/.png (default: the run)."
    ),
    window: int = typer.Option(10, help="Iterations averaged per point."),
    plot: bool = typer.Option(True, help="Write overopt.png."),
) -> None:
    """Reward over-optimisation study: proxy and gold reward against √KL (JSON + PNG)."""
    from alignkit.cli import run_guarded

    def go() -> None:
        from rich.console import Console
        from rich.table import Table

        from alignkit.evaluation.overopt import overopt_report

        if window < 1:
            raise typer.BadParameter(f"--window must be >= 1, got {window}")
        c = overopt_report(run, out, window, plot)
        table = Table("iterations", "√KL", "proxy", "gold", title=f"over-optimisation: {run}")
        for p in c["points"]:
            it = f"{p['iterations'][0]}-{p['iterations'][1]}"
            mark = " ← gold peak" if p is c["points"][c["gold_peak"]["index"]] else ""
            table.add_row(it, f"{p['sqrt_kl']:.3f}", f"{p['proxy']:.3f}", f"{p['gold']:.3f}{mark}")
        console = Console()
        console.print(table)
        verdict = (
            "[red]over-optimised[/]: the proxy rose by {:.3f} after the gold peak while gold fell by {:.3f}"
            if c["over_optimised"]
            else "[green]no over-optimisation detected[/] (proxy after gold peak {:+.3f}, gold drop {:.3f})"
        )
        console.print(verdict.format(c["proxy_gain_after_gold_peak"], c["gold_drop_after_peak"]))

    run_guarded(go)
