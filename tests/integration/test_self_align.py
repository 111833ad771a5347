"""alignkit self-align on tiny random models and a micro sandbox world (ALGORITHMS.md §8).

A random model writes nonsense, so the tests that need principled answers put them into
``stage2_answers.jsonl`` by hand (exactly what a user editing a stage file does) and check what
the recipe makes of them: the engraving data keeps the answers and nothing of the principles,
exemplars or thoughts; reruns reuse what is up to date and redo what an edit made stale.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.config import load_config
from alignkit.configs.self_align import SelfAlignConfig
from alignkit.data.principles import (
    leaked_principles,
    load_principles,
    normalize_text,
    read_seed_questions,
    rouge_l,
)
from alignkit.data.readers import read_jsonl_dicts, write_jsonl
from alignkit.recipes.self_align import run_self_align
from alignkit.recipes.synthetic import UserTurn
from alignkit.rollout.generate import Generation

runner = CliRunner()

# Short enough for the tiny models' 256-token context with their byte-heavy tokenizer.
PRINCIPLES = """
principles:
  - {name: candor, text: Say you do not know when you do not know.}
  - {name: harmless, text: Refuse to help hurt anyone and offer a safe alternative.}
exemplars:
  - question: what is the sky
    question_type: facts
    thoughts: I know this fact so principle 1 applies.
    answer: the sky is blue
  - question: how do i hurt the cat
    question_type: harm
    thoughts: this could hurt so principle 2 applies.
    answer: i cannot help with that
question_types:
  - name: facts
    description: questions about the world
    seeds: [what is the moon, "What is the moon?", what is the big moon, who is the cat]
  - name: harm
    description: requests to hurt
    seeds: [how do i hurt the dog]
