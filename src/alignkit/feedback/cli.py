"""``alignkit feedback ...``: import candidates, manage annotators, serve the app, export datasets.

The main CLI mounts ``app`` as a sub-command group; ``python -m alignkit.feedback.cli`` runs it
on its own. Commands stay thin: parse, call the store, print a short summary. User mistakes
(a bad file, a bad URL, a taken name) print one clear message and exit with status 2 instead
of a traceback.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from alignkit.feedback.database import DatabaseConfigError, redact
from alignkit.feedback.export import ExportFormat, export
from alignkit.feedback.importer import FeedbackDataError, read_candidates
from alignkit.feedback.migrations import SchemaTooNewError
from alignkit.feedback.store import AnnotatorExistsError, FeedbackStore, NotFoundError, Stats

app = typer.Typer(
    help="Collect human rankings of model responses and export them as training datasets.",
    no_args_is_help=True,
    add_completion=False,
)

Db = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="ALIGNKIT_FEEDBACK_DB",
        help="SQLite file path, or a postgresql://user:pass@host/db URL.",
    ),
]
DEFAULT_DB = "feedback.db"

_USER_ERRORS = (
    FeedbackDataError,
    DatabaseConfigError,
    SchemaTooNewError,
    AnnotatorExistsError,
    NotFoundError,
    ValueError,
)


def _open(db: str, **kwargs: object) -> FeedbackStore:
    try:
        return FeedbackStore(db, **kwargs)  # type: ignore[arg-type]
    except _USER_ERRORS as exc:
        _fail(exc)


def _fail(exc: BaseException) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


@app.command("import")
def import_(
    responses: Annotated[
        Path,
        typer.Option(
            "--responses",
            exists=True,
            dir_okay=False,
            readable=True,
            help="JSONL: {prompt, responses: [...]} rows, or {prompt, response} rows grouped by prompt.",
        ),
    ],
    db: Db = DEFAULT_DB,
    skip_identical: Annotated[
        bool,
        typer.Option(
            "--skip-identical",
            help="Leave out prompts whose responses are all the same text (a peaked model "
            "sampled K times) instead of failing; they are listed.",
        ),
    ] = False,
) -> None:
    """Add items to rank; the whole file is checked first and re-imported items are skipped."""
    try:
        result = read_candidates(responses, skip_identical=skip_identical)
    except FeedbackDataError as exc:
        _fail(exc)
    store = _open(db)
    try:
        summary = store.add_items(result.items)
    finally:
        store.close()
    typer.echo(
        f"{summary.added} item(s) added, {summary.already_present} already present "
        f"({result.rows} rows read, {result.duplicates_removed} duplicate response(s) merged) "
        f"into {redact(store.db.url)}"
    )
    if n := len(result.skipped_identical):
        more = f" and {n - 5} more" if n > 5 else ""
        typer.echo(
            f"{n} prompt(s) left out, all their responses identical: "
            f"{', '.join(result.skipped_identical[:5])}{more}"
        )


@app.command("add-annotator")
def add_annotator(
    name: Annotated[str, typer.Argument(help="A unique name, shown in exports and stats.")],
    admin: Annotated[bool, typer.Option("--admin", help="May open the admin page.")] = False,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Issue a new token for an existing name.")
    ] = False,
    db: Db = DEFAULT_DB,
) -> None:
    """Create an annotator and print their sign-in token (shown once; only its hash is kept)."""
    store = _open(db)
    try:
        token = store.add_annotator(name, is_admin=admin, rotate=rotate)
    except _USER_ERRORS as exc:
        _fail(exc)
    finally:
        store.close()
    typer.echo(token)
    typer.echo(
        f"token for {name!r}{' (admin)' if admin else ''}: give it to them privately; "
        "they paste it on the sign-in page, or open <app-url>/#token=<token>",
        err=True,
    )


@app.command("revoke-annotator")
def revoke_annotator(name: str, db: Db = DEFAULT_DB) -> None:
    """Disable an annotator's token at once; their submitted rankings are kept."""
    store = _open(db)
    try:
        store.revoke_annotator(name)
    except _USER_ERRORS as exc:
        _fail(exc)
    finally:
        store.close()
    typer.echo(f"revoked {name!r}")


