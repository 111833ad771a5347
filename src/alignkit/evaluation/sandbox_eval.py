"""``alignkit eval --suite sandbox``: generate on the held-out set, judge with the gold oracle.

Responses are greedy by default so a model's metrics are a deterministic function of its
weights. With a reference model the report adds the gold win rate (ties count half) and a KL
estimate: one sampled response per prompt from the policy, E[log π(y) − log π_ref(y)].
Generated responses are cached next to the model (``<model>/eval/``), keyed by the world,
the sampling settings and the weights' size and time stamp, so a reference model used by
many comparisons is generated once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from alignkit.config import ModelConfig
from alignkit.data.readers import read_jsonl_dicts, write_jsonl
from alignkit.models.load import load_causal_lm
from alignkit.models.logprobs import completion_logprobs
from alignkit.rollout.generate import SamplingConfig, generate
from alignkit.sandbox.build import read_manifest
from alignkit.sandbox.evaluate import evaluate_responses
from alignkit.sandbox.oracle import GoldOracle

DEFAULT_SAMPLING = SamplingConfig(max_new_tokens=64, temperature=0.0, batch_size=64)


def _weights_stamp(model_dir: Path) -> str:
    parts = [
        f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
        for f in sorted(model_dir.glob("*.safetensors"))
    ]
    return ";".join(parts)


def _cache_key(
    model_dir: Path, world_dir: Path, sampling: SamplingConfig, limit: int | None, tag: str
) -> str:
    manifest = read_manifest(world_dir)
    world_sig = manifest["files"].get("eval.jsonl", {}).get("sha256", "")
    raw = json.dumps(
        [_weights_stamp(model_dir), world_sig, sampling.model_dump(), limit, tag], sort_keys=True
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def eval_prompts(world_dir: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    rows = read_jsonl_dicts(Path(world_dir) / "eval.jsonl")
    return rows[:limit] if limit else rows


def model_responses(
    model_dir: str | Path,
    world_dir: str | Path,
    records: list[dict[str, Any]],
    sampling: SamplingConfig = DEFAULT_SAMPLING,
    limit: int | None = None,
    seed: int = 0,
    tag: str = "greedy",
    model_tokenizer: tuple[Any, Any] | None = None,
    decoding: Any = None,
) -> list[dict[str, Any]]:
    """Responses of the model to ``records`` (cached in ``<model>/eval/``); with ``decoding``
    (a :class:`~alignkit.decoding.pipeline.DecodingConfig`) through its decoding-time aids
    (retrieval, CBF filter, chain of thought), with ``sampling`` as the sampler."""
    mdir = Path(model_dir)
    if decoding is not None:
        decoding = decoding.model_copy(update={"model": str(mdir), "sampling": sampling})
        tag = f"{tag}|{decoding.model_dump_json()}"
    key = _cache_key(mdir, Path(world_dir), sampling, limit, tag)
    cache = mdir / "eval" / f"responses-{key}.jsonl"
    if cache.exists():
        rows = read_jsonl_dicts(cache)
        if len(rows) == len(records):
            return rows
    if decoding is not None:
        rows = _decoded_responses(decoding, records)
        write_jsonl(cache, rows)
        return rows
    model, tok = model_tokenizer or load_causal_lm(ModelConfig(path=str(mdir)), for_training=False)
    gens = generate(model, tok, [r["prompt"] for r in records], sampling, seed=seed)
    rows = [
        {
            "id": r.get("id"),
            "prompt": r["prompt"],
            "response": g[0].text,
            "finished": g[0].finished,
            "prompt_ids": g[0].prompt_ids,
            "completion_ids": g[0].completion_ids,
        }
        for r, g in zip(records, gens, strict=True)
    ]
    write_jsonl(cache, rows)
    return rows


def _decoded_responses(decoding: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from alignkit.decoding.pipeline import build_decoder

    decoder = build_decoder(decoding)
    results = decoder.generate(
        [r["prompt"] for r in records],
        records=[{k: v for k, v in r.items() if k != "prompt"} for r in records],
    )
    rows = []
    for r, res in zip(records, results, strict=True):
        s = res.samples[0]
        row = {
            "id": r.get("id"),
            "prompt": r["prompt"],
            "response": s.text,
            "finished": s.finished,
            "completion_tokens": s.completion_tokens,
        }
        if s.cbf is not None:
            row["cbf_interventions"] = s.cbf["interventions"]
        if res.passages is not None:
            row["passages"] = [p.passage.id for p in res.passages]
        rows.append(row)
    return rows


def kl_to_reference(
    model_dir: str | Path,
    reference_dir: str | Path,
    world_dir: str | Path,
    records: list[dict[str, Any]],
    limit: int | None,
    max_new_tokens: int,
    seed: int = 0,
) -> float:
    """Monte-Carlo KL(π‖π_ref) on the eval prompts: samples from π at temperature 1."""
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.0, batch_size=64)
    model, tok = load_causal_lm(ModelConfig(path=str(model_dir)), for_training=False)
    rows = model_responses(
        model_dir,
        world_dir,
        records,
        sampling,
        limit,
        seed,
        tag="kl-sample",
        model_tokenizer=(model, tok),
    )
    ref, _ = load_causal_lm(ModelConfig(path=str(reference_dir)), for_training=False)
    prompts = [r["prompt_ids"] for r in rows]
    comps = [r["completion_ids"] for r in rows]
    lp = completion_logprobs(model, prompts, comps, tok.pad_token_id)
    lr = completion_logprobs(ref, prompts, comps, tok.pad_token_id)
    return sum(a - b for a, b in zip(lp, lr, strict=True)) / max(1, len(lp))


def evaluate_model(
    model_dir: str | Path,
    world_dir: str | Path,
    reference_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    limit: int | None = None,
    max_new_tokens: int = 64,
    with_kl: bool = True,
    seed: int = 0,
    decoding: Any = None,
) -> dict[str, Any]:
    """Gold metrics of a model on the world's held-out set (and vs a reference model).

    With ``decoding`` (a ``DecodingConfig``: retrieval, CBF filter, chain of thought) the
    model's responses go through those aids, greedy as always; the reference's do not. The
    KL estimate is then left out: it would be the model's without the aids."""
    oracle = GoldOracle.from_dir(world_dir)
    records = eval_prompts(world_dir, limit)
    sampling = DEFAULT_SAMPLING.model_copy(update={"max_new_tokens": max_new_tokens})
    rows = model_responses(model_dir, world_dir, records, sampling, limit, seed, decoding=decoding)
    responses = [r["response"] for r in rows]
    ref_responses = None
    if reference_dir is not None:
        ref_rows = model_responses(reference_dir, world_dir, records, sampling, limit, seed)
        ref_responses = [r["response"] for r in ref_rows]
    metrics = evaluate_responses(oracle, records, responses, ref_responses)
    metrics["no_eos_rate"] = round(sum(not r["finished"] for r in rows) / max(1, len(rows)), 6)
    metrics["mean_length_tokens"] = round(
        sum(r.get("completion_tokens", len(r.get("completion_ids") or [])) for r in rows)
        / max(1, len(rows)),
        3,
    )
    if decoding is not None:
        cbf = [r["cbf_interventions"] for r in rows if "cbf_interventions" in r]
        if cbf:
            metrics["cbf_interventions_per_response"] = round(sum(cbf) / len(cbf), 4)
        metrics["decoding"] = {
            k: v
            for k, v in {
                "rag": decoding.rag,
                "rag_k": decoding.retrieval.k if decoding.rag else None,
                "safety_model": decoding.safety_model,
                "alpha": decoding.cbf.alpha if decoding.safety_model else None,
                "cot": decoding.cot or None,
            }.items()
            if v is not None
        }
    if reference_dir is not None and with_kl and decoding is None:
        metrics["kl_to_reference"] = round(
            kl_to_reference(
                model_dir, reference_dir, world_dir, records, limit, max_new_tokens, seed
            ),
            6,
        )
    metrics["model"] = str(model_dir)
    metrics["reference"] = str(reference_dir) if reference_dir else None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        scores = oracle.score_batch(records, responses)
        write_jsonl(
            out / "responses.jsonl",
            [
                {
                    "id": rec.get("id"),
                    "category": rec.get("category"),
                    "prompt": rec["prompt"],
                    "response": resp,
                    "reference_response": ref_responses[i] if ref_responses else None,
                    **{k: v for k, v in s.to_dict().items() if k not in ("category",)},
                }
                for i, (rec, resp, s) in enumerate(zip(records, responses, scores, strict=True))
            ],
        )
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def evaluate_models(settings: dict[str, Any], out_dir: str | Path) -> dict[str, Any]:
    """The pipeline's eval stage: every model in ``settings['models']`` (name → folder) on the
    world's held-out set, against ``settings['reference']``; writes ``table.json`` and
    ``table.md`` plus one sub-folder of responses per model."""
    models: dict[str, str] = settings.get("models") or {}
    if not models:
        raise ValueError("eval stage: set with.models to {name: model folder, ...}")
    world = settings["world"]
    reference = settings.get("reference")
    out = Path(out_dir)
    rows: dict[str, dict[str, Any]] = {}
    for name, path in models.items():
        ref = reference if reference and Path(reference).resolve() != Path(path).resolve() else None
        m = evaluate_model(
            path,
            world,
            ref,
            out / name,
            settings.get("limit"),
            int(settings.get("max_new_tokens", 64)),
            with_kl=bool(settings.get("kl", True)),
        )
        if ref is None and reference:
            m.update(win_rate=0.5, win_rate_se=0.0, kl_to_reference=0.0)
        rows[name] = m
    (out / "table.json").write_text(json.dumps(rows, indent=2))
    (out / "table.md").write_text(markdown_table(rows))
    return {name: {k: m.get(k) for k in TABLE_COLUMNS} for name, m in rows.items()}


TABLE_COLUMNS = (
    "reward_mean",
    "win_rate",
    "harmful_compliance_rate",
    "over_refusal_rate",
    "hallucination_rate",
    "fact_accuracy",
    "format_adherence",
    "kl_to_reference",
    "mean_length_words",
)


def markdown_table(rows: dict[str, dict[str, Any]]) -> str:
    head = "| model | " + " | ".join(TABLE_COLUMNS) + " |"
    sep = "|---|" + "---:|" * len(TABLE_COLUMNS)
    lines = [head, sep]
    for name, m in rows.items():
        cells = []
        for c in TABLE_COLUMNS:
            v = m.get(c)
            cells.append("" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
