"""Rejection-sampling fine-tuning (expert iteration; ALGORITHMS.md section 4).

Each round: sample ``n`` responses per prompt from the current model, score them all with the
judge (a reward model, the sandbox's gold oracle, or a Python function), keep the judge's best
response per prompt, and fine-tune the current model on those with the SFT recipe. The next
round samples from the model just trained. Only the argmax is kept, so the method needs no
calibrated scores, only a ranking within each prompt's group.

Every round writes into ``round-<r>/``: ``samples.jsonl`` (all responses with their scores),
``selected.jsonl`` (the training set: one best response per prompt), ``selection.json`` (the
round's numbers) and the trained ``model/``. Reruns resume: an up-to-date file or model is reused, a stale one (its
inputs changed, e.g. a person filtered ``selected.jsonl``) is made again; see
:mod:`alignkit.recipes.synthetic`. The final model is published in the run folder.
"""

from __future__ import annotations

import gc
import importlib
import json
import math
from pathlib import Path
from typing import Any

from alignkit.config import ConfigError, ModelConfig
from alignkit.configs.rejection_sampling import RejectionSamplingConfig
from alignkit.data.readers import read_records
from alignkit.data.records import PromptOnly
from alignkit.data.tokenize import ChatFormatter
from alignkit.models.load import load_causal_lm
from alignkit.recipes.common import Timer, prepare_run_dir, set_seed, write_summary
from alignkit.recipes.synthetic import (
    Rows,
    StageLog,
    content_key,
    file_sha,
    fine_tune,
    merge_metrics,
    model_stamp,
    publish_model,
    sample,
)
from alignkit.rollout.judges import FunctionJudge, Judge, load_judge


def log(msg: str) -> None:
    print(f"[rejection-sampling] {msg}", flush=True)


def build_judge(spec: str) -> Judge:
    """A judge from the config string: a folder (reward model or sandbox world, see
    :func:`load_judge`) or ``module:function(prompts, responses, records) -> scores``."""
    if not spec:
        raise ConfigError(
            "judge is empty; set --judge to a reward-model folder, a sandbox world folder "
            "(gold oracle), or a Python module:function"
        )
    if Path(spec).exists() or ":" not in spec:
        return load_judge(spec)
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"judge={spec!r}: cannot import {name} from {module}: {e}") from None
    return FunctionJudge(fn)


def round_prompts(records: list[PromptOnly], per_round: int | None, r: int) -> list[PromptOnly]:
    """Round ``r``'s prompts (1-based): all of them, or the r-th window of ``per_round``
    consecutive prompts (wrapping around), so successive rounds see new prompts."""
    if not per_round or per_round >= len(records):
        return records
    start = ((r - 1) * per_round) % len(records)
    return [records[(start + i) % len(records)] for i in range(per_round)]


def sample_and_score(
    model: Any,
    tok: Any,
    records: list[PromptOnly],
    judge: Judge,
    cfg: RejectionSamplingConfig,
    r: int,
) -> Rows:
    """``n`` responses per prompt with the judge's score of each."""
    fmt = ChatFormatter(tok, cfg.data.chat_template)
    prompt_ids = [fmt.prompt_ids(rec.prompt) for rec in records]
    gens = sample(
        model,
        tok,
        prompt_ids,
        cfg.sampling,
        cfg.n,
        cfg.train.seed + 7919 * r,
        f"rejection-sampling:round {r}",
        cfg.train.progress,
    )
    flat_prompts = [rec.prompt for rec in records for _ in range(cfg.n)]
    flat_records = [rec.extra for rec in records for _ in range(cfg.n)]
    flat_texts = [g.text for group in gens for g in group]
    scores = judge.score(flat_prompts, flat_texts, flat_records)
    rows = []
    for i, (rec, group) in enumerate(zip(records, gens, strict=True)):
        rows.append(
            {
                **rec.extra,
                "prompt": rec.prompt,
                "responses": [g.text for g in group],
                "scores": [float(s) for s in scores[i * cfg.n : (i + 1) * cfg.n]],
                "finished": [g.finished for g in group],
            }
        )
    return rows


def select_best(
    rows: Rows, drop_unfinished: bool, min_score: float | None
) -> tuple[Rows, dict[str, Any]]:
    """The judge's argmax per prompt (the first on ties) as (prompt, completion) rows.

    Unfinished responses are never chosen when ``drop_unfinished``; a prompt whose candidates
    are all unfinished, or whose best score is below ``min_score``, contributes nothing.
    """
    chosen: Rows = []
    skipped = {"all_unfinished": 0, "below_min_score": 0}
    ties = 0  # groups whose samples all score the same: no preference signal in them
    all_scores: list[float] = []
    for row in rows:
        scores, done = row["scores"], row.get("finished") or [True] * len(row["scores"])
        all_scores += scores
        ties += len(scores) > 1 and len(set(scores)) == 1
        allowed = [i for i in range(len(scores)) if done[i] or not drop_unfinished]
        if not allowed:
            skipped["all_unfinished"] += 1
            continue
        best = max(allowed, key=lambda i: (scores[i], -i))
        if min_score is not None and scores[best] < min_score:
            skipped["below_min_score"] += 1
            continue
        extra = {
            k: v for k, v in row.items() if k not in ("prompt", "responses", "scores", "finished")
        }
        chosen.append(
            {
                **extra,
                "prompt": row["prompt"],
                "completion": row["responses"][best],
                "score": scores[best],
                "mean_score": math.fsum(scores) / len(scores),
                "sample_index": best,
            }
        )
    stats = {
        "prompts": len(rows),
        "selected": len(chosen),
        **skipped,
        "all_equal_groups": ties,
        "mean_sample_score": math.fsum(all_scores) / max(1, len(all_scores)),
        "mean_selected_score": math.fsum(c["score"] for c in chosen) / max(1, len(chosen)),
    }
    return chosen, stats


