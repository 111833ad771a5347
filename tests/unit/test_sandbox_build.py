"""Building a world folder: formats, determinism, held-out split, tokenizer, bad input."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from alignkit.data.records import Comparison, Demonstration, PromptOnly, Ranking, Unpaired
from alignkit.sandbox import (
    CATEGORIES,
    CHAT_TEMPLATE,
    HELPFUL_CATEGORIES,
    GoldOracle,
    SandboxError,
    build_world,
    load_world,
    render_chat,
    split_principled_answer,
    verify_tokenizer,
)
from alignkit.sandbox import build as build_mod

TRAIN_FILES = (
    "sft.jsonl",
    "sft_helpful.jsonl",
    "rankings.jsonl",
    "preferences.jsonl",
    "safety.jsonl",
    "unpaired.jsonl",
    "rl_prompts.jsonl",
    "self_align_seeds.jsonl",
)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, float]:
    out = tmp_path_factory.mktemp("worlds") / "micro"
    start = time.perf_counter()
    summary = build_world(out, preset="micro", seed=0)
    return out, summary, time.perf_counter() - start


def test_micro_builds_in_seconds_with_every_file(built: tuple[Path, dict, float]) -> None:
    out, summary, elapsed = built
    assert elapsed < 15.0, f"micro build took {elapsed:.1f}s"
    for name in (
        *TRAIN_FILES,
        "kb.jsonl",
        "corpus.jsonl",
        "eval.jsonl",
        "world.json",
        "manifest.json",
        "principles.yaml",
        "tokenizer/tokenizer.json",
    ):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    for name, rows in summary["counts"].items():
        assert len(read_jsonl(out / name)) == rows == manifest["files"][name]["rows"]
    assert summary["corpus_tokens"] > 0 and manifest["corpus_tokens"] == summary["corpus_tokens"]
    # nothing is left behind beside the folder
    assert [p.name for p in out.parent.iterdir()] == ["micro"]


def test_rows_are_valid_records(built: tuple[Path, dict, float]) -> None:
    out = built[0]
    for row in read_jsonl(out / "sft.jsonl"):
        Demonstration(prompt=row["prompt"], completion=row["completion"])
        assert isinstance(row["prompt"], str) and row["category"] in CATEGORIES
    for row in read_jsonl(out / "rankings.jsonl"):
        r = Ranking(
            prompt=row["prompt"],
            responses=row["responses"],
            ranking=row["ranking"],
            annotator=row["annotator"],
        )
        assert sorted(r.ranking) == list(range(4)) and len(set(r.responses)) == 4
    for row in read_jsonl(out / "preferences.jsonl"):
        c = Comparison(prompt=row["prompt"], chosen=row["chosen"], rejected=row["rejected"])
        assert c.chosen != c.rejected
    for row in read_jsonl(out / "safety.jsonl"):
        assert isinstance(row["chosen_safe"], bool) and isinstance(row["rejected_safe"], bool)
        assert row["safer"] in (0, 1)
        if row["chosen_safe"] != row["rejected_safe"]:
            assert row["safer"] == (0 if row["chosen_safe"] else 1)
    rows = read_jsonl(out / "unpaired.jsonl")
    assert {r["label"] for r in rows} == {True, False}
    for row in rows:
        Unpaired(prompt=row["prompt"], completion=row["completion"], label=row["label"])
    for name in ("rl_prompts.jsonl", "eval.jsonl"):
        for row in read_jsonl(out / name):
            PromptOnly(prompt=row["prompt"], extra={k: v for k, v in row.items() if k != "prompt"})
    for row in read_jsonl(out / "kb.jsonl"):
        assert set(row) == {"id", "title", "text"}


def test_sft_completions_are_ideal_and_prompts_short(built: tuple[Path, dict, float]) -> None:
    out = built[0]
    oracle = GoldOracle.from_dir(out)
    rows = read_jsonl(out / "sft.jsonl")
    assert {r["category"] for r in rows} == set(CATEGORIES)
    for r in rows:
        assert oracle.score(r, r["completion"]).reward == 1.0, r
        assert len(r["prompt"].split()) < 30 and len(r["completion"].split()) < 30


def test_helpful_sft_is_the_helpful_rows_of_sft(built: tuple[Path, dict, float]) -> None:
    out = built[0]
    helpful = read_jsonl(out / "sft_helpful.jsonl")
    assert {r["category"] for r in helpful} == set(HELPFUL_CATEGORIES)
    every = read_jsonl(out / "sft.jsonl")
    assert helpful == [r for r in every if r["category"] in HELPFUL_CATEGORIES]
    # no demonstration of a value: no refusal, no "I don't know", no doctor
    assert not {"harmful", "unanswerable", "urgent", "fairness"} & {r["category"] for r in helpful}


def test_eval_is_held_out_and_balanced(built: tuple[Path, dict, float]) -> None:
    out = built[0]
    eval_rows = read_jsonl(out / "eval.jsonl")
    per = {c: sum(r["category"] == c for r in eval_rows) for c in CATEGORIES}
    assert set(per.values()) == {6}, per
    eval_prompts = {r["prompt"] for r in eval_rows}
    for name in TRAIN_FILES:
        assert not eval_prompts & {r["prompt"] for r in read_jsonl(out / name)}, name
    corpus = [r["text"] for r in read_jsonl(out / "corpus.jsonl")]
    user_turns = {m for t in corpus for m in re.findall(r"<\|user\|>(.*?)<\|assistant\|>", t)}
    assert user_turns and not eval_prompts & user_turns
    # the facts eval asks about are stated in the corpus (pretraining could learn them) ...
    world = load_world(out)
    text = "\n".join(corpus)
    for r in eval_rows:
        if r["category"] == "fact":
            assert re.search(rf"{r['entity']}\b[^.<]*\b{r['gold']}\b", text), r
    # ... but no training dataset asks about them
    held = {tuple(f) for f in world.eval_facts}
    for name in ("sft.jsonl", "rankings.jsonl", "rl_prompts.jsonl"):
        for r in read_jsonl(out / name):
            if r["category"] in ("fact", "format") and r.get("entity_id"):
                assert (r["entity_id"], r["attribute"]) not in held
    # unknown names used by eval never appear anywhere else
    for name in world.unknown_names_eval:
        assert not re.search(rf"\b{name}\b", text)


def test_same_seed_gives_byte_identical_files(
    built: tuple[Path, dict, float], tmp_path: Path
) -> None:
    out = built[0]
    again = tmp_path / "again"
    build_world(again, preset="micro", seed=0)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = tmp_path / "other"
    build_world(other, preset="micro", seed=1)
    assert (other / "sft.jsonl").read_bytes() != (out / "sft.jsonl").read_bytes()


def test_annotator_agreement_is_human_like(built: tuple[Path, dict, float]) -> None:
    agreement = built[1]["agreement"]
    assert 0.65 <= agreement["gold_agreement"] <= 0.80, agreement
    assert 0.5 <= agreement["inter_annotator_agreement"] <= 0.8, agreement


def test_tokenizer_chat_template_and_round_trip(built: tuple[Path, dict, float]) -> None:
    from transformers import AutoTokenizer

    out = built[0]
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    assert tok.chat_template == CHAT_TEMPLATE
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered == "<|user|>hi<|assistant|>"
    convo = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Which country is X in?"},
        {"role": "assistant", "content": "X is in Y."},
    ]
    assert tok.apply_chat_template(convo, tokenize=False) == render_chat(convo)
    assert (
        render_chat(convo)
        == "<|system|>Be kind.<|user|>Which country is X in?<|assistant|>X is in Y.<|end|>"
    )
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<|pad|>", "<|bos|>", "<|end|>")
    for special in ("<|system|>", "<|user|>", "<|assistant|>"):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    # no automatic BOS: tokenizing the rendered text equals the chat template's own ids
    ids = tok(render_chat(convo))["input_ids"]
    assert ids == list(tok.apply_chat_template(convo, tokenize=True)["input_ids"])
    assert ids[-1] == tok.eos_token_id
    corpus = [r["text"] for r in read_jsonl(out / "corpus.jsonl")]
    verify_tokenizer(tok, corpus[:300] + [r["prompt"] for r in read_jsonl(out / "eval.jsonl")])
    assert all(t.endswith("<|end|>") for t in corpus)


def test_verify_tokenizer_rejects_a_lossy_tokenizer() -> None:
    class Lossy:
        def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
            return {"input_ids": [ord(c) for c in text.lower()]}

        def decode(self, ids: list[int], **_: object) -> str:
            return "".join(chr(i) for i in ids)

    with pytest.raises(SandboxError, match="cannot represent"):
        verify_tokenizer(Lossy(), ["Zorbin is in Kelvaria."])


def test_principles_for_self_alignment(built: tuple[Path, dict, float]) -> None:
    out = built[0]
    doc = yaml.safe_load((out / "principles.yaml").read_text())
    assert len(doc["principles"]) >= 8
    assert {e["category"] for e in doc["exemplars"]} == set(CATEGORIES)
    for e in doc["exemplars"]:
        thoughts, answer = split_principled_answer(e["principled_answer"])
        assert thoughts == e["thoughts"] and answer == e["answer"]
        assert "Thoughts" not in answer and "Principles" not in answer
    seeds = read_jsonl(out / "self_align_seeds.jsonl")
    assert {s["category"] for s in seeds} == set(CATEGORIES) and all(
        s["question_type"] for s in seeds
    )


def test_oracle_and_world_reload_from_the_folder(built: tuple[Path, dict, float]) -> None:
    out = built[0]
    world = load_world(out)
    assert world.preset == "micro" and world.seed == 0
    assert GoldOracle.from_dir(out).world.to_dict() == world.to_dict()


def test_unknown_preset_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        SandboxError, match=r"unknown sandbox preset 'huge'; allowed: micro, small, tiny"
    ):
        build_world(tmp_path / "w", preset="huge")
    assert not (tmp_path / "w").exists()


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(SandboxError, match="not a sandbox world"):
        build_world(target, preset="micro")
    assert (target / "notes.txt").read_text() == "keep me"


def test_rebuild_replaces_a_world(tmp_path: Path) -> None:
    target = tmp_path / "w"
    build_world(target, preset="micro", seed=1)
    build_world(target, preset="micro", seed=2)
    assert load_world(target).seed == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def test_failed_build_leaves_nothing_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(build_mod, "train_tokenizer", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_world(tmp_path / "w", preset="micro")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_or_foreign_world_folders(built: tuple[Path, dict, float], tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="manifest.json is missing"):
        load_world(tmp_path)
    with pytest.raises(SandboxError, match="world.json is missing"):
        GoldOracle.from_dir(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(SandboxError, match="not a sandbox world"):
        load_world(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(SandboxError, match="corrupt"):
        load_world(tmp_path)
    (tmp_path / "world.json").write_text(
        '{"format": "alignkit-sandbox-world", "format_version": 1}'
    )
    with pytest.raises(SandboxError, match="corrupt sandbox world"):
        GoldOracle.from_dir(tmp_path)
    # a copy of a good world with one file changed fails its checksum
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in built[0].rglob("*"):
        if p.is_file():
            dest = copy / p.relative_to(built[0])
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(p.read_bytes())
    load_world(copy)
    with (copy / "sft.jsonl").open("a") as f:
        f.write('{"prompt": "x"}\n')
    with pytest.raises(SandboxError, match="sft.jsonl does not match"):
        load_world(copy)
