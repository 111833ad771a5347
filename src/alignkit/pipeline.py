"""Multi-stage pipelines: ``alignkit pipeline recipes/quickstart.yaml``.

A pipeline is a list of named stages. Each stage runs one command (a registered recipe such as
``sft`` or ``reward``, or a built-in step: ``sandbox``, ``eval``, ``report``) with a config
file plus overrides, and writes into ``<root>/<stage name>``. ``${name}`` in a value refers
to an earlier stage's output folder, which also makes it an input of this stage.

Lineage: every finished stage folder holds ``lineage.json`` with the hash of its resolved
config and of its inputs' lineage. A stage whose folder is complete and whose hash is
unchanged is skipped, so rerunning after a change reruns only what the change affects.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from alignkit.config import ConfigError, Section, load_config, parse_override, set_dotted

REF = re.compile(r"\$\{([A-Za-z0-9_\-]+)\}")
LINEAGE = "lineage.json"


class StageSpec(Section):
    name: str = Field(..., description="Stage name; also its output folder under root.")
    run: str = Field(
        ..., description="Command: a recipe (sft, reward, dpo ...) or sandbox/eval/report."
    )
    config: str | None = Field(None, description="YAML config file of the command (optional).")
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with", description="Dotted overrides; ${stage} = its folder."
    )
    enabled: bool = Field(True, description="Set false to skip this stage entirely.")


class PipelineConfig(Section):
    root: str = Field("runs/pipeline", description="Folder holding one sub-folder per stage.")
    stages: list[StageSpec] = Field(default_factory=list, description="Stages, in order.")


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pipeline file {p} not found")
    try:
        tree = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{p}: the top level must be a mapping")
    if tree.pop("recipe", "pipeline") != "pipeline":
        raise ConfigError(f"{p} is not a pipeline file (recipe: pipeline)")
    for item in overrides or []:
        keys, value = parse_override(item)
        set_dotted(tree, keys, value)
    cfg = PipelineConfig.model_validate(tree)
    names = [s.name for s in cfg.stages]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{p}: duplicate stage names {sorted(dup)}")
    return cfg


def _resolve(value: Any, outputs: dict[str, Path], stage: str, deps: set[str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            ref = m.group(1)
            if ref not in outputs:
                raise ConfigError(
                    f"stage {stage!r}: ${{{ref}}} does not name an earlier enabled stage "
                    f"(known: {', '.join(outputs) or 'none'})"
                )
            deps.add(ref)
            return str(outputs[ref])

        return REF.sub(sub, value)
    if isinstance(value, list):
        return [_resolve(v, outputs, stage, deps) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, outputs, stage, deps) for k, v in value.items()}
    return value


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_lineage(folder: Path) -> dict[str, Any] | None:
    f = folder / LINEAGE
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError:
        return None


class Pipeline:
    def __init__(self, cfg: PipelineConfig, base_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.root = Path(cfg.root)
        self.base_dir = base_dir or Path.cwd()
        self.outputs: dict[str, Path] = {}
        self.hashes: dict[str, str] = {}
        self.timings: dict[str, float] = {}

    def config_path(self, st: StageSpec) -> Path:
        """A stage's config file: relative to the working directory, else to the pipeline
        file's folder or its parent (so a pipeline runs from anywhere in a checkout)."""
        assert st.config is not None
        for base in (Path.cwd(), self.base_dir, self.base_dir.parent):
            cp = base / st.config
            if cp.is_file():
                return cp
        raise ConfigError(f"stage {st.name!r}: config file {st.config} not found")

    def plan(self) -> list[tuple[StageSpec, dict[str, Any], str, bool]]:
        """(stage, resolved settings, lineage hash, up to date?) for every enabled stage."""
        out = []
        for st in self.cfg.stages:
            if not st.enabled:
                continue
            deps: set[str] = set()
            settings = _resolve(dict(st.with_), self.outputs, st.name, deps)
            config_text = ""
            if st.config:
                cp = self.config_path(st)
                config_text = cp.read_text()
            h = _hash(
                {
                    "run": st.run,
                    "config": config_text,
                    "with": settings,
                    "inputs": {d: self.hashes[d] for d in sorted(deps)},
                }
            )
            folder = self.root / st.name
            lineage = read_lineage(folder)
            fresh = lineage is not None and lineage.get("hash") == h and lineage.get("complete")
            self.outputs[st.name] = folder
            self.hashes[st.name] = h
            out.append((st, settings, h, bool(fresh)))
        return out

    def run(
        self,
        force: set[str] | None = None,
        only: set[str] | None = None,
        log: Callable[[str], None] = print,
    ) -> dict[str, Any]:
        force = force or set()
        plan = self.plan()
        known = {st.name for st, *_ in plan}
        for n in (force | (only or set())) - known:
            raise ConfigError(f"no enabled stage named {n!r}; stages: {', '.join(sorted(known))}")
        rerun_downstream: set[str] = set()
        summary: dict[str, Any] = {"root": str(self.root), "stages": {}}
        for st, settings, h, fresh in plan:
            folder = self.outputs[st.name]
            if only and st.name not in only:
                log(f"[pipeline] {st.name}: not selected")
                continue
            if fresh and st.name not in force and st.name not in rerun_downstream:
                log(f"[pipeline] {st.name}: up to date ({folder}), skipped")
                summary["stages"][st.name] = {"status": "skipped", "folder": str(folder)}
                continue
            log(f"[pipeline] {st.name}: running `{st.run}` -> {folder}")
            t0 = time.perf_counter()
            # A stage that reruns must rerun everything that reads its output, even when
            # their own settings did not change (e.g. a forced rerun with a new seed).
            for later, *_ in plan:
                if st.name in _refs(later):
                    rerun_downstream.add(later.name)
            self._invalidate(folder)
            result = run_stage(st, settings, folder, self.config_path(st) if st.config else None)
            seconds = time.perf_counter() - t0
            self.timings[st.name] = seconds
            folder.mkdir(parents=True, exist_ok=True)
            (folder / LINEAGE).write_text(
                json.dumps(
                    {
                        "hash": h,
                        "complete": True,
                        "run": st.run,
                        "config": st.config,
                        "with": settings,
                        "inputs": {k: str(v) for k, v in self.outputs.items() if k in _refs(st)},
                        "wall_time_s": round(seconds, 2),
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    },
                    indent=1,
                )
            )
            summary["stages"][st.name] = {
                "status": "ran",
                "folder": str(folder),
                "wall_time_s": round(seconds, 2),
                "result": result if isinstance(result, dict) else str(result),
            }
            log(f"[pipeline] {st.name}: done in {seconds:.1f}s")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "pipeline_summary.json").write_text(json.dumps(summary, indent=1, default=str))
        return summary

    @staticmethod
    def _invalidate(folder: Path) -> None:
        """Mark a stage incomplete before rerunning it; a crash leaves it incomplete."""
        f = folder / LINEAGE
        if f.exists():
            data = read_lineage(folder) or {}
            data["complete"] = False
            f.write_text(json.dumps(data))