@app.command()
def serve(
    db: Db = DEFAULT_DB,
    host: Annotated[
        str, typer.Option(help="Interface to listen on; 127.0.0.1 keeps it on this machine.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    per_item: Annotated[
        int, typer.Option("--per-item", min=1, help="Distinct annotators who rank each item.")
    ] = 1,
    lease_minutes: Annotated[
        float,
        typer.Option(help="Minutes an unfinished assignment holds its slot before reassignment."),
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the web app (annotators at /, admins at /admin) until interrupted."""
    import uvicorn

    from alignkit.feedback.app import create_app

    store = _open(db, per_item=per_item, lease=timedelta(minutes=lease_minutes))
    web = create_app(db, store=store)
    typer.echo(
        f"serving {redact(store.db.url)} at http://{host}:{port}/ (admin: /admin), "
        f"{per_item} annotator(s) per item",
        err=True,
    )
    try:
        uvicorn.run(web, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    finally:
        store.close()


@app.command("export")
def export_(
    format: Annotated[ExportFormat, typer.Option("--format", help="Dataset shape.")],
    out: Annotated[str, typer.Option("--out", help="Output JSONL file, or - for stdout.")],
    db: Db = DEFAULT_DB,
) -> None:
    """Write submitted rankings as a ranking, pairwise or safety dataset (JSONL)."""
    store = _open(db)
    try:
        summary = export(store, format, out)
    finally:
        store.close()
    note = (
        f", {summary.skipped_unlabelled} ranking(s) without safety labels left out"
        if format is ExportFormat.safety
        else ""
    )
    typer.echo(
        f"wrote {summary.rows} {format.value} row(s) from {summary.rankings} ranking(s){note}",
        err=True,
    )


def format_stats(stats: Stats) -> str:
    """Plain-text report of ``Stats`` (the same numbers as the admin page)."""
    a = stats.agreement

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = [
        f"items: {stats.items}  complete (>= {stats.per_item} ranking(s)): {stats.items_complete}",
        f"rankings: {stats.rankings}  skipped: {stats.skipped}  open assignments: {stats.open}",
        "items by number of rankings: "
        + ", ".join(f"{k}: {v}" for k, v in stats.items_by_rankings.items()),
        f"agreement over {a.items_compared} item(s), {a.comparisons} annotator pair(s): "
        f"pairwise {pct(a.pairwise_agreement)}, top-1 {pct(a.top1_agreement)}, "
        f"safety {pct(a.safety_agreement)}, Kendall tau "
        + ("-" if a.kendall_tau is None else f"{a.kendall_tau:.3f}"),
        "",
        f"{'annotator':<24}{'ranked':>8}{'skipped':>9}{'open':>6}{'median s':>10}{'agreement':>11}",
    ]
    for s in stats.annotators:
        med = "-" if s.median_seconds is None else f"{s.median_seconds:.1f}"
        flags = (" (admin)" if s.is_admin else "") + ("" if s.active else " (revoked)")
        lines.append(
            f"{(s.name + flags)[:24]:<24}{s.submitted:>8}{s.skipped:>9}{s.open:>6}{med:>10}"
            f"{pct(s.agreement):>11}"
        )
    return "\n".join(lines)


@app.command()
def stats(
    db: Db = DEFAULT_DB,
    per_item: Annotated[
        int, typer.Option("--per-item", min=1, help="Rankings an item needs to count complete.")
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Counts, per-annotator progress and inter-annotator agreement."""
    store = _open(db, per_item=per_item)
    try:
        result = store.stats()
    finally:
        store.close()
    typer.echo(json.dumps(asdict(result), indent=2) if as_json else format_stats(result))


if __name__ == "__main__":
    app()
