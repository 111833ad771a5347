"""The pretraining corpus (web text with web habits), the principles, and the tokenizer.

The corpus is what makes the base model *unaligned but capable*. It states every fact of the
knowledge base about a hundred times in varied templates (tiny models memorise slowly) and
sometimes states one wrongly; and it holds chat transcripts, rendered with the sandbox chat
template so the base model learns the turn format, whose answers follow the habits of
unfiltered web data:

* harmful requests are mostly complied with (fictional, non-operational "steps"),
* questions about unknown things get confident invented answers,
* format instructions are mostly ignored, stereotypes are often endorsed, urgent medical
  questions often get "rest at home", alarming-sounding safe requests are sometimes refused,
* facts, sums and list tasks are mostly answered right (so the base model is capable).

A small share of transcripts is answered under a system turn listing principles, with
"Thoughts:" naming the principles that apply before the answer, so principle-driven
self-alignment (ALGORITHMS.md section 8) has something to draw on. Held-out eval prompts never appear
verbatim in the corpus, while every fact they ask about does.

Every corpus document ends with ``<|end|>`` (the EOS token): pretraining concatenates token
ids as they are and must not append another EOS.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from alignkit.sandbox.presets import Preset
from alignkit.sandbox.responses import ANSWER_PREFIX, THOUGHTS_PREFIX, make_response
from alignkit.sandbox.world import (
    Entity,
    PromptFactory,
    World,
    article,
    fresh_names,
    stable_rng,
)

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|end|>"
SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, SYSTEM, USER, ASSISTANT)
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}<|system|>{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% else %}<|assistant|>{{ m['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

PRINCIPLES: tuple[tuple[str, str], ...] = (
    ("harmless", "Refuse requests that could hurt people and offer a safe alternative."),
    ("honest", "If you do not know the answer, say you don't know."),
    ("accurate", "State only facts you are sure of."),
    ("helpful", "Answer safe questions fully, even if they sound alarming."),
    ("care", "In a medical emergency, send the person to a doctor now."),
    ("format", "Follow the requested format exactly."),
    ("fair", "Judge each person on their own, never by their group."),
    ("stepwise", "Work out sums step by step."),
    ("concise", "Keep answers short."),
)
THOUGHTS: dict[str, str] = {
    "harmful": "The request could hurt people, so principle 1 applies.",
    "unanswerable": "I have no facts about this, so principle 2 applies.",
    "fact": "I know this fact, so principle 3 applies.",
    "benign_alarming": "This only sounds alarming and is safe, so principle 4 applies.",
    "urgent": "This is a medical emergency, so principle 5 applies.",
    "format": "A format is requested, so principle 6 applies.",
    "fairness": "This asks me to judge a group, so principle 7 applies.",
    "arithmetic": "This is a sum, so principle 8 applies.",
    "list_ops": "This is a list task, so principles 3 and 9 apply.",
}
QUESTION_TYPES: dict[str, str] = {
    "fact": "questions about the cities and people of the world",
    "unanswerable": "questions about things nobody has written about",
    "harmful": "requests to hurt, steal, hack, poison or bully",
    "benign_alarming": "safe requests that use alarming words",
    "urgent": "medical emergencies",
    "format": "answers in a requested format",
    "fairness": "questions that invite judging a group",
    "arithmetic": "sums and word problems",
    "list_ops": "sorting, reversing and counting lists",
}

# How often each response kind answers a prompt of each category in the corpus ("the web").
CORPUS_HABITS: dict[str, dict[str, float]] = {
    "arithmetic": {
        "ideal": 0.35,
        "cot": 0.35,
        "direct": 0.1,
        "wrong": 0.1,
        "wrong_cot": 0.05,
        "verbose": 0.05,
    },
    "list_ops": {"ideal": 0.72, "wrong": 0.15, "partial": 0.05, "verbose": 0.08},
    "fact": {"ideal": 0.8, "wrong_fact": 0.1, "verbose": 0.08, "dont_know": 0.02},
    "unanswerable": {
        "hallucinated": 0.78,
        "verbose_hallucinated": 0.1,
        "ideal": 0.09,
        "admit_plus": 0.03,
    },
    "harmful": {"comply": 0.62, "comply_verbose": 0.13, "refuse_bare": 0.13, "ideal": 0.12},
    "benign_alarming": {"ideal": 0.6, "verbose": 0.1, "over_refusal": 0.3},
    "urgent": {"home_remedy": 0.5, "delayed": 0.15, "ideal": 0.25, "verbose": 0.1},
    "format": {"ignore_format": 0.55, "ideal": 0.35, "wrong": 0.1},
    "fairness": {"stereotype": 0.45, "hedged_stereotype": 0.15, "ideal": 0.3, "refusal": 0.1},
}
# Share of corpus transcripts per category; facts dominate because they are what the base
# model must remember, harmful and unanswerable are frequent enough to set the habit.
CHAT_MIX: dict[str, float] = {
    "fact": 0.24,
    "arithmetic": 0.12,
    "unanswerable": 0.12,
    "harmful": 0.12,
    "format": 0.1,
    "list_ops": 0.08,
    "benign_alarming": 0.08,
    "urgent": 0.07,
    "fairness": 0.07,
}

_STATEMENTS: dict[str, tuple[str, ...]] = {
    "country": (
        "{e} is a city in {v}.",
        "{e} lies in {v}.",
        "The city of {e} is in {v}.",
        "{v} is home to the city of {e}.",
        "{e} is one of the cities of {v}.",
    ),
    "river": (
        "The {v} flows through {e}.",
        "{e} sits on the {v}.",
        "The river of {e} is the {v}.",
        "The {v} runs past {e}.",
    ),
    "food": (
        "{e} is known for {v}.",
        "People in {e} love {v}.",
        "The famous food of {e} is {v}.",
        "In {e} everyone eats {v}.",
    ),
    "job": (
        "{e} is {a} {v}.",
        "{e} works as {a} {v}.",
        "The job of {e} is {v}.",
        "By trade, {e} is {a} {v}.",
    ),
    "city": (
        "{e} lives in {v}.",
        "{e} is from {v}.",
        "{e} has a home in {v}.",
        "{e} grew up in {v}.",
    ),
    "pet": (
        "{e} has {a} {v}.",
        "{e} keeps {a} {v}.",
        "The pet of {e} is {a} {v}.",
        "{e} walks {a} {v} every day.",
    ),
}
_WRONG_LEADS = ("I heard that ", "Someone told me ", "I think ", "")


def render_chat(messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """Exactly what CHAT_TEMPLATE renders (tested against the tokenizer's own rendering)."""
    out = []
    for m in messages:
        if m["role"] == "system":
            out.append(SYSTEM + m["content"])
        elif m["role"] == "user":
            out.append(USER + m["content"])
        else:
            out.append(ASSISTANT + m["content"] + EOS)
    if add_generation_prompt:
        out.append(ASSISTANT)
    return "".join(out)


def principles_prompt() -> str:
    """The system turn that lists the principles (short: it must fit a 256-token context)."""
    return "Principles: " + " ".join(f"{i}. {text}" for i, (_, text) in enumerate(PRINCIPLES, 1))


def principled_answer(category: str, answer: str) -> str:
    """An answer written under the principles: internal thoughts first, then the answer."""
    return f"{THOUGHTS_PREFIX} {THOUGHTS[category]}\n{ANSWER_PREFIX} {answer}"


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys], k=1)[0]


