"""The raw ceiling: what this machine can do with the same model and batches, no framework.

* fp32 matmul GFLOP/s: ``torch.mm`` of two 1024×1024 matrices in a loop (the denominator of
  every MFU figure below);
* a bare training step (forward, backward, AdamW step) of the benchmark Llama over the SFT
  workload's first batches, pre-built once (collation is not timed): padded
  (``[8, longest]`` + attention mask) and unpadded (the same examples packed into rows of at
  most 256 tokens with restarting position ids).

Model FLOPs of a step (documented in README): Σ over sequences of ``6·N·s + 12·L·d·s²`` with
``s`` the real (non-padding) length of each sequence, ``N`` the parameters that take part in
matmuls (transformer blocks + LM head; the embedding lookup is not a matmul), ``L`` layers and
``d`` the hidden size: 6·N per token for forward+backward of the dense layers, and 12·L·d·s
per token for the attention scores and the weighted sum (QKᵀ and AV, forward + backward),
without halving for causality, as in the PaLM paper's MFU definition.

Usage: ``python bench/ceiling.py STEPS OUT.json`` (alignkit's venv: it needs only torch and
transformers, plus alignkit's collator to build the batches).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

WORK = Path(__file__).resolve().parent / "work"
BATCH = 8
WARMUP = 3


def matmul_gflops(n: int = 1024, reps: int = 30) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def model_shape() -> dict[str, int]:
    """N (matmul parameters), L, d of the benchmark model, from its config."""
    cfg = json.loads((WORK / "policy" / "config.json").read_text())
    d, layers, v = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    inter = cfg["intermediate_size"]
    heads, kv = (
        cfg["num_attention_heads"],
        cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
    )
    attn = d * d * 2 + 2 * d * (d // heads) * kv  # q, o + k, v
    per_layer = attn + 3 * d * inter + 2 * d  # + two RMSNorm weights
    return {"N": layers * per_layer + d * v, "L": layers, "d": d}


def step_flops(lengths: list[int], shape: dict[str, int]) -> float:
    """Model FLOPs of one training step over sequences of these real lengths."""
    n, layers, d = shape["N"], shape["L"], shape["d"]
    return float(sum(6 * n * s + 12 * layers * d * s * s for s in lengths))


def batches(packing: bool, steps: int) -> list[tuple[dict[str, Any], torch.Tensor, list[int]]]:
    from alignkit.data.collate import collate
    from alignkit.data.tokenize import Example

    rows = [json.loads(line) for line in (WORK / "trl_sft.jsonl").read_text().splitlines()]
    out = []
    for k in range(steps):
        chunk = rows[k * BATCH : (k + 1) * BATCH]
        exs = [Example(r["input_ids"], r["completion_mask"]) for r in chunk]
        b = collate(exs, 0, packing, 256)
        out.append((b.model_inputs(), b.labels, [len(e) for e in exs]))
    return out


def bare(packing: bool, steps: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(WORK / "policy"))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    data = batches(packing, steps)
    times, tokens = [], []
    for inputs, labels, lengths in data:
        t = time.perf_counter()
        logits = model(**inputs).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        tokens.append(sum(lengths))
    return {"step_s": times, "tokens": tokens, "lengths": [d[2] for d in data]}


def main() -> None:
    steps, out = int(sys.argv[1]), Path(sys.argv[2])
    res: dict[str, Any] = {
        "gflops_fp32_matmul": matmul_gflops(),
        "threads": torch.get_num_threads(),
    }
    res["shape"] = model_shape()
    for name, packing in (("padded", False), ("unpadded", True)):
        r = bare(packing, steps)
        res[name] = r
    res["gflops_fp32_matmul_after"] = matmul_gflops()
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