def run_round(
    cfg: RejectionSamplingConfig,
    stages: StageLog,
    judge: Judge,
    judge_id: str,
    start: ModelConfig,
    prompts: list[PromptOnly],
    r: int,
) -> tuple[Path, dict[str, Any]]:
    """One round: sample and score, select, fine-tune ``start``; returns (model, numbers)."""
    rdir = stages.root / f"round-{r}"
    f_samples, f_selected = rdir / "samples.jsonl", rdir / "selected.jsonl"
    origin = model_stamp(start.path)

    def make_samples() -> Rows:
        model, tok = load_causal_lm(start, for_training=False)
        rows = sample_and_score(model, tok, prompts, judge, cfg, r)
        del model
        gc.collect()
        return rows

    sampling_key = (cfg.sampling.model_dump(), cfg.n, cfg.train.seed, cfg.data.chat_template)
    samples = stages.rows(
        f"round-{r}/samples",
        f_samples,
        content_key(origin, [(p.prompt, p.extra) for p in prompts], sampling_key, judge_id),
        make_samples,
    )
    sel = cfg.selection
    chosen, stats = select_best(samples, sel.drop_unfinished, sel.min_score)
    selected = stages.rows(
        f"round-{r}/selected",
        f_selected,
        content_key(file_sha(f_samples), sel.model_dump()),
        lambda: chosen,
    )
    if not selected:
        raise ConfigError(f"round {r}: no response was selected ({f_samples}); see selection.*")
    # the file is what trains (a person may have filtered it): report its numbers
    stats["selected"] = len(selected)
    if all(isinstance(x.get("score"), (int, float)) for x in selected):
        stats["mean_selected_score"] = math.fsum(x["score"] for x in selected) / len(selected)
    log(
        f"round {r}: trains on {len(selected)} of {len(samples)} prompts; mean score "
        f"{stats['mean_sample_score']:.4f} over samples, {stats['mean_selected_score']:.4f} "
        "of the best"
    )
    train_key = (cfg.train.model_dump(exclude={"output_dir"}), cfg.data.max_length)
    trained = stages.model(
        f"round-{r}/model",
        rdir / "model",
        content_key(
            origin, start.model_dump(), train_key, cfg.data.chat_template, file_sha(f_selected)
        ),
        lambda: fine_tune(
            start,
            f_selected,
            rdir / "model",
            cfg.train,
            cfg.data.max_length,
            cfg.data.chat_template,
        ),
    )
    (rdir / "selection.json").write_text(json.dumps(stats, indent=1))
    return trained, stats


def run_rejection_sampling(cfg: RejectionSamplingConfig, judge: Judge | None = None) -> Path:
    """Run (or resume) ``cfg.rounds`` rounds; returns the run folder (final model inside).

    ``judge`` overrides ``cfg.judge`` for callers with a judge object in Python.
    """
    timer = Timer()
    if not cfg.model.path:
        raise ConfigError("model.path is empty; point it at the starting model (--model M)")
    if not cfg.data.path:
        raise ConfigError("data.path is empty; point it at a prompt file (--prompts FILE)")
    set_seed(cfg.train.seed)
    judge = judge or build_judge(cfg.judge)
    judge_id = cfg.judge or type(judge).__name__
    out = prepare_run_dir(cfg.train.output_dir, cfg)
    records: list[PromptOnly] = read_records(
        cfg.data.path, "prompt", cfg.data.split, cfg.data.limit
    )
    stages = StageLog(out, log)
    current, rounds, runs = cfg.model, [], {}
    for r in range(1, cfg.rounds + 1):
        prompts = round_prompts(records, cfg.prompts_per_round, r)
        trained, stats = run_round(cfg, stages, judge, judge_id, current, prompts, r)
        rounds.append({"round": r, **stats})
        runs[f"round-{r}"] = trained
        current = cfg.model.model_copy(update={"path": str(trained)})
    publish_model(Path(current.path), out)
    merge_metrics(out, runs)
    write_summary(
        out,
        {
            "recipe": "rejection-sampling",
            "judge": judge_id,
            "n": cfg.n,
            "rounds": rounds,
            "final_model": current.path,
            "wall_time_s": round(timer.seconds, 2),
        },
    )
    log(f"done in {timer.seconds:.1f}s: final model in {out}")
    return out


__all__ = [
    "build_judge",
    "round_prompts",
    "run_rejection_sampling",
    "run_round",
    "sample_and_score",
    "select_best",
]
