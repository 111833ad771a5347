"""Principles files, question dedup and the answer filters of self-alignment (ALGORITHMS §8)."""

from __future__ import annotations

import random

import pytest
from helpers import assert_close

from alignkit.data.principles import (
    AnswerFilter,
    DedupResult,
    Exemplar,
    deduplicate,
    leaked_principles,
    load_principles,
    normalize_text,
    parse_principles,
    parse_question,
    parse_topics,
    rank_exemplars,
    read_seed_questions,
    repeated_ngram,
    rouge_l,
)
from alignkit.data.readers import DataError

# The shape of the sandbox world's principles.yaml (prompt / category / principled_answer).
SANDBOX_STYLE = {
    "version": 1,
    "system_prompt": "Principles: 1. Refuse harm. 2. Say you don't know.",
    "thoughts_prefix": "Thoughts:",
    "answer_prefix": "Answer:",
    "principles": [
        {"id": 1, "name": "harmless", "text": "Refuse requests that could hurt people."},
        {
            "id": 2,
            "name": "fair",
            "text": "Judge each person on their own, never by their group or their country.",
        },
    ],
    "question_types": [
        {"category": "harmful", "description": "requests to hurt"},
        {"category": "fact", "description": "questions about people"},
    ],
    "exemplars": [
        {
            "category": "harmful",
            "prompt": "How can I poison a cat?",
            "thoughts": "The request could hurt, so principle 1 applies.",
            "answer": "I can't help with that.",
            "principled_answer": "Thoughts: The request could hurt, so principle 1 applies.\n"
            "Answer: I can't help with that.",
        },
        {
            "category": "fact",
            "prompt": "Which pet does Tavi own?",
            "thoughts": "I know this fact.",
            "answer": "Tavi has an owl.",
        },
    ],
}


@pytest.fixture()
def pset():
    return parse_principles(SANDBOX_STYLE, "sandbox.yaml")


def test_default_set_is_complete_and_self_consistent() -> None:
    p = load_principles()
    names = {x.name for x in p.principles}
    for needed in (
        "ethical",
        "candor",
        "clarification",
        "balanced views",
        "helpful",
        "informative",
    ):
        assert needed in names
    assert len(p.principles) >= 12 and len(p.exemplars) >= 3
    types = {t.name for t in p.question_types}
    assert all(ex.question_type in types for ex in p.exemplars)
    assert all(t.seeds for t in p.question_types)
    for i, pr in enumerate(p.principles, 1):
        assert f"{i}. {pr.text}" in p.system_prompt
    # the exemplars are clean answers: engraving on them would not leak the prompt
    for ex in p.exemplars:
        assert leaked_principles(ex.answer, p) is None, ex.answer


def test_reads_the_sandbox_format(pset) -> None:
    assert [t.name for t in pset.question_types] == ["harmful", "fact"]
    ex = pset.exemplars[0]
    assert (ex.question, ex.question_type) == ("How can I poison a cat?", "harmful")
    assert pset.principled_answer(ex) == SANDBOX_STYLE["exemplars"][0]["principled_answer"]
    assert pset.system_prompt == SANDBOX_STYLE["system_prompt"]


def test_system_prompt_placeholder_and_default() -> None:
    doc = {"principles": [{"name": "a", "text": "Be kind."}, {"name": "b", "text": "Be brief."}]}
    assert parse_principles(doc).system_prompt == "Principles: 1. Be kind. 2. Be brief."
    doc["system_prompt"] = "Follow these:\n{principles}"
    assert parse_principles(doc).system_prompt == "Follow these:\n1. Be kind.\n2. Be brief."


@pytest.mark.parametrize(
    "doc, fragment",
    [
        ({"principles": []}, "'principles' must be a non-empty list"),
        ({"principles": [{"name": "a"}]}, "principles[0]: field 'text'"),
        ({"principles": ["ok"], "exemplar": []}, "unknown key 'exemplar'"),
        (
            {"principles": ["ok"], "exemplars": [{"question": "q", "answer": "a"}]},
            "exemplars[0]: field 'thoughts'",
        ),
        (
            {"principles": ["ok"], "question_types": [{"name": "t", "seeds": "q"}]},
            "question_types[0]: 'seeds'",
        ),
        ({"principles": ["ok"], "question_types": ["t", "t"]}, "'t' is defined twice"),
        ({"principles": ["ok"], "thoughts_prefix": "X:", "answer_prefix": "X:"}, "must differ"),
    ],
)
def test_errors_name_the_entry_and_field(doc, fragment) -> None:
    with pytest.raises(DataError, match="p.yaml") as e:
        parse_principles(doc, "p.yaml")
    assert fragment in str(e.value)


def test_seeds_join_types_by_name_or_description(pset, tmp_path) -> None:
    f = tmp_path / "seeds.jsonl"
    f.write_text(
        '{"prompt": "How do I hack a phone?", "category": "harmful"}\n'
        '{"prompt": "Who is Tavi?", "question_type": "questions about people"}\n'
        '{"question": "Is it raining now?", "type": "real-time"}\n'
        '{"prompt": "Hello?"}\n'
    )
    seeds = read_seed_questions(f)
    assert seeds[1] == ("Who is Tavi?", "questions about people")
    got = pset.with_seeds(seeds)
    assert {t.name: t.seeds for t in got.question_types} == {
        "harmful": ("How do I hack a phone?",),
        "fact": ("Who is Tavi?",),
        "real-time": ("Is it raining now?",),
        "general": ("Hello?",),
    }
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": ""}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        read_seed_questions(bad)


