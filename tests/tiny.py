"""Tiny, randomly initialised Hugging Face models and a tokenizer, built locally for tests.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in milliseconds on a few
sentences, and the models are 2-layer configs of real architectures (Llama, Qwen2, GPT-2), so
the recipes are exercised against the same code paths a user's checkpoint would take.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% else %}<|assistant|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

WORDS = [
    "the",
    "a",
    "is",
    "of",
    "and",
    "to",
    "what",
    "how",
    "why",
    "who",
    "where",
    "when",
    "which",
    "sky",
    "blue",
    "red",
    "green",
    "cat",
    "dog",
    "sun",
    "moon",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "plus",
    "minus",
    "times",
    "equals",
    "answer",
    "question",
    "hello",
    "world",
    "please",
    "sorry",
    "cannot",
    "help",
    "with",
    "that",
    "sure",
    "here",
    "you",
    "are",
    "yes",
    "no",
    "maybe",
    "list",
    "sort",
    "reverse",
    "count",
    "city",
    "river",
    "mountain",
    "name",
    "capital",
    "fact",
    "true",
    "false",
    "i",
    "do",
    "not",
    "know",
]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))))
    lines += [f"{a} plus {b} equals {a + b}" for a in range(10) for b in range(10)]
    return lines


def make_tokenizer(out: Path, vocab_size: int = 320, chat_template: bool = True) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|end|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return out


def make_model(arch: str, out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        AutoTokenizer,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    common = dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    if arch == "llama":
        cfg = LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=False,
            **common,
        )
        model = LlamaForCausalLM(cfg)
    elif arch == "qwen2":
        # transformers maps a Qwen2 folder's tokenizer to Qwen2Tokenizer, which adds its own
        # <|endoftext|>; real Qwen checkpoints also pad the embedding matrix beyond the vocab.
        common["vocab_size"] = len(tok) + 8
        cfg = Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            **common,
        )
        model = Qwen2ForCausalLM(cfg)
    elif arch == "gpt2":
        cfg = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, **common)
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(arch)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out


def sft_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """Learnable demonstrations: additions with a fixed answer format."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({"prompt": f"what is {a} plus {b}", "completion": f"the answer is {a + b}"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
