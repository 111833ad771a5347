"""Measure the peak tensor memory of real training steps, to check ``alignkit plan`` against.

What is measured: the largest total size of live CPU tensors while the Trainer runs (from
``Trainer.begin`` to ``Trainer.end``), read from torch's memory profiler timeline. Tensors
the steps touch but allocated before (the weights) are counted from their first use, so
the peak covers weights, gradients, optimizer state, saved activations, logits and the
optimizer's temporaries: exactly the items the planner adds up. Not measured: the Python
interpreter and libraries, tokenised data held as Python lists, and allocator slack (peak
RSS mixes all three in, which is why RSS is not what the planner is compared with).

Used by tests/integration/test_planner_memory.py and bench/plan_vs_measured.py.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


@contextlib.contextmanager
def trainer_peak(record: dict[str, Any]) -> Iterator[None]:
    """Profile every Trainer run inside the block; ``record['peak']`` gets the largest peak
    and ``record['rows']`` the shapes of the model inputs seen (to check the token count)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    from alignkit.engine import loop

    begin, end = loop.Trainer.begin, loop.Trainer.end
    state: dict[str, Any] = {}
    record.setdefault("peak", 0)
    record.setdefault("shapes", set())

    def shapes_hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            record["shapes"].add(tuple(ids.shape))

    def patched_begin(self: Any) -> dict[str, Any]:
        out = begin(self)
        state["hook"] = self.unwrapped.register_forward_pre_hook(shapes_hook, with_kwargs=True)
        state["prof"] = profile(
            activities=[ProfilerActivity.CPU],
            profile_memory=True,
            record_shapes=True,
            with_stack=True,
        )
        state["prof"].__enter__()
        return out

    def patched_end(self: Any) -> None:
        prof = state.pop("prof", None)
        if prof is not None:
            prof.__exit__(None, None, None)
            state.pop("hook").remove()
            _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
            record["peak"] = max(record["peak"], max(sum(s) for s in sizes))
        end(self)

    loop.Trainer.begin, loop.Trainer.end = patched_begin, patched_end  # type: ignore[method-assign]
    try:
        yield
    finally:
        loop.Trainer.begin, loop.Trainer.end = begin, end  # type: ignore[method-assign]


def make_probe_model(root: Path, tokenizer_dir: Path, **overrides: Any) -> Path:
    """A realistically proportioned small Llama (hidden 256, 4 layers, GQA, vocab 4096)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = dict(
        vocab_size=4096,  # the tokenizer uses the first ids; the embedding is real-sized
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    cfg.update(overrides)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(root), safe_serialization=True)
    tok.save_pretrained(str(root))
    return root


def long_rows(n: int, words: int, seed: int = 0) -> list[list[str]]:
    """Word lists long enough that every example is truncated to exactly max_length tokens:
    no padding, so the micro-batch holds B × L real tokens, as the planner assumes."""
    from tiny import WORDS

    rng = random.Random(seed)
    return [[rng.choice(WORDS) for _ in range(words)] for _ in range(n)]


def write_sft(path: Path, n: int = 32) -> Path:
    rows = [{"prompt": " ".join(w[:8]), "completion": " ".join(w[8:])} for w in long_rows(n, 400)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_pairs(path: Path, n: int = 32) -> Path:
    ws = long_rows(2 * n, 400)
    rows = [
        {"prompt": " ".join(a[:8]), "chosen": " ".join(a[8:]), "rejected": " ".join(b[8:])}
        for a, b in zip(ws[::2], ws[1::2], strict=True)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