def _refs(st: StageSpec) -> set[str]:
    return set(REF.findall(json.dumps(st.with_)))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} and {"train.lr": 1} mean the same override: set leaves, never
    replace a whole config section (a command-line override like
    ``stages.2.with.train.max_steps=5`` arrives nested)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def run_stage(
    st: StageSpec, settings: dict[str, Any], folder: Path, config: Path | None = None
) -> Any:
    """Run one stage with its resolved settings, writing into ``folder``."""
    if st.run == "sandbox":
        from alignkit.sandbox.build import build_world

        # Only our lineage file from a crashed build can be here (the pipeline owns root).
        if (
            folder.exists()
            and not (folder / "manifest.json").exists()
            and {f.name for f in folder.iterdir()} <= {LINEAGE}
        ):
            shutil.rmtree(folder)
        summary = build_world(folder, settings.get("preset", "tiny"), int(settings.get("seed", 0)))
        return {k: v for k, v in summary.items() if k in ("counts", "agreement", "build_seconds")}
    if st.run == "eval":
        from alignkit.evaluation.sandbox_eval import evaluate_models

        return evaluate_models(settings, folder)
    if st.run == "report":
        from alignkit.evaluation.report import write_report

        return str(write_report(settings, folder))
    from alignkit.configs import all_recipes

    recipes = all_recipes()
    if st.run not in recipes:
        raise ConfigError(
            f"stage {st.name!r}: unknown command {st.run!r}; one of "
            f"{', '.join(sorted([*recipes, 'sandbox', 'eval', 'report']))}"
        )
    spec = recipes[st.run]
    cfg = load_config(spec.config, config, recipe_overrides(settings, folder))
    return str(spec.run(cfg))


def recipe_overrides(settings: dict[str, Any], folder: Path) -> list[str]:
    """A recipe stage's ``with`` as ``key=value`` overrides, leaf by leaf: a nested
    ``{"data": {"ranking_pairs": "all"}}`` (how ``stages.5.with.data.ranking_pairs=all`` from
    the command line arrives) sets one field beside ``data.path`` instead of replacing the
    whole ``data`` section. The output folder is always the stage's."""
    out = [
        f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
        for k, v in _flatten(settings).items()
    ]
    return [*out, f"train.output_dir={folder}"]
