"""``alignkit generate`` and ``alignkit serve``: inference-time alignment from the shell.

Both take the same options and build one :class:`~alignkit.decoding.pipeline.Decoder`; heavy
imports happen inside the commands so ``alignkit --help`` stays fast. Mounted by
``alignkit.cli`` through :func:`register`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from alignkit.config import ConfigError


def _config(
    model: str,
    num_samples: int,
    best_of: int,
    judge: str | None,
    safety_filter: str,
    safety_model: str | None,
    alpha: float,
    top_k: int,
    max_candidates: int,
    fallback: str,
    refusal: str | None,
    safety_margin: float,
    safety_form: str,
    safe_label: str | None,
    guide: str | None,
    guide_weight: float,
    guide_top_k: int,
    rag: str | None,
    rag_k: int,
    retriever: str,
    cot: bool,
    prefill: str,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    chat_template: str,
    seed: int,
    device: str,
) -> Any:
    """Validate the options into a DecodingConfig; a bad combination names the option."""
    from pydantic import ValidationError

    from alignkit.decoding.pipeline import DecodingConfig

    if safety_filter not in ("none", "cbf"):
        raise ConfigError(f"--safety-filter must be none or cbf, not {safety_filter!r}")
    if safety_filter == "cbf" and not safety_model:
        raise ConfigError(
            "--safety-filter cbf needs --safety-model (a cost-model folder, a classifier folder "
            "or module:function)"
        )
    if safety_model and safety_filter != "cbf":
        raise ConfigError("--safety-model is used by --safety-filter cbf; add that option")
    cbf: dict[str, Any] = {
        "alpha": alpha,
        "top_k": top_k,
        "max_candidates": max(max_candidates, top_k),
        "fallback": fallback,
        # The filter examines the same nucleus the sampler would draw from.
        "top_p": top_p,
    }
    if refusal:
        cbf["refusal"] = refusal
    try:
        return DecodingConfig.model_validate(
            {
                "model": model,
                "chat_template": chat_template,
                "sampling": {
                    "temperature": temperature,
                    "top_p": top_p,
                    "max_new_tokens": max_new_tokens,
                    "batch_size": batch_size,
                },
                "num_samples": num_samples,
                "best_of": best_of,
                "judge": judge,
                "safety_model": safety_model if safety_filter == "cbf" else None,
                "safety_margin": safety_margin,
                "safety_form": safety_form,
                "safe_label": safe_label,
                "cbf": cbf,
                "guide": guide,
                "guidance": {"weight": guide_weight, "top_k": guide_top_k},
                "rag": rag,
                "retrieval": {"k": rag_k, "retriever": retriever},
                "cot": cot,
                "response_prefix": prefill,
                "seed": seed,
                "device": device,
            }
        )
    except ValidationError as e:
        msgs = [
            f"{'.'.join(str(x) for x in err['loc']) or 'options'}: {err['msg']}"
            for err in e.errors()
        ]
        raise ConfigError("; ".join(msgs)) from None


# Options shared by both commands (typer reads them from the signature).
MODEL = typer.Option(..., "--model", "-m", help="Policy: a local causal-LM folder.")
NUM_SAMPLES = typer.Option(
    1, "--num-samples", help="Responses per prompt (K > 1 writes {prompt, responses})."
)
BEST_OF = typer.Option(1, "--best-of", help="Draws per response; --judge keeps the best.")
JUDGE = typer.Option(None, "--judge", help="Best-of-N judge: reward-model folder or sandbox world.")
SAFETY_FILTER = typer.Option("none", "--safety-filter", help="none | cbf.")
SAFETY_MODEL = typer.Option(
    None, "--safety-model", help="h: cost model, classifier, or module:function."
)
ALPHA = typer.Option(0.3, "--alpha", help="CBF rate α in (0, 1]; 1 = blacklist.")
TOP_K = typer.Option(30, "--top-k", help="CBF: candidates kept per step (allowed ones).")
MAX_CANDIDATES = typer.Option(
    100, "--max-candidates", help="CBF: candidates examined per step at most."
)
FALLBACK = typer.Option("refuse", "--fallback", help="CBF when nothing is allowed: refuse | stop.")
REFUSAL = typer.Option(None, "--refusal", help="Refusal text of the refuse fallback.")
SAFETY_MARGIN = typer.Option(
    0.0, "--safety-margin", help="Cost tolerated as safe (h uses margin − cost)."
)
SAFETY_FORM = typer.Option(
    "probability",
    "--safety-form",
    help="Cost-model h: probability (tanh((margin−cost)/2)) | linear.",
)
SAFE_LABEL = typer.Option(None, "--safe-label", help="Safe label of a classifier h.")
GUIDE = typer.Option(None, "--guide", help="Reward model for reward-guided decoding.")
GUIDE_WEIGHT = typer.Option(1.0, "--guide-weight", help="w in π·exp(w·V).")
GUIDE_TOP_K = typer.Option(10, "--guide-top-k", help="Candidates rescored per step (without CBF).")
RAG = typer.Option(None, "--rag", help="Knowledge base JSONL {id, title, text}.")
RAG_K = typer.Option(3, "--rag-k", help="Passages per prompt.")
RETRIEVER = typer.Option("bm25", "--retriever", help="bm25 | dense.")
COT = typer.Option(False, "--cot", help="Ask the model to reason step by step.")
PREFILL = typer.Option("", "--prefill", help="Prefilled opening of every response.")
TEMPERATURE = typer.Option(1.0, "--temperature", help="0 = greedy.")
TOP_P = typer.Option(1.0, "--top-p", help="Nucleus mass.")
MAX_NEW = typer.Option(64, "--max-new-tokens", help="Longest response in tokens.")
BATCH = typer.Option(32, "--batch-size", help="Sequences decoded together.")
TEMPLATE = typer.Option(
    "auto", "--chat-template", help="auto | none | default | Jinja | file.jinja."
)
SEED = typer.Option(0, "--seed", help="Sampling seed.")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda[:i].")


def _read_prompts(path: str, limit: int | None) -> list[dict[str, Any]]:
    """Prompt rows (``prompt``, or ``messages`` ending in a user turn) with their extra fields;
    a bad row stops the run before any model is loaded, naming file:line:field."""
    from alignkit.data.readers import iter_rows, parse_prompt

    out = []
    for row in iter_rows(path):
        if limit and len(out) >= limit:
            break
        rec = parse_prompt(row)
        out.append({**rec.extra, "prompt": rec.prompt})
    return out


def generate_command(
    prompts: str = typer.Option(
        ..., "--prompts", "-p", help="JSONL of {prompt} rows (extra fields kept)."
    ),
    out: str = typer.Option(..., "--out", "-o", help="Output JSONL."),
    limit: int = typer.Option(None, "--limit", help="Only the first N prompts."),
    model: str = MODEL,
    num_samples: int = NUM_SAMPLES,
    best_of: int = BEST_OF,
    judge: str = JUDGE,
    safety_filter: str = SAFETY_FILTER,
    safety_model: str = SAFETY_MODEL,
    alpha: float = ALPHA,
    top_k: int = TOP_K,
    max_candidates: int = MAX_CANDIDATES,
    fallback: str = FALLBACK,
    refusal: str = REFUSAL,
    safety_margin: float = SAFETY_MARGIN,
    safety_form: str = SAFETY_FORM,
    safe_label: str = SAFE_LABEL,
    guide: str = GUIDE,
    guide_weight: float = GUIDE_WEIGHT,
    guide_top_k: int = GUIDE_TOP_K,
    rag: str = RAG,
    rag_k: int = RAG_K,
    retriever: str = RETRIEVER,
    cot: bool = COT,
    prefill: str = PREFILL,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    max_new_tokens: int = MAX_NEW,
    batch_size: int = BATCH,
    chat_template: str = TEMPLATE,
    seed: int = SEED,
    device: str = DEVICE,
) -> None:
    """Generate responses with inference-time alignment; one JSONL row per prompt with
    per-response diagnostics. With --num-samples K > 1 rows are {prompt, responses, ...},
    the shape `alignkit feedback import --responses` reads."""
    opts = dict(locals())
    from alignkit.cli import run_guarded

    for k in ("prompts", "out", "limit"):
        opts.pop(k)

    def go() -> None:
        from alignkit.data.readers import write_jsonl
        from alignkit.decoding.pipeline import build_decoder

        cfg = _config(**opts)
        records = _read_prompts(prompts, limit)
        decoder = build_decoder(cfg)
        t0 = time.perf_counter()
        results = decoder.generate(
            [r["prompt"] for r in records],
            records=[{k: v for k, v in r.items() if k != "prompt"} for r in records],
            num_samples=cfg.num_samples,
        )
        rows = [
            output_row(rec, res, cfg.num_samples) for rec, res in zip(records, results, strict=True)
        ]
        write_jsonl(out, rows)
        secs = time.perf_counter() - t0
        summary = summarize(results)
        summary.update(prompts=len(rows), seconds=round(secs, 2), out=str(out))
        typer.echo(json.dumps(summary))

    run_guarded(go)


def output_row(record: dict[str, Any], result: Any, num_samples: int) -> dict[str, Any]:
    """One output row: the input row's fields, the response(s) and the diagnostics."""
    row = dict(record)
    row["prompt"] = result.prompt
    if num_samples == 1:
        row["response"] = result.samples[0].text
        row["diagnostics"] = result.samples[0].diagnostics()
    else:
        row["responses"] = [s.text for s in result.samples]
        row["diagnostics"] = [s.diagnostics() for s in result.samples]
    if result.passages is not None:
        row["passages"] = [p.to_dict() for p in result.passages]
    return row


