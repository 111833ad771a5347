"""The corpus carries the habits the base model must pick up, and the exact chat format."""

from __future__ import annotations

import random

import jinja2
import pytest

from alignkit.sandbox import GoldOracle, World
from alignkit.sandbox.corpus import (
    CHAT_TEMPLATE,
    CORPUS_HABITS,
    EOS,
    build_corpus,
    principled_answer,
    render_chat,
    sample_exchange,
)
from alignkit.sandbox.presets import get_preset
from alignkit.sandbox.responses import split_principled_answer
from alignkit.sandbox.world import PromptFactory


@pytest.mark.parametrize(
    "messages, gen",
    [
        ([{"role": "user", "content": "hi"}], True),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], False),
        (
            [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "u1"},
                {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "u2"},
            ],
            True,
        ),
    ],
)
def test_render_chat_is_the_template(messages: list[dict[str, str]], gen: bool) -> None:
    expected = jinja2.Template(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=gen)
    assert render_chat(messages, add_generation_prompt=gen) == expected


def _habits(category_filter: str, n: int = 4000) -> list:
    world = World.generate(0, "micro")
    oracle = GoldOracle(world)
    factory = PromptFactory(world, "corpus")
    rng = random.Random(0)
    scores = []
    while len(scores) < n:
        rec, answer = sample_exchange(world, factory, rng, set(), principled=False)
        if rec["category"] == category_filter:
            scores.append(oracle.score(rec, answer))
    return scores


def test_corpus_teaches_bad_habits_and_real_knowledge() -> None:
    # the base model must come out unaligned but capable: these are the rates it imitates
    harmful = _habits("harmful", 400)
    assert sum(s.is_unsafe for s in harmful) / len(harmful) >= 0.65
    unanswerable = _habits("unanswerable", 400)
    assert sum(s.hallucinated for s in unanswerable) / len(unanswerable) >= 0.7
    fact = _habits("fact", 400)
    assert sum(bool(s.correct) for s in fact) / len(fact) >= 0.75
    benign = _habits("benign_alarming", 300)
    assert 0.15 <= sum(s.is_refusal for s in benign) / len(benign) <= 0.45


def test_habit_tables_cover_known_kinds() -> None:
    from alignkit.sandbox.responses import RESPONSE_KINDS

    for category, weights in CORPUS_HABITS.items():
        assert set(weights) <= set(RESPONSE_KINDS[category]), category


def test_principled_answers_split_cleanly() -> None:
    text = principled_answer("harmful", "I can't help with that.")
    thoughts, answer = split_principled_answer(text)
    assert thoughts == "The request could hurt people, so principle 1 applies."
    assert answer == "I can't help with that."
    assert split_principled_answer("Just an answer.") == (None, "Just an answer.")


def test_corpus_documents_and_fact_repetition() -> None:
    world = World.generate(0, "micro")
    preset = get_preset("micro")
    docs = build_corpus(world, preset, exclude_prompts=[])
    assert len(docs) == len(world.entities) * preset.kb_passages_per_entity + preset.corpus_chats
    assert all(d.endswith(EOS) for d in docs)
    assert any(d.startswith("<|system|>Principles:") for d in docs)
    # every fact is stated, and the truth is stated more often than any one falsehood
    text = "\n".join(docs)
    for e in world.entities:
        for attr, value in e.attrs.items():
            assert text.count(value) > 0 and e.name in text, (e.name, attr)
    assert build_corpus(world, preset, []) == docs  # deterministic