def test_split_answer(pset) -> None:
    assert pset.split_answer("Thoughts: principle 1 applies.\nAnswer: No.") == (
        "principle 1 applies.",
        "No.",
    )
    # small models drop the newline; the order still decides
    assert pset.split_answer("Thoughts: t. Answer: yes") == ("t.", "yes")
    assert pset.split_answer("Sure, here it is.") == (None, "Sure, here it is.")
    assert pset.split_answer("Thoughts: only thinking") == ("only thinking", "")


def test_rouge_l_hand_values() -> None:
    # LCS(a b c d, a c d e) = 3 → F1 = 2·3/(4+4)
    assert_close(rouge_l(["a", "b", "c", "d"], ["a", "c", "d", "e"]), 0.75)
    assert_close(rouge_l(["a", "b"], ["b", "a"]), 0.5)
    assert rouge_l([], ["a"]) == 0.0
    assert normalize_text("  What's THE time?! ") == "what s the time"


def _brute_force(texts, threshold):
    kept, keys = [], []
    for i, t in enumerate(texts):
        key = normalize_text(t)
        if not key or key in keys:
            continue
        toks = key.split()
        if threshold is not None and any(rouge_l(toks, k.split()) >= threshold for k in keys):
            continue
        kept.append(i)
        keys.append(key)
    return kept


def test_dedup_exact_and_near_duplicates() -> None:
    texts = [
        "Which country is Naktin in?",
        "which country is NAKTIN in",  # exact after normalisation
        "Which country is Dikpek in?",  # ROUGE-L 0.8 to the first
        "How can I poison my neighbour's cat?",
        "Write a poem about rivers.",
    ]
    r = deduplicate(texts, 0.7)
    assert r == DedupResult(kept=[0, 3, 4], exact=1, near=1)
    assert deduplicate(texts, 0.85).kept == [0, 2, 3, 4]
    assert deduplicate(texts, None).kept == [0, 2, 3, 4]


def test_dedup_pruning_matches_brute_force() -> None:
    rng = random.Random(0)
    words = ["a", "b", "c", "d", "e", "f", "g", "the", "cat", "dog"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 7))) for _ in range(300)]
    for threshold in (0.5, 0.7, 0.9, None):
        assert deduplicate(texts, threshold).kept == _brute_force(texts, threshold)


@pytest.mark.parametrize(
    "answer, reason",
    [
        ("Thoughts: harmful.\nAnswer: No.", "marker 'Thoughts:'"),
        ("No. Answer: no.", "marker 'Answer:'"),
        ("As principle 2 says, no.", "principle reference"),
        ("Following principles 1 and 3, I refuse.", "principle reference"),
        ("Principles: 1. Refuse harm.", "principle reference"),
        ("I must refuse requests that could hurt people.", "principle text (harmless)"),
        ("No. Judge each person on their own, never by their group.", "principle text (fair)"),
        ("Well, the request could hurt, so principle 1 applies.", "principle reference"),
        ("I know this fact.", "exemplar thoughts"),
    ],
)
def test_leaks_are_found(pset, answer, reason) -> None:
    assert leaked_principles(answer, pset) == reason


@pytest.mark.parametrize(
    "answer",
    [
        "I can't help with that, because it could hurt people. Talk to a counselor.",
        "No. Judge each person on their own, not on where they are from.",  # 6 shared words < 8
        "4 * 5 = 20. 20 + 7 = 27. The answer is 27.",
        "I don't know the population of Naktin.",
    ],
)
def test_clean_answers_pass(pset, answer) -> None:
    assert leaked_principles(answer, pset) is None


def test_answer_filter_reasons(pset) -> None:
    f = AnswerFilter(max_words=5)
    assert f.problems(pset, "t", "Tavi has an owl.") == []
    assert f.problems(pset, None, "Tavi has an owl.") == ["no_thoughts"]
    assert f.problems(pset, "t", "", finished=False) == ["empty", "unfinished"]
    assert f.problems(pset, "t", "one two three four five six") == ["too_long"]
    loop = "go go go go go go go go go"
    assert f.problems(pset, "t", loop) == ["too_long", "degenerate"]
    assert f.problems(pset, "t", "See principle 2.") == ["leak: principle reference"]
    assert AnswerFilter(require_thoughts=False).problems(pset, None, "Fine.") == []
    assert repeated_ngram("a b c a b c a b c", 3, 3) and not repeated_ngram("a b c a b c", 3, 3)


def test_rank_exemplars_prefers_type_then_overlap() -> None:
    exs = [
        Exemplar("What is 2 plus 2?", "t", "4", "sum"),
        Exemplar("Which pet does Tavi own?", "t", "an owl", "fact"),
        Exemplar("Which city does Tavi live in?", "t", "Naktin", "fact"),
    ]
    assert rank_exemplars(exs, "Which city does Mufor live in?", "fact", True) == [2, 1, 0]
    assert rank_exemplars(exs, "Which city does Mufor live in?", "sum", True) == [0, 2, 1]
    assert rank_exemplars(exs, "Which city does Mufor live in?", "sum", False) == [2, 1, 0]


def test_parse_generated_topics_and_questions() -> None:
    assert parse_topics("1. Wifi passwords\n- stealing bikes\n\n* Topic 3: poison.\nx ") == [
        "Wifi passwords",
        "stealing bikes",
        "poison",
        "x",
    ]
    assert parse_topics("one two three four five six seven eight nine") == []
    assert parse_question('\n  Question: "Is it safe?"\nmore') == "Is it safe?"
    assert parse_question("   \n") == ""
