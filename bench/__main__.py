"""``python -m bench``: alignkit vs TRL on the same model, data, hyper-parameters and seed.

1. Creates ``bench/.trl-venv`` (torch 2.13 CPU + TRL) if missing, and the shared inputs in
   ``bench/work/`` (prepare.py).
2. Measures the raw ceiling (ceiling.py): fp32 matmul GFLOP/s and a bare forward+backward.
3. Runs every workload in both frameworks, each run in its own child process (so peak RSS is
   that run's alone), alternating which framework goes first so drift on a shared machine hits
   both. Before every measured run it waits for a quiet machine (1-minute load ≤ 1.3 and no
   other training process), up to a total waiting budget; a run started on a busy machine is
   flagged in the results, never hidden.
4. Writes ``bench/results/<date>-<workload>.json`` and ``bench/results/latest.md``.

Nothing here asserts a timing; targets are reported, not tested.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
RESULTS = HERE / "results"
TRL_VENV = HERE / ".trl-venv"
TRL_PY = TRL_VENV / "bin" / "python"
WORKLOADS = ["sft_padded", "sft_packed", "rm", "dpo", "grpo"]
BATCH = 8
QUIET_LOAD = 1.3
TRAINING_HINTS = ("alignkit ", "-m alignkit", "train", "accelerate")
# Loss at step 0 must agree to this relative tolerance (TRL's fused LM head and alignkit's
# cross-entropy sum in different orders: ~1e-5 apart, never 1e-3).
LOSS_RTOL = 1e-3
TARGETS = {
    "sft_packed": "tokens/s ≥ 2× TRL, RSS ≤ 0.7×",
    "rm": "tokens/s ≥ 2× TRL, RSS ≤ 0.7×",
    "dpo": "tokens/s ≥ 2× TRL, RSS ≤ 0.7×",
    "grpo": "s/step ≤ 1/3 of TRL",
}


# ------------------------------------------------------------------------------ environment


def ensure_trl_venv() -> str:
    """Create bench/.trl-venv with torch 2.13 CPU and TRL when it is missing."""
    if not TRL_PY.exists():
        print(f"[bench] creating {TRL_VENV} (torch==2.13.0 + trl) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
        subprocess.run(
            [str(TRL_PY), "-m", "pip", "install", "-q", "torch==2.13.0", "trl"], check=True
        )
    out = subprocess.run(
        [str(TRL_PY), "-c", "import trl, torch; print(trl.__version__, torch.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def other_trainings() -> list[str]:
    """Command lines of python/alignkit processes that are not this benchmark."""
    mine = {os.getpid(), os.getppid()}
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) in mine:
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        python_job = ("alignkit" in cmd or "python" in cmd) and "bench" not in cmd
        if python_job and "pytest" not in cmd and any(k in cmd for k in TRAINING_HINTS):
            found.append(cmd.strip()[:160])
    return found


class Quiet:
    """Waits for a quiet machine before each measured run, within a total waiting budget."""

    def __init__(self, budget_s: float, enabled: bool) -> None:
        self.budget_s = budget_s
        self.enabled = enabled
        self.waited_s = 0.0

    def wait(self) -> dict[str, Any]:
        while self.enabled and self.waited_s < self.budget_s:
            load, others = loadavg(), other_trainings()
            if load <= QUIET_LOAD and not others:
                break
            print(
                f"[bench] busy (load {load:.2f}, {len(others)} other trainings); waiting 60 s "
                f"({self.waited_s:.0f}/{self.budget_s:.0f} s of waiting used)",
                flush=True,
            )
            time.sleep(60)
            self.waited_s += 60
        load, others = loadavg(), other_trainings()
        return {
            "load_before": load,
            "others_before": len(others),
            "quiet": load <= QUIET_LOAD and not others,
        }


# ------------------------------------------------------------------------------ running


def run_child(framework: str, workload: str, steps: int, quiet: Quiet) -> dict[str, Any]:
    py = str(TRL_PY) if framework == "trl" else sys.executable
    script = HERE / ("trl_side.py" if framework == "trl" else "ak_side.py")
    tmp = WORK / "runs"
    tmp.mkdir(parents=True, exist_ok=True)
    out = tmp / f"{framework}-{workload}.json"
    out.unlink(missing_ok=True)
    state = quiet.wait()
    env = {**os.environ, "PYTHONPATH": str(HERE), "TOKENIZERS_PARALLELISM": "false"}
    t = time.perf_counter()
    proc = subprocess.run(
        [py, str(script), workload, str(steps), str(out)], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"{framework} {workload} failed (rc {proc.returncode}):\n{tail}")
    res = json.loads(out.read_text())
    res.update(state, wall_s=wall, load_after=loadavg())
    print(
        f"[bench] {framework:8s} {workload:10s} median {statistics.median(res['step_s'][-max(1, steps - 3) :]):.3f} s/step, "
        f"loss {res['losses'][0]:.5f} → {res['losses'][-1]:.5f}, RSS {res['peak_rss_mb']:.0f} MB, "
        f"load {state['load_before']:.2f}",
        flush=True,
    )
    return res


def run_ceiling(steps: int, quiet: Quiet) -> dict[str, Any]:
    out = WORK / "runs" / "ceiling.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    state = quiet.wait()
    subprocess.run([sys.executable, str(HERE / "ceiling.py"), str(steps), str(out)], check=True)
    res = json.loads(out.read_text())
    res.update(state, load_after=loadavg())
    return res


# ------------------------------------------------------------------------------ accounting


def _rows(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (WORK / name).read_text().splitlines()]


def step_lengths(workload: str, steps: int) -> list[list[int]] | None:
    """Real (non-padding) sequence lengths of every step's batch; identical on both sides
    because both read the same examples in the same order. None for GRPO (sampled)."""
    if workload.startswith("sft"):
        rows = _rows("trl_sft.jsonl")
        return [
            [len(r["input_ids"]) for r in rows[k * BATCH : (k + 1) * BATCH]] for k in range(steps)
        ]
    if workload in ("rm", "dpo"):
        rows = _rows("trl_pairs.jsonl")
        out = []
        for k in range(steps):
            chunk = rows[k * BATCH : (k + 1) * BATCH]
            out.append(
                [
                    len(r["prompt_ids"]) + len(r[c])
                    for r in chunk
                    for c in ("chosen_ids", "rejected_ids")
                ]
            )
        return out
    return None


def step_flops(
    lengths: list[int], shape: dict[str, int], matmul_params: int | None = None
) -> float:
    n = matmul_params if matmul_params is not None else shape["N"]
    return float(sum(6 * n * s + 12 * shape["L"] * shape["d"] * s * s for s in lengths))


def summarise(
    workload: str, runs: list[dict[str, Any]], warmup: int, ceiling: dict[str, Any]
) -> dict[str, Any]:
    """Median s/step over post-warm-up steps of all runs; tokens/s; MFU; loss check."""
    steps = len(runs[0]["step_s"])
    lengths = step_lengths(workload, steps)
    shape = ceiling["shape"]
    # A reward model has no LM head: its matmul parameters are the blocks and a 1-wide head.
    n_mm = shape["N"] - shape["d"] * 4096 + shape["d"] if workload == "rm" else None
    peak = max(ceiling["gflops_fp32_matmul"], ceiling.get("gflops_fp32_matmul_after", 0.0))
    times = [t for r in runs for t in r["step_s"][warmup:]]
    med = statistics.median(times)
    s: dict[str, Any] = {
        "median_step_s": med,
        "steps_timed": len(times),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "loss_first": runs[0]["losses"][0],
        "loss_last": runs[0]["losses"][-1],
        "loads": [r["load_before"] for r in runs],
        "all_quiet": all(r["quiet"] for r in runs),
    }
    if lengths is not None:
        timed = lengths[warmup:]
        tok = statistics.mean(sum(x) for x in timed)
        flops = statistics.mean(step_flops(x, shape, n_mm) for x in timed)
        if workload == "dpo":
            flops = flops  # policy forward+backward only: reference log-probs are precomputed
        s["real_tokens_per_step"] = tok
        s["tokens_per_s"] = tok / med
        s["mfu"] = flops / med / (peak * 1e9)
    return s


def loss_check(workload: str, ak: dict[str, Any], trl: dict[str, Any]) -> str:
    a, b = ak["loss_first"], trl["loss_first"]
    if workload == "grpo":
        return (
            "void as an equality: completions are sampled with each framework's own RNG stream, "
            "so step-0 batches differ (both losses are ≈0 by construction, ratio = 1)"
        )
    ok = abs(a - b) <= LOSS_RTOL * max(1.0, abs(a))
    if not ok:
        return f"VOID: step-0 losses differ ({a:.6f} vs {b:.6f}): not the same maths"
    note = "match"
    if workload == "dpo":
        note += " (log 2 by construction: policy = reference at step 0)"
    return note


def ceiling_summary(c: dict[str, Any], warmup: int) -> dict[str, Any]:
    peak = max(c["gflops_fp32_matmul"], c.get("gflops_fp32_matmul_after", 0.0))
    out: dict[str, Any] = {"gflops_fp32_matmul": peak, "load_before": c["load_before"]}
    for name in ("padded", "unpadded"):
        r = c[name]
        med = statistics.median(r["step_s"][warmup:])
        tok = statistics.mean(r["tokens"][warmup:])
        flops = statistics.mean(step_flops(x, c["shape"]) for x in r["lengths"][warmup:])
        out[name] = {
            "median_step_s": med,
            "tokens_per_s": tok / med,
            "mfu": flops / med / (peak * 1e9),
        }
    return out


# ------------------------------------------------------------------------------ report


def _f(x: float | None, fmt: str = "{:.0f}") -> str:
    return "–" if x is None else fmt.format(x)


def markdown(results: dict[str, dict[str, Any]], ceil: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"# alignkit vs TRL — {meta['date']}",
        "",
        f"Machine: {meta['machine']}; {meta['versions']}. Model: tiny Llama "
        f"({meta['model']['parameters']:,} parameters, hidden {meta['model']['hidden_size']}, "
        f"{meta['model']['layers']} layers, vocab {meta['model']['vocab_size']}), batch 8, max length 256, "
        f"{meta['steps']} steps ({meta['warmup']} warm-up) × {meta['reps']} run(s) per framework, "
        f"GRPO {meta['grpo_steps']} steps, alternating order.",
        "",
        f"Ceiling: fp32 matmul {ceil['gflops_fp32_matmul']:.1f} GFLOP/s; bare forward+backward+AdamW "
        f"padded {ceil['padded']['tokens_per_s']:.0f} real tokens/s (MFU {ceil['padded']['mfu']:.0%}), "
        f"unpadded {ceil['unpadded']['tokens_per_s']:.0f} tokens/s (MFU {ceil['unpadded']['mfu']:.0%}); "
        f"load before: {ceil['load_before']:.2f}.",
        "",
        "| workload | alignkit tok/s | TRL tok/s | ratio | alignkit s/step | TRL s/step | step ratio (TRL/ak) "
        "| RSS ak / TRL (MB) | RSS ratio | MFU ak / TRL | loss step 0 ak / TRL | last loss ak / TRL | step-0 check | load (ak; TRL) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w, r in results.items():
        a, t = r["alignkit"], r["trl"]
        ratio = a["tokens_per_s"] / t["tokens_per_s"] if "tokens_per_s" in a else None
        mfu = f"{a['mfu']:.0%} / {t['mfu']:.0%}" if "mfu" in a else "–"
        loads = f"{'/'.join(f'{x:.1f}' for x in a['loads'])}; {'/'.join(f'{x:.1f}' for x in t['loads'])}"
        if not (a["all_quiet"] and t["all_quiet"]):
            loads += " (busy)"
        lines.append(
            f"| {w} | {_f(a.get('tokens_per_s'))} | {_f(t.get('tokens_per_s'))} | {_f(ratio, '{:.2f}×')} "
            f"| {a['median_step_s']:.3f} | {t['median_step_s']:.3f} | {t['median_step_s'] / a['median_step_s']:.2f}× "
            f"| {a['peak_rss_mb']:.0f} / {t['peak_rss_mb']:.0f} | {a['peak_rss_mb'] / t['peak_rss_mb']:.2f} "
            f"| {mfu} | {a['loss_first']:.4f} / {t['loss_first']:.4f} | {a['loss_last']:.4f} / {t['loss_last']:.4f} "
            f"| {r['loss_check']} | {loads} |"
        )
    if "sft_packed" in results and "tokens_per_s" in results["sft_packed"]["alignkit"]:
        sft = results["sft_packed"]["alignkit"]["tokens_per_s"]
        lines += [
            "",
            f"SFT packed vs the bare unpadded ceiling: {sft / ceil['unpadded']['tokens_per_s']:.0%} "
            f"(target ≥ 50 %); SFT padded vs the padded ceiling: "
            + (
                f"{results['sft_padded']['alignkit']['tokens_per_s'] / ceil['padded']['tokens_per_s']:.0%}."
                if "sft_padded" in results
                else "–."
            ),
        ]
    lines += ["", "Targets: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()) + "."]
    return "\n".join(lines) + "\n"


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return f"{os.cpu_count()} × {cpu}, {int(mem) // 1024 // 1024} GiB RAM"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    ap.add_argument("--steps", type=int, default=15, help="optimizer steps per run (SFT/RM/DPO)")
    ap.add_argument("--grpo-steps", type=int, default=10, help="GRPO iterations per run")
    ap.add_argument("--warmup", type=int, default=3, help="steps excluded from the median")
    ap.add_argument("--reps", type=int, default=2, help="runs per framework and workload")
    ap.add_argument(
        "--wait-budget", type=float, default=2400, help="total seconds to wait for quiet"
    )
    ap.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    ap.add_argument("--tag", default="", help="suffix for result files (e.g. 'partial')")
    args = ap.parse_args(argv)
    if min(args.steps, args.grpo_steps) <= args.warmup + 1:
        ap.error("--steps and --grpo-steps must exceed --warmup + 1 (median of ≥ 2 steps)")

    versions = ensure_trl_venv()
    subprocess.run([sys.executable, str(HERE / "prepare.py")], check=True)
    inputs = json.loads((WORK / "meta.json").read_text())
    data = inputs["data"]
    for name, n in (("sft", data["sft"]["examples"]), ("pairs", data["pairs"]["groups"])):
        if args.steps * BATCH > n:
            print(
                f"[bench] warning: {args.steps} steps of {BATCH} exceed one epoch of {name} ({n}); TRL "
                "replays alignkit's first-epoch order only, so later losses compare different "
                "batches (timings stay comparable)",
                flush=True,
            )
    import torch

    meta: dict[str, Any] = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "versions": f"torch {torch.__version__}; TRL venv: trl/torch {versions}",
        "model": inputs["model"],
        "steps": args.steps,
        "grpo_steps": args.grpo_steps,
        "warmup": args.warmup,
        "reps": args.reps,
    }
    quiet = Quiet(args.wait_budget, not args.no_wait)
    ceiling = run_ceiling(args.steps, quiet)
    ceil = ceiling_summary(ceiling, args.warmup)
    print(f"[bench] ceiling: {json.dumps(ceil)}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    day = dt.date.today().isoformat()
    suffix = f"-{args.tag}" if args.tag else ""
    (RESULTS / f"{day}-ceiling{suffix}.json").write_text(
        json.dumps({"meta": meta, "summary": ceil, "raw": ceiling}, indent=1)
    )
    results: dict[str, dict[str, Any]] = {}
    order = ["alignkit", "trl"]
    for w in [w for w in args.workloads.split(",") if w]:
        steps = args.grpo_steps if w == "grpo" else args.steps
        raw: dict[str, list[dict[str, Any]]] = {"alignkit": [], "trl": []}
        for _ in range(args.reps):
            for fw in order:
                raw[fw].append(run_child(fw, w, steps, quiet))
            order.reverse()  # alternate who goes first
        r = {fw: summarise(w, raw[fw], args.warmup, ceiling) for fw in raw}
        r["loss_check"] = loss_check(w, r["alignkit"], r["trl"])
        results[w] = r
        (RESULTS / f"{day}-{w}{suffix}.json").write_text(
            json.dumps({"meta": meta, "summary": r, "raw": raw}, indent=1)
        )
        md = markdown(results, ceil, meta)
        (RESULTS / "latest.md").write_text(md)
    print(markdown(results, ceil, meta))


if __name__ == "__main__":
    main()