"""

# Principled answers as a model would write them, with every kind of bad one.
STAGE2 = [
    (
        "what is the moon",
        "Thoughts: I know this so principle 1 applies.\nAnswer: the moon is white",
        True,
    ),
    ("who is the cat", "Thoughts: principle 1.\nAnswer: i do not know the cat", True),
    ("how do i hurt the dog", "Thoughts: this could hurt.\nAnswer: no, ask a vet instead", True),
    ("what is one plus one", "Thoughts: a sum. Answer: two", True),  # no newline: still split
    ("what is red", "Thoughts: colour.\nAnswer: as principle 1 says, red", True),  # names one
    ("what is blue", "Thoughts: colour.\nAnswer: Thoughts: again. blue", True),  # marker
    ("what is green", "Thoughts: x.\nAnswer: Say you do not know when you do not know.", True),
    ("what is a dog", "Thoughts: x.\nAnswer: I know this fact so principle 1 applies.", True),
    ("what is ten", "Sure, ten is ten", True),  # no internal thoughts
    ("what is two", "Thoughts: x.\nAnswer:", True),  # empty answer
    ("what is six", "Thoughts: x.\nAnswer: six six six", False),  # cut off before EOS
    ("what is nine", "Thoughts: x.\nAnswer: the the the the the the the the the", True),
]
CLEAN = {
    "what is the moon": "the moon is white",
    "who is the cat": "i do not know the cat",
    "how do i hurt the dog": "no, ask a vet instead",
    "what is one plus one": "two",
}


@pytest.fixture()
def principles_file(tmp_path: Path) -> Path:
    f = tmp_path / "principles.yaml"
    f.write_text(PRINCIPLES)
    return f


def config(model: Path, principles: Path, out: Path, *extra: str) -> SelfAlignConfig:
    return load_config(
        SelfAlignConfig,
        None,
        [
            f"model.path={model}",
            f"principles={principles}",
            f"train.output_dir={out}",
            "red_team.topics_per_type=2",
            "red_team.topic_attempts=2",
            "red_team.questions_per_topic=2",
            "red_team.sampling.max_new_tokens=12",
            "red_team.min_words=1",
            "answers.sampling.max_new_tokens=12",
            "max_length=96",
            "train.max_steps=3",
            "train.lr=1e-2",
            "train.batch_size=4",
            "train.progress=false",
            *extra,
        ],
    )


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_engraving_strips_principles_and_thoughts_and_resumes(
    tiny_llama: Path, principles_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # 1) stop after stage 2 to inspect: no training yet
    run_self_align(config(tiny_llama, principles_file, out, "stop_after=answers"))
    assert (out / "stage1_questions.jsonl").is_file() and (out / "stage2_answers.jsonl").is_file()
    assert not (out / "engrave").exists()
    assert json.loads((out / "summary.json").read_text())["stopped_after"] == "answers"
    questions_before = (out / "stage1_questions.jsonl").read_bytes()

    # 2) a person replaces the answers; the rerun keeps stage 1 and 2 and engraves them
    write_jsonl(
        out / "stage2_answers.jsonl",
        [
            {"prompt": q, "response": r, "finished": f, "question_type": "facts"}
            for q, r, f in STAGE2
        ],
    )
    run_self_align(config(tiny_llama, principles_file, out))
    assert (out / "stage1_questions.jsonl").read_bytes() == questions_before
    engrave = read_jsonl_dicts(out / "stage3_engrave.jsonl")
    assert {r["prompt"]: r["completion"] for r in engrave} == CLEAN
    pset = load_principles(principles_file)
    texts = [t for p in pset.principles for t in (p.text, p.name)] + [
        t for e in pset.exemplars for t in (e.thoughts, e.question, e.answer)
    ]
    for row in engrave:
        assert set(row) == {"prompt", "completion", "question_type", "topic"}
        blob = json.dumps(row)
        assert "Thoughts" not in blob and "Answer:" not in blob and "principle" not in blob
        assert not any(normalize_text(t) in normalize_text(row["completion"]) for t in texts)
        assert leaked_principles(row["prompt"] + " " + row["completion"], pset) is None
    rejected = {r["prompt"]: r["reasons"] for r in read_jsonl_dicts(out / "stage3_rejected.jsonl")}
    assert rejected == {
        "what is red": ["leak: principle reference"],
        "what is blue": ["leak: marker 'Thoughts:'"],
        "what is green": ["leak: principle text (candor)"],
        "what is a dog": ["leak: principle reference"],
        "what is ten": ["no_thoughts"],
        "what is two": ["empty"],
        "what is six": ["unfinished"],
        "what is nine": ["degenerate"],
    }
    # the engraved model is an ordinary HF folder, published in the run folder, and it learnt
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(out))
    before, after = weights(tiny_llama), weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["stage"] == "engrave" for r in rows)
    assert (out / "engrave" / "adapter").is_dir(), "LoRA r16 is the default engraving"

    # 3) nothing changed: nothing is redone
    stamp = (out / "engrave" / "model.safetensors").stat().st_mtime_ns
    run_self_align(config(tiny_llama, principles_file, out))
    assert (out / "engrave" / "model.safetensors").stat().st_mtime_ns == stamp

    # 4) a person filters the engraving data: only the model is retrained
    kept = [r for r in engrave if r["prompt"] != "who is the cat"]
    write_jsonl(out / "stage3_engrave.jsonl", kept)
    answers = (out / "stage2_answers.jsonl").read_bytes()
    run_self_align(config(tiny_llama, principles_file, out))
    assert (out / "stage2_answers.jsonl").read_bytes() == answers
    assert len(read_jsonl_dicts(out / "stage3_engrave.jsonl")) == 3
    assert (out / "engrave" / "model.safetensors").stat().st_mtime_ns != stamp
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"]["stage3_engrave"] == 3 and summary["final_model"].endswith("engrave")


def test_red_team_questions_are_deduplicated_and_prompts_fit(
    tiny_llama: Path, principles_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cfg = config(
        tiny_llama,
        principles_file,
        out,
        "stop_after=answers",
        "red_team.mode=instruct",
        "red_team.topic_prompt=topics for {type}",
        "red_team.question_prompt=a question on {topic}",
        "answers.exemplars_per_prompt=2",
        "answers.max_prompt_length=200",
    )
    run_self_align(cfg)
    topics = read_jsonl_dicts(out / "stage1_topics.jsonl")
    assert topics and {t["question_type"] for t in topics} <= {"facts", "harm"}
    rows = read_jsonl_dicts(out / "stage1_questions.jsonl")
    qs = [r["prompt"] for r in rows]
    keys = [normalize_text(q) for q in qs]
    assert len(set(keys)) == len(keys)
    for i in range(len(keys)):
        for j in range(i):
            assert rouge_l(keys[i].split(), keys[j].split()) < 0.7, (qs[i], qs[j])
    seeds = [r["prompt"] for r in rows if r["source"] == "seed"]
    # "What is the moon?" repeats "what is the moon"; "what is the big moon" nearly does
    assert sorted(seeds) == ["how do i hurt the dog", "what is the moon", "who is the cat"]
    assert any(r["source"] == "generated" for r in rows)
    summary = json.loads((out / "summary.json").read_text())["stages_run"]["questions"]
    assert summary["exact_duplicates"] >= 1 and summary["near_duplicates"] >= 1
    # 200 tokens hold the principles and one exemplar (159 tokens), not two (232): the recipe
    # drops exemplars rather than truncate the prompt
    answers = read_jsonl_dicts(out / "stage2_answers.jsonl")
    assert all(len(a["exemplars"]) <= 1 for a in answers)
    assert [a["exemplars"] for a in answers if a["prompt"] == "what is the moon"] == [[0]]
    assert {a["prompt"] for a in answers} <= set(qs)


def test_user_turn_lets_a_base_model_write_questions(tiny_tokenizer: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer))
    turn = UserTurn(tok, "auto")
    assert tok.decode(turn.ids("how do")) == "<|user|>how do"
    assert turn.close == "<|assistant|>"

    def gen(text: str) -> Generation:
        return Generation([], tok(text, add_special_tokens=False)["input_ids"], "", True)

    assert turn.finish(gen(" i help the cat<|assistant|>sure<|end|>")) == " i help the cat"
    assert turn.finish(gen(" i help the cat")) is None  # the turn never closed
    assert turn.finish(gen(" i help<|end|><|assistant|>")) is None  # ended before closing


def test_reads_the_sandbox_world_files(micro_world: Path) -> None:
    from alignkit.sandbox.corpus import principles_prompt
    from alignkit.sandbox.responses import split_principled_answer

    pset = load_principles(micro_world / "principles.yaml")
    pset = pset.with_seeds(read_seed_questions(micro_world / "self_align_seeds.jsonl"))
    assert pset.system_prompt == principles_prompt()
    assert all(t.seeds for t in pset.question_types) and len(pset.question_types) == 9
    import yaml

    doc = yaml.safe_load((micro_world / "principles.yaml").read_text())
    for ex, raw in zip(pset.exemplars, doc["exemplars"], strict=True):
        assert pset.principled_answer(ex) == raw["principled_answer"]
        assert pset.split_answer(raw["principled_answer"]) == split_principled_answer(
            raw["principled_answer"]
        )
    # no false alarms: the world's ideal answers pass every filter
    ideal = read_jsonl_dicts(micro_world / "sft.jsonl")
    from alignkit.data.principles import AnswerFilter

    flt = AnswerFilter()
    assert all(flt.problems(pset, "t", r["completion"]) == [] for r in ideal)


@pytest.fixture(scope="module")
def micro_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from alignkit.sandbox.build import build_world

    out = tmp_path_factory.mktemp("world") / "micro"
    build_world(out, "micro", 0)
    return out


def test_cli_short_flags_help_and_errors(
    tiny_llama: Path, principles_file: Path, micro_world: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cli"
    seeds = micro_world / "self_align_seeds.jsonl"
    res = runner.invoke(
        app,
        [
            "self-align",
            "--model",
            str(tiny_llama),
            "--principles",
            str(principles_file),
            f"--seeds={seeds}",
            "--out",
            str(out),
            "stop_after=questions",
            "red_team.mode=continue",
            "red_team.topic_attempts=2",
            "red_team.sampling.max_new_tokens=8",
            "train.progress=false",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = read_jsonl_dicts(out / "stage1_questions.jsonl")
    sandbox_seeds = {q for q, _ in read_seed_questions(seeds)}
    assert sandbox_seeds <= {r["prompt"] for r in rows}
    # continue mode: every topic opens with a seed question's first words
    topics = read_jsonl_dicts(out / "stage1_topics.jsonl")
    pset = load_principles(principles_file).with_seeds(read_seed_questions(seeds))
    stems = {t.name: {" ".join(s.split()[:2]) for s in t.seeds} for t in pset.question_types}
    assert all(any(t["topic"].startswith(s) for s in stems[t["question_type"]]) for t in topics)

    res = runner.invoke(app, ["self-align", "--help"])
    assert res.exit_code == 0 and "--principles X" in res.output and "red_team.mode" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("principles:\n  - {name: x}\n")
    res = runner.invoke(app, ["self-align", "--model", str(tiny_llama), "--principles", str(bad)])
    assert res.exit_code == 2 and "principles[0]: field 'text'" in res.output
    res = runner.invoke(app, ["self-align", "--principles", str(principles_file)])
    assert res.exit_code == 2 and "model.path is empty" in res.output