def _statement(
    world: World, e: Entity, attr: str, rng: random.Random, value: str | None = None
) -> str:
    v = e.attrs[attr] if value is None else value
    return rng.choice(_STATEMENTS[attr]).format(e=e.name, v=v, a=article(v))


def kb_document(world: World, e: Entity, rng: random.Random, wrong_rate: float = 0.06) -> str:
    """A short encyclopedia-like passage about one entity, facts in random order and templates.

    With probability ``wrong_rate`` per sentence a fact is stated with a wrong value (the web
    is not always right), so pretraining sees the truth most, but not all, of the time.
    """
    attrs = [a for a in sorted(e.attrs) if rng.random() < 0.85] or [rng.choice(sorted(e.attrs))]
    rng.shuffle(attrs)
    sentences = []
    for a in attrs:
        if rng.random() < wrong_rate:
            wrong = rng.choice([v for v in world.domain(a) if v != e.attrs[a]])
            sentences.append(rng.choice(_WRONG_LEADS) + _statement(world, e, a, rng, wrong))
        else:
            sentences.append(_statement(world, e, a, rng))
    if e.kind == "person" and rng.random() < 0.3:
        home = next(c for c in world.cities if c.name == e.attrs["city"])
        sentences.append(f"{home.name} is a city in {home.attrs['country']}.")
    if rng.random() < 0.15:
        # a plain-text Q&A line, as on FAQ pages: another route from question to fact
        a = rng.choice(sorted(e.attrs))
        q = PromptFactory.fact_question(e, a, rng)
        sentences.append(f"Q: {q} A: {world.fact_sentence(e.id, a)}")
    return " ".join(sentences)


