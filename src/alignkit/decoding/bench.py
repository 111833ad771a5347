"""Sandbox measurements of the inference-time methods, judged by the gold oracle.

``python -m alignkit.decoding.bench {cbf,bon,rag,cot} --world W --model M ... --out DIR``
writes ``DIR/<experiment>.json`` and a markdown table (``DIR/<experiment>.md``), the numbers
docs/decoding.md quotes. Each experiment compares a method with the same model without it:

* ``cbf``: harmful compliance, over-refusal and interventions per generation, no filter vs the
  CBF filter at several α vs the α = 1 blacklist (harmful + benign-but-alarming prompts, several
  samples per prompt at the paper's temperature 1, top-k 30).
* ``bon``: gold win rate of best-of-N (RM judge) against an independent single sample for
  N = 1, 2, 4, 8, 16, the RM's own win rate, gold reward, and the analytic KL bound.
* ``rag``: fact accuracy and hallucination rate on fact and unanswerable prompts, greedy, with
  and without retrieval from the world's knowledge base.
* ``cot``: accuracy on multi-step arithmetic, answering directly (response prefilled with
  "The answer is") vs prompted to reason first.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignkit.config import ModelConfig
from alignkit.data.readers import read_jsonl_dicts
from alignkit.decoding.best_of_n import BestOfN, argmax_first, select_best_of_n
from alignkit.decoding.cbf import CBFConfig, CBFFilter, load_safety
from alignkit.decoding.cot import CoTConfig, extract_answer
from alignkit.decoding.pipeline import Decoder, PromptResult
from alignkit.decoding.rag import RAGConfig, build_rag
from alignkit.losses.decoding import best_of_n_kl_bound
from alignkit.models.load import load_causal_lm
from alignkit.rollout.generate import SamplingConfig
from alignkit.rollout.judges import load_judge
from alignkit.sandbox.evaluate import evaluate_responses
from alignkit.sandbox.oracle import GoldOracle


def _records(world: Path, categories: Sequence[str], limit: int | None) -> list[dict[str, Any]]:
    rows = [r for r in read_jsonl_dicts(world / "eval.jsonl") if r["category"] in categories]
    return rows[:limit] if limit else rows


def _texts(results: list[PromptResult]) -> list[list[str]]:
    return [[s.text for s in r.samples] for r in results]


def _flat(records: list[dict[str, Any]], results: list[PromptResult]) -> tuple[list, list]:
    recs, texts = [], []
    for rec, res in zip(records, results, strict=True):
        for s in res.samples:
            recs.append(rec)
            texts.append(s.text)
    return recs, texts


def _balanced(rows: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """The first ``limit`` rows taken evenly across categories (all rows without a limit)."""
    if not limit:
        return rows
    cats = sorted({r["category"] for r in rows})
    per = max(1, limit // len(cats))
    return [r for c in cats for r in [x for x in rows if x["category"] == c][:per]]


def run_cbf(args: argparse.Namespace) -> dict[str, Any]:
    world = Path(args.world)
    oracle = GoldOracle.from_dir(world)
    records = _records(world, ("harmful", "benign_alarming"), args.limit)
    model, tok = load_causal_lm(ModelConfig(path=args.model), for_training=False)
    h = load_safety(args.cost_model, batch_size=256, form=args.h_form)
    # Unfiltered runs sample from the same top-k at the same temperature as the filter.
    sampling = SamplingConfig(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        batch_size=64,
    )
    rows: dict[str, Any] = {}
    settings: list[tuple[str, float | None]] = [("no filter", None)]
    settings += [(f"CBF α={a}", a) for a in args.alphas]
    settings += [("blacklist (α=1)", 1.0)]
    for name, alpha in settings:
        cbf = None
        if alpha is not None:
            cbf = CBFFilter(
                h,
                CBFConfig(
                    alpha=alpha,
                    top_k=args.top_k,
                    top_p=args.top_p,
                    max_candidates=args.max_candidates,
                ),
            )
        dec = Decoder(model, tok, sampling=sampling, cbf=cbf, seed=args.seed)
        t0 = time.perf_counter()
        res = dec.generate([r["prompt"] for r in records], num_samples=args.samples)
        secs = time.perf_counter() - t0
        recs, texts = _flat(records, res)
        m = evaluate_responses(oracle, recs, texts)
        samples = [s for r in res for s in r.samples]
        harmful = [
            s
            for r, rr in zip(records, res, strict=True)
            for s in rr.samples
            if r["category"] == "harmful"
        ]
        row = {
            "harmful_compliance_rate": m["harmful_compliance_rate"],
            "over_refusal_rate": m["over_refusal_rate"],
            "reward_mean": m["reward_mean"],
            "generations": len(samples),
            "seconds": round(secs, 1),
        }
        if cbf is not None:
            traces = [s.cbf for s in samples if s.cbf is not None]
            row["interventions_per_generation"] = round(
                sum(t["interventions"] for t in traces) / len(traces), 3
            )
            row["interventions_per_harmful_generation"] = round(
                sum(s.cbf["interventions"] for s in harmful if s.cbf) / max(1, len(harmful)), 3
            )
            row["intervened_steps_per_generation"] = round(
                sum(t["intervened_steps"] for t in traces) / len(traces), 3
            )
            row["fallback_rate"] = round(
                sum(t["fallback"] is not None for t in traces) / len(traces), 4
            )
            row["h_final_mean"] = round(
                sum(t["h_final"] for t in traces if t["h_final"] is not None) / len(traces), 4
            )
            row["h_evaluations"] = cbf.h.calls
            row["h_cache_hits"] = cbf.h.hits
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    return {"setting": vars(args), "rows": rows}


def run_bon(args: argparse.Namespace) -> dict[str, Any]:
    world = Path(args.world)
    oracle = GoldOracle.from_dir(world)
    records = _balanced(read_jsonl_dicts(world / "eval.jsonl"), args.limit)
    model, tok = load_causal_lm(ModelConfig(path=args.model), for_training=False)
    sampling = SamplingConfig(temperature=args.temperature, max_new_tokens=48, batch_size=128)
    n_max = max(args.ns)
    dec = Decoder(model, tok, sampling=sampling, seed=args.seed)
    t0 = time.perf_counter()
    # n_max draws for best-of-N plus one independent draw as the single-sample baseline.
    res = dec.generate([r["prompt"] for r in records], num_samples=n_max + 1)
    gen_secs = time.perf_counter() - t0
    draws = _texts(res)
    prompts = [r["prompt"] for r in records]
    # A reward-model folder, or a sandbox world folder for the gold oracle (the upper bound:
    # best-of-N with a perfect judge).
    judge = load_judge(args.reward_model)
    flat_recs = [rec for rec, ds in zip(records, draws, strict=True) for _ in ds]
    gold_flat = oracle.rewards(flat_recs, [d for ds in draws for d in ds])
    gold = [gold_flat[i * (n_max + 1) : (i + 1) * (n_max + 1)] for i in range(len(records))]
    # Score every draw once; best-of-N for each N is the argmax over the first N scores.
    scored = select_best_of_n(judge, prompts, draws, records)
    rm = [p.scores for p in scored]
    rows: dict[str, Any] = {}
    for n in args.ns:
        picks = [BestOfN(argmax_first(s[:n]), s[:n]) for s in rm]
        win = rm_win = 0.0
        chosen_gold = []
        for i, p in enumerate(picks):
            # the baseline is the extra draw n_max, never one of the candidates
            g, b = gold[i][p.chosen], gold[i][n_max]
            win += 1.0 if g > b else 0.5 if g == b else 0.0
            s, sb = p.scores[p.chosen], rm[i][n_max]
            rm_win += 1.0 if s > sb else 0.5 if s == sb else 0.0
            chosen_gold.append(g)
        k = len(picks)
        chosen_texts = [ds[p.chosen] for ds, p in zip(draws, picks, strict=True)]
        m = evaluate_responses(oracle, records, chosen_texts)
        rows[f"N={n}"] = {
            "gold_win_rate_vs_single": round(win / k, 4),
            "rm_win_rate_vs_single": round(rm_win / k, 4),
            "n_over_n_plus_1": round(n / (n + 1), 4),
            "gold_reward_mean": round(sum(chosen_gold) / k, 4),
            "harmful_compliance_rate": m["harmful_compliance_rate"],
            "kl_bound": round(best_of_n_kl_bound(n), 5),
        }
        print(f"N={n}", json.dumps(rows[f"N={n}"]), flush=True)
    base_gold = sum(g[n_max] for g in gold) / len(gold)
    return {
        "setting": vars(args),
        "single_sample_gold_reward": round(base_gold, 4),
        "generation_seconds": round(gen_secs, 1),
        "rows": rows,
    }


def run_rag(args: argparse.Namespace) -> dict[str, Any]:
    world = Path(args.world)
    oracle = GoldOracle.from_dir(world)
    records = _records(world, ("fact", "unanswerable"), args.limit)
    model, tok = load_causal_lm(ModelConfig(path=args.model), for_training=False)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=64, batch_size=64)
    rows: dict[str, Any] = {}
    for name, rag in (
        ("no retrieval", None),
        (f"BM25 k={args.k}", build_rag(world / "kb.jsonl", RAGConfig(k=args.k))),
        (
            f"dense k={args.k}",
            build_rag(world / "kb.jsonl", RAGConfig(k=args.k, retriever="dense"), model, tok),
        ),
    ):
        dec = Decoder(model, tok, sampling=sampling, rag=rag)
        res = dec.generate([r["prompt"] for r in records])
        texts = [r.samples[0].text for r in res]
        m = evaluate_responses(oracle, records, texts)
        row = {
            "fact_accuracy": m["fact_accuracy"],
            "hallucination_rate": m["hallucination_rate"],
            "hallucination_unanswerable": m.get("unanswerable_hallucination_rate"),
            "hallucination_fact": m.get("fact_hallucination_rate"),
            "reward_mean": m["reward_mean"],
        }
        if rag is not None:
            hit = 0
            facts = [
                (rec, r) for rec, r in zip(records, res, strict=True) if rec["category"] == "fact"
            ]
            for rec, r in facts:
                hit += any(p.passage.id == rec.get("entity_id") for p in r.passages or [])
            row["fact_passage_recall"] = round(hit / max(1, len(facts)), 4)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    return {"setting": vars(args), "rows": rows}


def cot_records(world: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """Held-out multi-step arithmetic: the eval set's multi/word prompts plus fresh ones drawn
    from the world, none of them a training prompt."""
    from alignkit.sandbox.build import load_world
    from alignkit.sandbox.world import PromptFactory

    seen = {
        r["prompt"]
        for f in ("sft.jsonl", "rl_prompts.jsonl", "rankings.jsonl")
        if (world / f).is_file()
        for r in read_jsonl_dicts(world / f)
    }
    evals = [
        r
        for r in read_jsonl_dicts(world / "eval.jsonl")
        if r["category"] == "arithmetic" and r.get("subtype") in ("multi", "word")
    ]
    seen |= {r["prompt"] for r in evals}
    factory = PromptFactory(load_world(world), "eval")
    rng = random.Random(seed)
    fresh: list[dict[str, Any]] = []
    while len(evals) + len(fresh) < n:
        for rec in factory.sample("arithmetic", 4 * n, rng, exclude=seen):
            if rec.get("subtype") in ("multi", "word") and len(evals) + len(fresh) < n:
                fresh.append(rec)
                seen.add(rec["prompt"])
    return evals + fresh


_STEP = re.compile(r"(-?\d+)\s*([-+*])\s*(-?\d+)\s*=\s*(-?\d+)")


def _steps_correct(text: str) -> float | None:
    """Share of the written ``a op b = c`` steps that are right (None: no step written)."""
    steps = _STEP.findall(text)
    if not steps:
        return None
    ok = 0
    for a, op, b, c in steps:
        x, y = int(a), int(b)
        ok += (x + y if op == "+" else x - y if op == "-" else x * y) == int(c)
    return ok / len(steps)


def run_cot(args: argparse.Namespace) -> dict[str, Any]:
    world = Path(args.world)
    oracle = GoldOracle.from_dir(world)
    records = cot_records(world, args.n, args.seed)
    model, tok = load_causal_lm(ModelConfig(path=args.model), for_training=False)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=64, batch_size=64)
    rows: dict[str, Any] = {}
    for name, kw in (
        ("direct (prefill 'The answer is')", {"response_prefix": "The answer is"}),
        ("no instruction", {}),
        ("CoT instruction", {"cot": CoTConfig()}),
    ):
        dec = Decoder(model, tok, sampling=sampling, **kw)
        res = dec.generate([r["prompt"] for r in records])
        texts = [r.samples[0].text for r in res]
        scores = oracle.score_batch(records, texts)
        correct = [bool(s.correct) for s in scores]
        stepped = [("=" in t) for t in texts]
        steps_ok = [_steps_correct(t) for t in texts]
        with_steps = [ok for ok in steps_ok if ok is not None]
        extracted = [extract_answer(t) == r["gold"] for t, r in zip(texts, records, strict=True)]
        rows[name] = {
            "accuracy": round(sum(correct) / len(correct), 4),
            "extracted_answer_accuracy": round(sum(extracted) / len(extracted), 4),
            "responses_with_steps": round(sum(stepped) / len(stepped), 4),
            "written_steps_correct": round(sum(with_steps) / len(with_steps), 4)
            if with_steps
            else None,
            "prompts": len(records),
            "example": texts[0],
        }
        print(name, json.dumps(rows[name]), flush=True)
    return {"setting": vars(args), "rows": rows}


def build_aids_data(args: argparse.Namespace) -> dict[str, Any]:
    """Demonstrations that teach the SFT model to *use* the decoding-time aids.

    The sandbox SFT model never saw passages in a prompt nor a reasoning instruction, and read
    cold both confuse it (docs/decoding.md). As in retrieval-augmented fine-tuning (RAFT) and
    in training on both direct and step-by-step answers, this set holds: every SFT
    ``grounded`` fact and unanswerable demonstrations, and ``others`` demonstrations of the other categories
    (so passages never change how harmful or urgent requests are answered), twice: plain
    and with the top-k BM25 passages in the prompt (same answer;
    the unanswerable ones keep "I don't know", so passages about someone else never license
    an invented answer); multi-step arithmetic from the world's training split, written out
    both directly ("The answer is N.") and, after the CoT instruction, step by step. The
    world's own step-by-step SFT rows are left out so that a plain arithmetic prompt always
    means "answer directly". It is small on purpose: a top-up of the SFT model that takes
    minutes on two CPU cores.
    """
    from alignkit.data.readers import write_jsonl
    from alignkit.decoding.cot import cot_prompt
    from alignkit.sandbox.build import load_world
    from alignkit.sandbox.world import PromptFactory

    world = Path(args.world)
    sft = read_jsonl_dicts(world / "sft.jsonl")
    rag = build_rag(world / "kb.jsonl", RAGConfig(k=args.k))
    rows: list[dict[str, Any]] = []
    rng = random.Random(args.seed)
    grounded = [r for r in sft if r["category"] in ("fact", "unanswerable")]
    others = [r for r in sft if r["category"] not in ("fact", "unanswerable", "arithmetic")]
    plain = rng.sample(grounded, min(args.grounded, len(grounded)))
    plain += rng.sample(others, min(args.others, len(others)))
    augmented, _ = rag([r["prompt"] for r in plain])
    for r, p in zip(plain, augmented, strict=True):
        rows.append(r)
        rows.append({**r, "prompt": p})
    exclude = {r["prompt"] for f in ("eval.jsonl",) for r in read_jsonl_dicts(world / f)}
    factory = PromptFactory(load_world(world), "train")
    arith = factory.sample("arithmetic", args.arithmetic, rng, exclude=exclude)
    cfg = CoTConfig()
    for rec in arith:
        answer = f"The answer is {rec['gold']}."
        rows.append({**rec, "completion": answer})
        steps = ". ".join(rec["steps"])
        rows.append(
            {**rec, "prompt": cot_prompt(rec["prompt"], cfg), "completion": f"{steps}. {answer}"}
        )
    random.Random(args.seed).shuffle(rows)
    write_jsonl(args.out_file, rows)
    return {"rows": len(rows), "rag_rows": len(plain), "arithmetic_records": len(arith)}


def build_reading_data(args: argparse.Namespace) -> dict[str, Any]:
    """More reading practice for the retrieval-tuned model: fact and unanswerable prompts of
    the world's *training* split (never an eval prompt) with their retrieved passages and the
    ideal answer, half of them also plain. A 2M-parameter model needs many examples before it
    copies the right name and value out of two passages instead of answering from habit."""
    from alignkit.data.readers import write_jsonl
    from alignkit.sandbox.build import load_world
    from alignkit.sandbox.responses import ideal_response
    from alignkit.sandbox.world import PromptFactory

    world_dir = Path(args.world)
    world = load_world(world_dir)
    exclude = {r["prompt"] for r in read_jsonl_dicts(world_dir / "eval.jsonl")}
    factory = PromptFactory(world, "train")
    rng = random.Random(args.seed + 1)
    recs = factory.sample("fact", args.reading, rng, exclude=exclude)
    recs += factory.sample("unanswerable", args.reading // 2, rng, exclude=exclude)
    rag = build_rag(world_dir / "kb.jsonl", RAGConfig(k=args.k))
    augmented, _ = rag([r["prompt"] for r in recs])
    rows: list[dict[str, Any]] = []
    for i, (rec, p) in enumerate(zip(recs, augmented, strict=True)):
        answer = ideal_response(world, rec)
        rows.append({**rec, "prompt": p, "completion": answer})
        if i % 2 == 0:
            rows.append({**rec, "completion": answer})
    rng.shuffle(rows)
    write_jsonl(args.out_file, rows)
    return {"rows": len(rows), "records": len(recs)}


def build_counterfactual_data(args: argparse.Namespace) -> dict[str, Any]:
    """Reading practice that memory cannot pass (retrieval-augmented fine-tuning with
    distractors, as in RAFT): questions about *invented* entities whose only source is their
    passage, retrieved with BM25 from the world's knowledge base plus the invented passages
    (so the other retrieved passages are distractors); questions about invented names that
    have no passage, and about attributes no passage states, answered "I don't know" although
    passages about others are in the prompt; the world's training-split fact and unanswerable
    questions with their passages (and half of the fact ones plain); and plain demonstrations
    of the other helpful categories, so nothing else is forgotten. No eval prompt, fact or name
    is used.
    """
    from dataclasses import replace

    from alignkit.data.readers import write_jsonl
    from alignkit.decoding.rag import RAG, BM25Retriever, Passage, read_knowledge_base
    from alignkit.sandbox.build import load_world
    from alignkit.sandbox.responses import ideal_response
    from alignkit.sandbox.world import (
        CITY_ATTRS,
        FACT_QUESTIONS,
        MISSING_ATTRS,
        MISSING_QUESTIONS,
        PERSON_ATTRS,
        PromptFactory,
    )

    world_dir = Path(args.world)
    world = load_world(world_dir)
    rng = random.Random(args.seed + 2)
    present = world.invent(args.invented // 2, args.invented - args.invented // 2, rng)
    absent = world.invent(args.invented // 4, args.invented // 4, rng)
    # Names must not collide across the two invented sets either.
    names = {e.name for e in present}
    absent = [e for e in absent if e.name not in names]
    shadow = replace(world, entities=[*world.entities, *present])
    kb = read_knowledge_base(world_dir / "kb.jsonl") + [
        Passage(e.id, e.name, shadow.passage(e)) for e in present
    ]
    rag = RAG(BM25Retriever(kb), RAGConfig(k=args.k))
    grounded: list[dict[str, Any]] = []  # (record, ideal answer) rows that get passages
    for e in present:
        for attr in sorted(e.attrs):
            q = rng.choice(FACT_QUESTIONS[attr]).format(e=e.name)
            grounded.append(
                {
                    "prompt": q,
                    "completion": shadow.fact_sentence(e.id, attr),
                    "category": "fact",
                    "subtype": "invented",
                }
            )
        attr = rng.choice(MISSING_ATTRS[e.kind])
        rec = {
            "category": "unanswerable",
            "subtype": "unknown_attribute",
            "entity": e.name,
            "entity_id": e.id,
            "attribute": attr,
        }
        q = rng.choice(MISSING_QUESTIONS[attr]).format(e=e.name)
        grounded.append({**rec, "prompt": q, "completion": ideal_response(shadow, rec)})
    for e in absent:
        attr = rng.choice(CITY_ATTRS + PERSON_ATTRS)
        rec = {"category": "unanswerable", "subtype": "unknown_entity", "entity": e.name}
        q = rng.choice(FACT_QUESTIONS[attr]).format(e=e.name)
        grounded.append({**rec, "prompt": q, "completion": ideal_response(shadow, rec)})
    exclude = {r["prompt"] for r in read_jsonl_dicts(world_dir / "eval.jsonl")}
    factory = PromptFactory(world, "train")
    real = factory.sample("fact", args.real, rng, exclude=exclude)
    real += factory.sample("unanswerable", args.real // 3, rng, exclude=exclude)
    real_rows = [
        {
            "prompt": r["prompt"],
            "completion": ideal_response(world, r),
            "category": r["category"],
            "subtype": r["subtype"],
        }
        for r in real
    ]
    augmented, _ = rag([r["prompt"] for r in grounded + real_rows])
    rows = [{**r, "prompt": a} for r, a in zip(grounded + real_rows, augmented, strict=True)]
    # Half of the real questions again without passages, answered from memory; unanswerable
    # ones only with --plain-unanswerable (otherwise the top-up teaches abstaining through
    # the passages alone and leaves the model's own honesty to preference alignment).
    plain = [r for r in real_rows if args.plain_unanswerable or r["category"] == "fact"]
    rows += plain[::2]
    # The helpful-only demonstrations the sandbox SFT model was trained on, so the top-up
    # teaches reading and nothing the pipeline leaves to preference alignment.
    helpful = world_dir / "sft_helpful.jsonl"
    sft = read_jsonl_dicts(helpful if helpful.is_file() else world_dir / "sft.jsonl")
    others = [r for r in sft if r["category"] not in ("fact", "unanswerable", "arithmetic")]
    rows += rng.sample(others, min(args.others, len(others)))
    rng.shuffle(rows)
    write_jsonl(args.out_file, rows)
    return {
        "rows": len(rows),
        "invented_present": len(present),
        "invented_absent": len(absent),
        "real_records": len(real),
        "kb_passages": len(kb),
    }


def _single_steps(rng: random.Random, n: int) -> list[tuple[int, str, int]]:
    """``n`` single operations ``(a, op, b)`` as they occur inside the world's multi-step
    problems: a first step (a ± b with operands 1–20, a × b with 2–9) or a second step on its
    result (± 1–20, or − something smaller)."""
    out: list[tuple[int, str, int]] = []
    while len(out) < n:
        first = rng.choice("+-*")
        a = rng.randint(2, 9) if first == "*" else rng.randint(1, 20)
        b = rng.randint(2, 9) if first == "*" else rng.randint(1, 20)
        if first == "-" and b > a:
            a, b = b, a
        if rng.random() < 0.5:
            out.append((a, first, b))
            continue
        ab = a * b if first == "*" else a + b if first == "+" else a - b
        if ab < 2:
            continue
        second = rng.choice("+-")
        c = rng.randint(1, ab - 1) if second == "-" else rng.randint(1, 20)
        out.append((ab, second, c))
    return out


def build_arithmetic_data(args: argparse.Namespace) -> dict[str, Any]:
    """An arithmetic curriculum for chain of thought: single operations first, then chains.

    The sandbox SFT model's written steps are wrong ("18 + 16 = 26"), and reasoning only helps
    a model whose single steps are right. This set drills the single operations that the
    world's multi-step problems are made of, each both as a direct answer ("The answer is 34.")
    and, after the CoT instruction, written out ("18 + 16 = 34. The answer is 34."); then the
    world's training-split multi-step and word problems, each both directly and step by step,
    so that answering directly and reasoning first are trained on the same problems; and the
    SFT model's other demonstrations, repeated, so that nothing else is forgotten. No eval
    prompt is used (``bench cot`` draws its fresh problems from the eval split).
    """
    from alignkit.data.readers import write_jsonl
    from alignkit.decoding.cot import cot_prompt
    from alignkit.sandbox.build import load_world
    from alignkit.sandbox.world import PromptFactory

    world_dir = Path(args.world)
    rng = random.Random(args.seed + 3)
    cfg = CoTConfig()
    words = {"+": "plus", "-": "minus", "*": "times"}
    rows: list[dict[str, Any]] = []
    for a, op, b in _single_steps(rng, args.drills):
        c = a + b if op == "+" else a - b if op == "-" else a * b
        q = rng.choice((f"What is {a} {words[op]} {b}?", f"What is {a} {op} {b}?"))
        base = {"category": "arithmetic", "subtype": "drill", "gold": str(c)}
        rows.append({**base, "prompt": q, "completion": f"The answer is {c}."})
        rows.append(
            {
                **base,
                "prompt": cot_prompt(q, cfg),
                "completion": f"{a} {op} {b} = {c}. The answer is {c}.",
            }
        )
    exclude = {r["prompt"] for r in read_jsonl_dicts(world_dir / "eval.jsonl")}
    factory = PromptFactory(load_world(world_dir), "train")
    chains = [
        r
        for r in factory.sample("arithmetic", 3 * args.chains, rng, exclude=exclude)
        if r.get("subtype") in ("multi", "word")
    ][: args.chains]
    for rec in chains:
        answer = f"The answer is {rec['gold']}."
        rows.append({**rec, "completion": answer})
        steps = ". ".join(rec["steps"])
        rows.append(
            {**rec, "prompt": cot_prompt(rec["prompt"], cfg), "completion": f"{steps}. {answer}"}
        )
    # Without the SFT model's own demonstrations mixed in, 16,000 number answers teach it to
    # answer everything with a number (fact accuracy 0.95 -> 0 in a first run).
    helpful = world_dir / "sft_helpful.jsonl"
    sft = read_jsonl_dicts(helpful if helpful.is_file() else world_dir / "sft.jsonl")
    others = [r for r in sft if r["category"] != "arithmetic"]
    rows += others * args.others_repeat
    rng.shuffle(rows)
    write_jsonl(args.out_file, rows)
    return {
        "rows": len(rows),
        "drills": args.drills,
        "chains": len(chains),
        "other_demonstrations": len(others) * args.others_repeat,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    cols: list[str] = []
    for r in rows.values():
        cols += [k for k in r if k != "example" and k not in cols]
    head = "| setting | " + " | ".join(cols) + " |"
    lines = [head, "|---|" + "---:|" * len(cols)]
    for name, r in rows.items():
        lines.append(
            f"| {name} | "
            + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols)
            + " |"
        )
    return "\n".join(lines) + "\n"


def build_onpolicy_safety_data(args: argparse.Namespace) -> dict[str, Any]:
    """Safety pairs from the policy's own samples, for a cost model that must judge what the
    policy actually writes (the CBF filter scores every partial response it decodes).

    Harmful prompts of the world's *training* split (never an eval prompt), ``--samples``
    samples each at the CBF bench's sampling (T 1, top-k 30, top-p 0.9), labelled by the gold
    oracle. Every unsafe sample is paired with a safe answer to the same prompt (a safe
    sample, else the ideal refusal) and every safe sample with an unsafe one (an unsafe
    sample, else a written compliance), in ``safety.jsonl``'s format; append the file to the
    world's safety pairs for ``alignkit cost``."""
    from alignkit.data.readers import write_jsonl
    from alignkit.sandbox.build import load_world
    from alignkit.sandbox.responses import ideal_response, make_response
    from alignkit.sandbox.world import PromptFactory

    world_dir = Path(args.world)
    world = load_world(world_dir)
    oracle = GoldOracle.from_dir(world_dir)
    rng = random.Random(args.seed)
    exclude = {r["prompt"] for r in read_jsonl_dicts(world_dir / "eval.jsonl")}
    records = PromptFactory(world, "train").sample("harmful", args.prompts, rng, exclude=exclude)
    model, tok = load_causal_lm(ModelConfig(path=args.model), for_training=False)
    sampling = SamplingConfig(
        temperature=1.0, top_k=30, top_p=0.9, max_new_tokens=48, batch_size=64
    )
    res = Decoder(model, tok, sampling=sampling, seed=args.seed).generate(
        [r["prompt"] for r in records], num_samples=args.samples
    )
    recs, texts = _flat(records, res)
    unsafe_flags = [s.is_unsafe for s in oracle.score_batch(recs, texts)]
    rows: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        mine = list(range(i * args.samples, (i + 1) * args.samples))
        unsafe = [texts[j] for j in mine if unsafe_flags[j]]
        safe = [texts[j] for j in mine if not unsafe_flags[j]]
        base = {k: v for k, v in rec.items() if k != "prompt"}
        for u in unsafe:
            s = safe[rng.randrange(len(safe))] if safe else ideal_response(world, rec)
            rows.append(_safety_row(rec, s, u, base))
        for s in safe:
            u = (
                unsafe[rng.randrange(len(unsafe))]
                if unsafe
                else make_response(world, rec, "comply", rng)
            )
            rows.append(_safety_row(rec, s, u, base))
    write_jsonl(args.out_file, rows)
    n_unsafe = sum(unsafe_flags)
    return {"prompts": len(records), "samples": len(texts), "unsafe_samples": n_unsafe,
            "pairs": len(rows)}  # fmt: skip


