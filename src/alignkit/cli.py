"""Command line: ``alignkit <command> --config run.yaml key.sub=value ...``.

Thin by design: parse, validate the config, call a recipe. Every training command's ``--help``
is generated from its pydantic config model, so the CLI documents every field with its type,
default and description without a second copy that could drift.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from alignkit.config import ConfigError, describe_fields, load_config

app = typer.Typer(
    name="alignkit",
    help="Align pretrained language models with human intentions and values.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError,)


def _user_errors() -> tuple[type[Exception], ...]:
    from alignkit.data.readers import DataError
    from alignkit.models.load import ModelError
    from alignkit.sandbox.presets import SandboxError

    return (ConfigError, DataError, ModelError, SandboxError, FileNotFoundError)


def run_guarded(fn: Callable[[], Any]) -> Any:
    """Run a command; user mistakes become one red message and exit code 2, not a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return fn()
    except _user_errors() as e:
        # The message itself may contain brackets (paths, lists): print it without markup, and
        # unwrapped (soft_wrap), so a long path stays one piece that can be copied.
        console.print("[bold red]error:[/]", end=" ")
        console.print(str(e), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(2) from None


def print_config_help(
    command: str, model: type[BaseModel], summary: str, flags: dict[str, str] | None = None
) -> None:
    out = Console()
    from rich.markup import escape

    short = "".join(f" [--{f} X]" for f in flags or {})
    usage = escape(f"alignkit {command}{short} [--config RUN.yaml] [key.sub=value ...]")
    out.print(f"[bold]Usage:[/] {usage}\n")
    out.print(summary + "\n")
    for f, key in (flags or {}).items():
        out.print(f"  --{f} X".ljust(18) + f"short for {key}=X", markup=False)
    if flags:
        out.print()
    out.print(
        "Every field below can be set in the YAML file or overridden on the command line, "
        "e.g. [cyan]train.lr=1e-4 model.lora.enabled=true[/].\n"
    )
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("key", style="cyan", no_wrap=True)
    table.add_column("type")
    table.add_column("default")
    table.add_column("description")
    for key, typ, default, desc in describe_fields(model):
        table.add_row(key, typ, default, desc)
    out.print(table)


def _split_args(
    args: list[str], flags: dict[str, str] | None = None
) -> tuple[Path | None, list[str], bool]:
    config: Path | None = None
    overrides: list[str] = []
    want_help = False
    flags = flags or {}
    it = iter(args)
    for a in it:
        name, eq, value = a[2:].partition("=")
        if a.startswith("--") and name in flags:
            # a recipe's short option (--model X, --n=8): an alias of one config key
            if not eq:
                nxt = next(it, None)
                if nxt is None:
                    raise ConfigError(f"--{name} needs a value (it sets {flags[name]})")
                value = nxt
            overrides.append(f"{flags[name]}={value}")
        elif a in ("--help", "-h"):
            want_help = True
        elif a in ("--config", "-c"):
            nxt = next(it, None)
            if nxt is None:
                raise ConfigError("--config needs a path to a YAML file")
            config = Path(nxt)
        elif a.startswith("--config="):
            config = Path(a.split("=", 1)[1])
        elif a.endswith((".yaml", ".yml")) and "=" not in a and config is None:
            config = Path(a)
        else:
            overrides.append(a)
    return config, overrides, want_help


def training_command(
    name: str,
    model: type[BaseModel],
    runner: Callable[[Any], Any],
    summary: str,
    flags: dict[str, str] | None = None,
) -> None:
    @app.command(
        name,
        help=summary + " Run `alignkit " + name + " --help` for every config field.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def _cmd(ctx: typer.Context) -> None:
        config, overrides, want_help = _split_args(list(ctx.args), flags)
        if want_help:
            print_config_help(name, model, summary, flags)
            return

        def go() -> Any:
            from alignkit.engine.distributed import shutdown

            cfg = load_config(model, config, overrides)
            out = runner(cfg)
            shutdown()
            return out

        run_guarded(go)


def _register_recipes() -> None:
    from alignkit.configs import all_recipes

    for spec in all_recipes().values():
        training_command(spec.name, spec.config, spec.run, spec.summary, spec.flags)


_register_recipes()


@app.command("check-data")
def check_data(
    model: str = typer.Option(..., "--model", "-m", help="Model or tokenizer folder."),
    data: str = typer.Option(..., "--data", "-d", help="Demonstrations file or dataset folder."),
    max_length: int = typer.Option(1024, help="Maximum tokens per example."),
    chat_template: str = typer.Option("auto", help="auto | none | default | Jinja | .jinja path."),
    split: str = typer.Option(None, help="Split of a DatasetDict folder."),
    show: int = typer.Option(1, help="Examples to render with the loss mask highlighted."),
) -> None:
    """Lint a dataset against a model's tokenizer and chat template before training."""

    def go() -> None:
        from alignkit.data.check import check_dataset, print_report

        report = check_dataset(model, data, max_length, chat_template, split, show)
        print_report(report, Console())
        if report["errors"]:
            raise typer.Exit(1)

    run_guarded(go)


sandbox_app = typer.Typer(
    help="The simulated alignment world (the embedded default).", no_args_is_help=True
)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("build")
def sandbox_build(
    out: Path = typer.Option(Path("runs/sandbox/world"), "--out", help="World folder to write."),
    preset: str = typer.Option("tiny", help="micro (tests) | tiny (default) | small."),
    seed: int = typer.Option(0, help="Seed: the same seed gives byte-identical files."),
) -> None:
    """Write the knowledge base, corpus, tokenizer and every dataset of the sandbox world."""

    def go() -> None:
        import json

        from alignkit.sandbox.build import build_world

        summary = build_world(out, preset, seed)
        Console().print_json(json.dumps({k: v for k, v in summary.items() if k != "out_dir"}))
        Console().print(f"[green]world written to {out}[/]")

    run_guarded(go)


@app.command("eval")
def eval_command(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder to evaluate."),
    suite: str = typer.Option(
        "sandbox", help="sandbox | xstest | refusal | truthfulqa | bbq | mc | winrate."
    ),
    world: Path = typer.Option(Path("runs/sandbox/world"), help="Sandbox world folder."),
    data: Path = typer.Option(None, help="Data file of a non-sandbox suite."),
    reference: Path = typer.Option(None, help="Reference model (win rate, KL)."),
    judge: Path = typer.Option(None, help="Reward-model folder judging the winrate suite."),
    out: Path = typer.Option(None, help="Write metrics and per-prompt rows here."),
    limit: int = typer.Option(None, help="Evaluate on the first N prompts only."),
    max_new_tokens: int = typer.Option(64, help="Maximum tokens per response."),
    batch_size: int = typer.Option(16, help="Prompts per batch (non-sandbox suites)."),
    chat_template: str = typer.Option("auto", help="Chat template policy (non-sandbox suites)."),
    rag: Path = typer.Option(
        None, "--rag", help="Sandbox: answer with retrieval from this knowledge base (JSONL)."
    ),
    rag_k: int = typer.Option(3, "--rag-k", help="Passages per prompt with --rag."),
    safety_model: str = typer.Option(
        None, "--safety-model", help="Sandbox: decode through the CBF filter with this h."
    ),
    alpha: float = typer.Option(0.3, "--alpha", help="CBF rate α with --safety-model."),
    cot: bool = typer.Option(False, "--cot", help="Sandbox: prompt to reason step by step."),
) -> None:
    """Score a model on an evaluation suite and print the metrics."""

    def go() -> None:
        aids = rag is not None or safety_model is not None or cot
        if aids and suite != "sandbox":
            raise ConfigError("--rag, --safety-model and --cot evaluate on --suite sandbox only")
        if suite == "sandbox":
            from alignkit.evaluation.sandbox_eval import evaluate_model

            decoding = None
            if aids:
                from pydantic import ValidationError

                from alignkit.decoding.pipeline import DecodingConfig

                try:
                    decoding = DecodingConfig.model_validate(
                        {
                            "model": str(model),
                            "safety_model": safety_model,
                            "cbf": {"alpha": alpha},
                            "rag": str(rag) if rag else None,
                            "retrieval": {"k": rag_k},
                            "cot": cot,
                        }
                    )
                except ValidationError as e:
                    flags = {"cbf": "--alpha", "retrieval": "--rag-k"}
                    raise ConfigError(
                        "; ".join(
                            f"{flags.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}"
                            for err in e.errors()
                        )
                    ) from None
            metrics = evaluate_model(
                model, world, reference, out, limit, max_new_tokens, decoding=decoding
            )
        else:
            from alignkit.evaluation.suites import SUITES, run_suite

            if suite not in SUITES:
                raise ConfigError(f"--suite {suite!r}: one of sandbox, {', '.join(sorted(SUITES))}")
            if data is None:
                raise ConfigError(f"--suite {suite} needs --data (the prompt or question file)")
            try:
                metrics = run_suite(
                    suite,
                    model,
                    data,
                    out,
                    reference=reference,
                    judge=str(judge) if judge else None,
                    limit=limit,
                    batch_size=batch_size,
                    max_new_tokens=max_new_tokens,
                    chat_template=chat_template,
                )
            except ValueError as e:
                raise ConfigError(str(e)) from None
        print_metrics(metrics)

    run_guarded(go)


@app.command("report")
def report_command(
    paths: list[Path] = typer.Argument(..., help="Run folders, or a pipeline root."),
    eval_dir: Path = typer.Option(None, "--eval", help="Eval stage folder (table.json)."),
    out: Path = typer.Option(Path("report.html"), help="HTML file (or folder) to write."),
    title: str = typer.Option("alignkit report", help="Page title."),
    examples: int = typer.Option(6, help="Example prompts shown side by side."),
) -> None:
    """Write one self-contained HTML page with plots for one or more runs."""

    def go() -> None:
        from alignkit.evaluation.report import build_report, discover

        found = discover(paths)
        page = build_report(
            found["runs"], eval_dir or found.get("eval"), out, title=title, examples=examples
        )
        Console().print(f"[green]report written to {page}[/]")

    run_guarded(go)


@app.command(
    "pipeline",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def pipeline_command(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="Pipeline YAML (e.g. recipes/quickstart.yaml)."),
    force: str = typer.Option("", help="Comma-separated stages to rerun even if up to date."),
    only: str = typer.Option("", help="Comma-separated stages to run (others are left alone)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and exit."),
) -> None:
    """Run a multi-stage pipeline; stages whose config and inputs are unchanged are skipped.

    Extra key=value arguments override the pipeline file, e.g. root=runs/other or
    stages.1.with.train.max_steps=10.
    """

    def go() -> None:
        from alignkit.pipeline import Pipeline, load_pipeline

        pipe = Pipeline(load_pipeline(file, list(ctx.args)), base_dir=file.resolve().parent)
        if dry_run:
            for st, _settings, h, fresh in pipe.plan():
                state = "up to date" if fresh else "will run"
                Console().print(f"{st.name:12s} {st.run:10s} {h}  {state}")
            return
        split = lambda s: {x for x in s.split(",") if x}  # noqa: E731
        pipe.run(force=split(force), only=split(only) or None)

    run_guarded(go)


def print_metrics(metrics: dict[str, Any]) -> None:
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("metric", style="cyan")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                table.add_row(f"{k}.{kk}", f"{vv:.4g}" if isinstance(vv, float) else str(vv))
        elif isinstance(v, float):
            table.add_row(k, f"{v:.4g}")
        elif v is not None:
            table.add_row(k, str(v))
    Console().print(table)


def _mount_groups() -> None:
    """Sub-command groups that live in their own packages."""
    from alignkit.feedback.cli import app as feedback_app

    app.add_typer(feedback_app, name="feedback", help="Collect human rankings in a web app.")


_mount_groups()


def _mount_model_tools() -> None:
    """Commands that live beside their code: ``rm-report``/``score`` (reward models),
    ``generate``/``serve`` (decoding-time alignment), ``plan`` (memory planner)."""
    from alignkit.decoding.cli import register as register_decoding
    from alignkit.evaluation.rm_cli import register as register_rm
    from alignkit.planner_cli import register as register_planner

    register_rm(app)
    register_decoding(app)
    register_planner(app)


_mount_model_tools()


def main() -> None:
    app(prog_name="alignkit")


if __name__ == "__main__":
    sys.exit(main())
