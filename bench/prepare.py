"""Build the shared benchmark inputs once: tokenizer, tiny Llama, synthetic data (bench/work/).

Runs in alignkit's venv. Both frameworks read the *same* files:

* ``tokenizer/`` and ``policy/`` (a LlamaForCausalLM, hidden 256, 4 layers, ~5M parameters,
  randomly initialised with a fixed seed) and ``rm/`` (the same backbone with a
  ``score`` head, a LlamaForSequenceClassification), so the reward head starts identical on
  both sides instead of being drawn by two different initialisers;
* ``sft.jsonl`` / ``pairs.jsonl`` / ``prompts.jsonl``: sandbox-like prompt/answer text whose
  token lengths resemble an instruction set (prompts 16–110 tokens, answers 12–140);
* ``trl_*.jsonl``: the same examples *tokenised by alignkit* and written in alignkit's data
  order, which TRL then reads sequentially. Identical token ids and identical batches are
  what make the step-0 losses comparable; any template or BOS difference would otherwise
  change the maths, not the speed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

WORK = Path(__file__).resolve().parent / "work"
SEED = 0
BATCH = 8
MAX_LEN = 256
N_SFT = 480
N_PAIRS = 96
# More pairs, drawn after everything else from their own stream so that the tokenizer and the
# SFT data stay those of earlier runs: 192 pairs are 24 batches, so the default 15 steps stay
# in the first epoch, the only one whose order TRL replays (``trl_pairs.jsonl``). With 96,
# steps 13+ started alignkit's reshuffled second epoch while TRL repeated the first, and the
# last-step losses compared different batches.
N_EXTRA_PAIRS = 96
N_PROMPTS = 64
INPUTS_VERSION = 2  # bump when the generated inputs change: bench/work is then rebuilt

SYLLABLES = [
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "gu", "fi", "he", "ja",
    "qu", "we", "xi", "yo", "be", "ci", "an", "el", "in", "or", "us", "ta", "ro", "li", "me",
]  # fmt: skip
TOPICS = ["code", "math", "sandbox", "shell", "files", "test", "refusal", "facts", "summary"]


_ZIPF = [1.0 / (r + 8) for r in range(6000)]


def _lexicon(rng: random.Random, n: int = 6000) -> list[str]:
    words = sorted(
        {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(n)}
    )
    rng.shuffle(words)
    return words


def _sentence(rng: random.Random, lex: list[str], n_words: int) -> str:
    # Zipf-like word frequencies, as in natural text: a few words are very common.
    words = rng.choices(lex, weights=_ZIPF[: len(lex)], k=n_words)
    out, k = [], 0
    while k < len(words):
        chunk = rng.randint(5, 14)
        out.append(" ".join(words[k : k + chunk]).capitalize() + rng.choice([".", ".", "?", ":"]))
        k += chunk
    return " ".join(out)


def _prompt(rng: random.Random, lex: list[str]) -> str:
    topic = rng.choice(TOPICS)
    return f"[{topic}] Task: " + _sentence(rng, lex, rng.randint(12, 80))


def _answer(rng: random.Random, lex: list[str], lo: int = 10, hi: int = 120) -> str:
    return _sentence(rng, lex, rng.randint(lo, hi))


def make_tokenizer(out: Path, lines: list[str]) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|bos|>", "<|end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|end|>"
    )
    fast.save_pretrained(str(out))


def make_models(tok_dir: Path) -> dict[str, Any]:
    import torch
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
    )

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(SEED)
    lm = LlamaForCausalLM(cfg)
    lm.generation_config.pad_token_id = tok.pad_token_id
    lm.save_pretrained(str(WORK / "policy"))
    tok.save_pretrained(str(WORK / "policy"))
    rm_cfg = LlamaConfig.from_dict({**cfg.to_dict(), "num_labels": 1})
    rm = LlamaForSequenceClassification(rm_cfg)
    rm.model.load_state_dict(lm.model.state_dict())
    torch.manual_seed(SEED + 1)
    # alignkit's own head init (std 1/(hidden+1)); saved, so both sides load the same head.
    torch.nn.init.normal_(rm.score.weight, std=1.0 / (cfg.hidden_size + 1))
    rm.save_pretrained(str(WORK / "rm"))
    tok.save_pretrained(str(WORK / "rm"))
    return {
        "parameters": sum(p.numel() for p in lm.parameters()),
        "non_embedding_parameters": sum(p.numel() for p in lm.model.layers.parameters()),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "layers": cfg.num_hidden_layers,
    }


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def trl_views(tok_dir: Path) -> dict[str, Any]:
    """alignkit's tokenisation of every file, in alignkit's batch order, for TRL to read."""
    from alignkit.data.collate import batch_plan
    from alignkit.data.pairs import GroupTokenizer, tokenize_comparisons
    from alignkit.data.readers import read_records
    from alignkit.data.tokenize import tokenize_demonstrations
    from alignkit.models.load import load_tokenizer

    tok = load_tokenizer(str(tok_dir), False)
    stats: dict[str, Any] = {}
    recs = read_records(str(WORK / "sft.jsonl"), "sft")
    ex, st = tokenize_demonstrations(tok, recs, MAX_LEN, "right", "none", True, source="sft")
    order = [i for mb in batch_plan(len(ex), BATCH, SEED, 0) for i in mb]
    rows = []
    for i in order:
        e = ex[i]
        rows.append({"input_ids": e.input_ids, "completion_mask": e.loss_mask})
    _write(WORK / "trl_sft.jsonl", rows)
    lens = [len(e) for e in ex]
    stats["sft"] = {"examples": len(ex), "mean_tokens": sum(lens) / len(lens), "max": max(lens)}

    from alignkit.data.reward_data import read_preferences

    read = read_preferences(str(WORK / "pairs.jsonl"), "pairwise", None, None, "error", None)
    gt = GroupTokenizer(tok, MAX_LEN, None, "none")
    groups = tokenize_comparisons(gt, list(read.records), "pairs")
    order = [i for mb in batch_plan(len(groups), BATCH, SEED, 0) for i in mb]
    rows = []
    for i in order:
        g = groups[i]
        best, worst = g.order[0], g.order[1]
        rows.append(
            {
                "prompt_ids": g.prompt_ids,
                "chosen_ids": g.responses[best],
                "rejected_ids": g.responses[worst],
            }
        )
    _write(WORK / "trl_pairs.jsonl", rows)
    lens = [len(g.prompt_ids) + len(r) for g in groups for r in g.responses]
    stats["pairs"] = {"groups": len(groups), "mean_row_tokens": sum(lens) / len(lens)}
    return stats


def _pairs(rng: random.Random, lex: list[str], n: int) -> list[dict[str, str]]:
    """``n`` (prompt, chosen, rejected) rows, drawn from ``rng`` in that order."""
    rows = []
    for _ in range(n):
        p = _prompt(rng, lex)
        rows.append({"prompt": p, "chosen": _answer(rng, lex), "rejected": _answer(rng, lex)})
    return rows


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    meta_file = WORK / "meta.json"
    if meta_file.exists():
        if json.loads(meta_file.read_text()).get("inputs_version") == INPUTS_VERSION:
            print(f"[bench] inputs exist in {WORK}")
            return
        print(f"[bench] inputs in {WORK} are from an older harness: rebuilding")
    rng = random.Random(SEED)
    lex = _lexicon(rng)
    sft = [{"prompt": _prompt(rng, lex), "completion": _answer(rng, lex)} for _ in range(N_SFT)]
    pairs = _pairs(rng, lex, N_PAIRS)
    prompts = [{"prompt": _prompt(rng, lex)} for _ in range(N_PROMPTS)]
    extra = _pairs(random.Random(SEED + 1), lex, N_EXTRA_PAIRS)
    _write(WORK / "sft.jsonl", sft)
    _write(WORK / "prompts.jsonl", prompts)
    lines = [r["prompt"] + " " + r["completion"] for r in sft] + [
        r["prompt"] + " " + r["chosen"] for r in pairs
    ]
    _write(WORK / "pairs.jsonl", pairs + extra)  # the tokenizer above saw only the first 96
    tok_dir = WORK / "tokenizer"
    make_tokenizer(tok_dir, lines)
    meta = {
        "inputs_version": INPUTS_VERSION,
        "model": make_models(tok_dir),
        "data": trl_views(tok_dir),
    }
    (WORK / "meta.json").write_text(json.dumps(meta, indent=2))
    print(f"[bench] wrote {WORK}: {json.dumps(meta)}")


if __name__ == "__main__":
    main()