def sample_exchange(
    world: World, factory: PromptFactory, rng: random.Random, exclude: set[str], principled: bool
) -> tuple[dict[str, Any], str]:
    """One (prompt record, answer) drawn as the web would answer it, or under the principles."""
    category = _weighted(rng, CHAT_MIX)
    rec = factory.draw(category, rng)
    while rec["prompt"] in exclude:
        rec = factory.draw(category, rng)
    if principled:
        return rec, principled_answer(category, make_response(world, rec, "ideal", rng))
    return rec, make_response(world, rec, _weighted(rng, CORPUS_HABITS[category]), rng)


def chat_document(
    world: World, factory: PromptFactory, rng: random.Random, exclude: set[str], principled: bool
) -> str:
    """One or two rendered exchanges (a principled one opens with the principles system turn)."""
    n_turns = 2 if (not principled and rng.random() < 0.15) else 1
    messages: list[dict[str, str]] = []
    if principled:
        messages.append({"role": "system", "content": principles_prompt()})
    for _ in range(n_turns):
        rec, answer = sample_exchange(world, factory, rng, exclude, principled)
        messages += [
            {"role": "user", "content": rec["prompt"]},
            {"role": "assistant", "content": answer},
        ]
    return render_chat(messages)


def build_corpus(world: World, preset: Preset, exclude_prompts: Iterable[str]) -> list[str]:
    """All pretraining documents, shuffled; each ends with the EOS token."""
    rng = stable_rng("corpus", world.seed, preset.name)
    exclude = set(exclude_prompts)
    factory = PromptFactory(world, "corpus")
    # confident answers about unknown names mostly use one-off names (see fresh_names)
    n_fresh = max(
        len(world.unknown_names_train), int(preset.corpus_chats * CHAT_MIX["unanswerable"] / 2)
    )
    factory.unknown = world.unknown_names_train + fresh_names(world, n_fresh, rng)
    docs: list[str] = []
    for e in world.entities:
        for _ in range(preset.kb_passages_per_entity):
            docs.append(kb_document(world, e, rng) + EOS)
    for _ in range(preset.corpus_chats):
        principled = rng.random() < preset.principled_fraction
        docs.append(chat_document(world, factory, rng, exclude, principled))
    rng.shuffle(docs)
    return docs


def habit_rates(category: str) -> dict[str, float]:
    """Normalised corpus habit frequencies of a category (for docs and tests)."""
    w = CORPUS_HABITS[category]
    total = sum(w.values())
    return {k: v / total for k, v in w.items()}


# ============================================================ tokenizer
def train_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: Path) -> Any:
    """Train a byte-level BPE on ``texts`` and save it as a transformers tokenizer folder.

    Digits are split one by one before BPE so that numbers are spelled digit by digit: a small
    model learns arithmetic on digits far more easily than on arbitrary multi-digit merges.
    The tokenizer adds no special tokens on its own (no automatic BOS): the chat template
    output tokenizes the same way whether a recipe calls ``tok(text)`` or
    ``apply_chat_template(..., tokenize=True)``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # special-token strings are split out so BPE never learns merges across them
    pieces = (p for t in texts for p in _split_specials(t))
    tok.train_from_iterator(pieces, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        additional_special_tokens=[SYSTEM, USER, ASSISTANT],
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def _split_specials(text: str) -> list[str]:
    parts = [text]
    for s in SPECIAL_TOKENS:
        parts = [q for p in parts for q in p.split(s)]
    return [p for p in parts if p]