def summarize(results: list[Any]) -> dict[str, Any]:
    """Totals over a run: interventions and fallbacks per generation, best-of-N KL bound."""
    samples = [s for r in results for s in r.samples]
    out: dict[str, Any] = {"responses": len(samples)}
    cbf = [s.cbf for s in samples if s.cbf is not None]
    if cbf:
        out["cbf_interventions_per_generation"] = round(
            sum(c["interventions"] for c in cbf) / len(cbf), 4
        )
        out["cbf_fallbacks"] = sum(c["fallback"] is not None for c in cbf)
    bon = [s.best_of_n for s in samples if s.best_of_n is not None]
    if bon:
        out["best_of_n_kl_bound"] = round(bon[0].kl_bound, 6)
    return out


def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface (0.0.0.0 exposes it)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    served_name: str = typer.Option(
        None, "--served-name", help="Model id clients send (default: folder name)."
    ),
    model: str = MODEL,
    best_of: int = BEST_OF,
    judge: str = JUDGE,
    safety_filter: str = SAFETY_FILTER,
    safety_model: str = SAFETY_MODEL,
    alpha: float = ALPHA,
    top_k: int = TOP_K,
    max_candidates: int = MAX_CANDIDATES,
    fallback: str = FALLBACK,
    refusal: str = REFUSAL,
    safety_margin: float = SAFETY_MARGIN,
    safety_form: str = SAFETY_FORM,
    safe_label: str = SAFE_LABEL,
    guide: str = GUIDE,
    guide_weight: float = GUIDE_WEIGHT,
    guide_top_k: int = GUIDE_TOP_K,
    rag: str = RAG,
    rag_k: int = RAG_K,
    retriever: str = RETRIEVER,
    cot: bool = COT,
    prefill: str = PREFILL,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    max_new_tokens: int = MAX_NEW,
    batch_size: int = BATCH,
    chat_template: str = TEMPLATE,
    seed: int = SEED,
    device: str = DEVICE,
) -> None:
    """Serve the model with the same decoding options as an OpenAI-compatible
    /v1/chat/completions endpoint (FastAPI + uvicorn)."""
    opts = dict(locals())
    from alignkit.cli import run_guarded

    for k in ("host", "port", "served_name"):
        opts.pop(k)
    opts["num_samples"] = 1

    def go() -> None:
        from alignkit.decoding.pipeline import build_decoder
        from alignkit.decoding.server import serve

        cfg = _config(**opts)
        decoder = build_decoder(cfg)
        serve(decoder, host, port, served_name or Path(model).resolve().name)

    run_guarded(go)


def register(app: typer.Typer) -> None:
    """Mount ``generate`` and ``serve`` on the main CLI."""
    app.command("generate")(generate_command)
    app.command("serve")(serve_command)