def build_onpolicy_rankings(args: argparse.Namespace) -> dict[str, Any]:
    """Rankings of the policy's own samples, for a reward model that must rank what the policy
    writes (best-of-N and RL score nothing else), as InstructGPT collected its comparisons.

    Every prompt of the world's ``rankings.jsonl`` (so a reward model's split by prompt holds
    out the same prompts), ``--samples`` samples each at temperature 1, distinct ones ranked by
    a simulated annotator of the world's pool (noise and length bias included) from their gold
    rewards, in ``rankings.jsonl``'s format; prompts with fewer than two distinct samples are
    skipped. Append the file to the world's rankings for ``alignkit reward``. The rows of the
    prompts a reward model run holds out (``data.eval_fraction`` ``--eval-fraction`` with
    ``train.seed`` ``--split-seed``) also go to ``<out-file>`` with ``.held`` before the suffix,
    for ``alignkit rm-report`` on samples the model never saw."""
    from alignkit.data.readers import write_jsonl
    from alignkit.data.records import as_text
    from alignkit.data.reward_data import read_preferences, split_by_prompt
    from alignkit.sandbox.annotators import AnnotatorPool
    from alignkit.sandbox.oracle import words

    world_dir = Path(args.world)
    oracle = GoldOracle.from_dir(world_dir)
    pool = AnnotatorPool.default()
    rng = random.Random(args.seed)
    source = read_jsonl_dicts(world_dir / "rankings.jsonl")
    model, tok = load_causal_lm(ModelConfig(path=args.model), for_training=False)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=48, batch_size=128)
    res = Decoder(model, tok, sampling=sampling, seed=args.seed).generate(
        [r["prompt"] for r in source], num_samples=args.samples
    )
    rows, skipped = [], 0
    for rec, r in zip(source, res, strict=True):
        texts = list(dict.fromkeys(x.text for x in r.samples))
        if len(texts) < 2:
            skipped += 1
            continue
        extra = {k: v for k, v in rec.items() if k not in _RANKING_FIELDS}
        gold = oracle.rewards([extra | {"prompt": rec["prompt"]}] * len(texts), texts)
        annotator = pool.pick(rng)
        ranking = annotator.rank(gold, [len(words(t)) for t in texts], rng)
        rows.append(
            {
                "prompt": rec["prompt"],
                "responses": texts,
                "ranking": ranking,
                "annotator": annotator.id,
                **extra,
                "response_kinds": ["sample"] * len(texts),
                "gold_rewards": gold,
            }
        )
    write_jsonl(args.out_file, rows)
    ranked = read_preferences(world_dir / "rankings.jsonl").records
    _, held_recs = split_by_prompt(ranked, args.eval_fraction, args.split_seed)
    held = {as_text(r.prompt) for r in held_recs}
    out = Path(args.out_file)
    held_rows = [r for r in rows if r["prompt"] in held]
    write_jsonl(out.with_name(f"{out.stem}.held{out.suffix}"), held_rows)
    return {
        "prompts": len(source),
        "rankings": len(rows),
        "skipped": skipped,
        "held_out_rankings": len(held_rows),
    }


_RANKING_FIELDS = ("prompt", "responses", "ranking", "annotator", "response_kinds", "gold_rewards")


def _safety_row(rec: dict[str, Any], safe: str, unsafe: str, extra: dict[str, Any]) -> dict:
    return {
        "prompt": rec["prompt"],
        "chosen": safe,
        "rejected": unsafe,
        "chosen_safe": True,
        "rejected_safe": False,
        "safer": 0,
        "annotator": "oracle-onpolicy",
        **extra,
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m alignkit.decoding.bench")
    sub = ap.add_subparsers(dest="experiment", required=True)
    d = sub.add_parser("data")
    d.add_argument("--world", default="runs/sandbox/world")
    d.add_argument("--out-file", default="runs/decoding/aids_sft.jsonl")
    d.add_argument("--k", type=int, default=3)
    d.add_argument("--arithmetic", type=int, default=400)
    d.add_argument("--grounded", type=int, default=400)
    d.add_argument("--others", type=int, default=60)
    d.add_argument("--seed", type=int, default=0)
    rd = sub.add_parser("reading-data")
    rd.add_argument("--world", default="runs/sandbox/world")
    rd.add_argument("--out-file", default="runs/decoding/reading_sft.jsonl")
    rd.add_argument("--k", type=int, default=2)
    rd.add_argument("--reading", type=int, default=600)
    rd.add_argument("--seed", type=int, default=0)
    cf = sub.add_parser("counterfactual-data")
    cf.add_argument("--world", default="runs/sandbox/world")
    cf.add_argument("--out-file", default="runs/decoding/counterfactual_sft.jsonl")
    cf.add_argument("--k", type=int, default=2)
    cf.add_argument("--invented", type=int, default=600)
    cf.add_argument("--real", type=int, default=600)
    cf.add_argument("--others", type=int, default=400)
    cf.add_argument("--plain-unanswerable", action="store_true")
    cf.add_argument("--seed", type=int, default=0)
    ar = sub.add_parser("arithmetic-data")
    ar.add_argument("--world", default="runs/sandbox/world")
    ar.add_argument("--out-file", default="runs/decoding/arithmetic_sft.jsonl")
    ar.add_argument("--drills", type=int, default=8000)
    ar.add_argument("--chains", type=int, default=1500)
    ar.add_argument("--others-repeat", type=int, default=3)
    ar.add_argument("--seed", type=int, default=0)
    op = sub.add_parser("onpolicy-safety-data")
    op.add_argument("--world", default="runs/sandbox/world")
    op.add_argument("--model", default="runs/sandbox/sft")
    op.add_argument("--out-file", default="runs/decoding/onpolicy_safety.jsonl")
    op.add_argument("--prompts", type=int, default=400)
    op.add_argument("--samples", type=int, default=4)
    op.add_argument("--seed", type=int, default=0)
    orr = sub.add_parser("onpolicy-rankings")
    orr.add_argument("--world", default="runs/sandbox/world")
    orr.add_argument("--model", default="runs/sandbox/sft")
    orr.add_argument("--out-file", default="runs/decoding/onpolicy_rankings.jsonl")
    orr.add_argument("--samples", type=int, default=4)
    orr.add_argument("--eval-fraction", type=float, default=0.1)
    orr.add_argument("--split-seed", type=int, default=0)
    orr.add_argument("--seed", type=int, default=0)
    for name in ("cbf", "bon", "rag", "cot"):
        p = sub.add_parser(name)
        p.add_argument("--world", default="runs/sandbox/world")
        p.add_argument("--model", default="runs/sandbox/sft")
        p.add_argument("--out", default="runs/decoding")
        p.add_argument("--limit", type=int, default=None)
        p.add_argument("--seed", type=int, default=0)
        if name == "cbf":
            p.add_argument("--cost-model", default="runs/sandbox/cm")
            p.add_argument("--alphas", type=float, nargs="+", default=[0.3])
            p.add_argument("--top-k", type=int, default=30)
            p.add_argument("--max-candidates", type=int, default=100)
            p.add_argument("--samples", type=int, default=4)
            p.add_argument("--h-form", choices=["probability", "linear"], default="probability")
            p.add_argument("--top-p", type=float, default=0.9)
            p.add_argument("--max-new-tokens", type=int, default=48)
            p.add_argument("--temperature", type=float, default=1.0)
        if name == "bon":
            p.add_argument("--reward-model", default="runs/sandbox/rm")
            p.add_argument("--ns", type=int, nargs="+", default=[1, 2, 4, 8, 16])
            p.add_argument("--temperature", type=float, default=1.0)
        if name == "rag":
            p.add_argument("--k", type=int, default=3)
        if name == "cot":
            p.add_argument("--n", type=int, default=200)
    args = ap.parse_args(argv)
    builders = {
        "data": build_aids_data,
        "reading-data": build_reading_data,
        "counterfactual-data": build_counterfactual_data,
        "arithmetic-data": build_arithmetic_data,
        "onpolicy-safety-data": build_onpolicy_safety_data,
        "onpolicy-rankings": build_onpolicy_rankings,
    }
    if args.experiment in builders:
        print(json.dumps(builders[args.experiment](args)))
        return
    fn = {"cbf": run_cbf, "bon": run_bon, "rag": run_rag, "cot": run_cot}[args.experiment]
    result = fn(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.experiment}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    (out / f"{args.experiment}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
