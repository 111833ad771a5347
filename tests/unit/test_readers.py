from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from alignkit.data.readers import DataError, read_records, split_implicit_prompt
from alignkit.data.records import Demonstration, Ranking


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_sft_formats(tmp_path: Path) -> None:
    f = _jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "p", "completion": "c", "id": 7},
            {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]},
            {
                "prompt": [{"role": "user", "content": "u"}],
                "completion": [{"role": "assistant", "content": "a"}],
            },
        ],
    )
    recs = read_records(f, "sft")
    assert isinstance(recs[0], Demonstration) and recs[0].extra == {"id": 7}
    assert recs[1].messages is not None and recs[2].prompt == [{"role": "user", "content": "u"}]


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}, "{not json"])
    with pytest.raises(DataError, match=r"d\.jsonl:2: malformed JSON"):
        read_records(f, "sft")


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "p"}])
    with pytest.raises(DataError, match=r"d\.jsonl:2.*'prompt' and 'completion'"):
        read_records(f, "sft")
    f2 = _jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "a"}])
    with pytest.raises(DataError, match=r"p\.jsonl:1: field 'rejected': missing"):
        read_records(f2, "pairwise")


def test_wrong_types_and_roles(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "completion": 3}])
    with pytest.raises(DataError, match="field 'completion': expected a string"):
        read_records(f, "sft")
    f = _jsonl(tmp_path / "m.jsonl", [{"messages": [{"role": "bot", "content": "x"}]}])
    with pytest.raises(DataError, match=r"messages'\[0\]\.role"):
        read_records(f, "sft")


def test_missing_file() -> None:
    with pytest.raises(DataError, match="not found"):
        read_records("/nonexistent/x.jsonl", "sft")


def test_other_containers(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "completion": "c"}] * 3
    (tmp_path / "d.json").write_text(json.dumps(rows))
    assert len(read_records(tmp_path / "d.json", "sft")) == 3
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows))
    assert len(read_records(tmp_path / "d.jsonl.gz", "sft")) == 3
    import datasets

    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    assert len(read_records(tmp_path / "d.parquet", "sft")) == 3
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "saved"))
    assert len(read_records(tmp_path / "saved", "sft")) == 3
    with pytest.raises(DataError, match="no split 'test'"):
        read_records(tmp_path / "saved", "sft", split="test")
    (tmp_path / "c.txt").write_text("doc one\nline two\n\ndoc two\n")
    assert [r.text for r in read_records(tmp_path / "c.txt", "lm")] == [
        "doc one\nline two",
        "doc two",
    ]


def test_rankings_validate_indices(tmp_path: Path) -> None:
    ok = {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [2, 0, 1]}
    rec = read_records(_jsonl(tmp_path / "r.jsonl", [ok]), "ranking")[0]
    assert isinstance(rec, Ranking) and rec.pairs() == [(2, 0), (2, 1), (0, 1)]
    for bad, msg in [
        ([0, 0, 1], "repeated"),
        ([0, 1, 5], "out of range"),
        ([0, 1], "ranks 2 of 3"),
    ]:
        f = _jsonl(tmp_path / "r.jsonl", [{**ok, "ranking": bad}])
        with pytest.raises(DataError, match=msg):
            read_records(f, "ranking")
    by_score = {"prompt": "p", "responses": ["a", "b"], "scores": [0.1, 0.9]}
    assert read_records(_jsonl(tmp_path / "s.jsonl", [by_score]), "ranking")[0].ranking == [1, 0]


def test_identical_pair_is_rejected(tmp_path: Path) -> None:
    f = _jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "same", "rejected": "same"}])
    with pytest.raises(DataError, match="identical"):
        read_records(f, "pairwise")


def test_pku_safe_rlhf_format(tmp_path: Path) -> None:
    row = {
        "prompt": "p",
        "response_0": "r0",
        "response_1": "r1",
        "better_response_id": 1,
        "safer_response_id": 0,
        "is_response_0_safe": True,
        "is_response_1_safe": False,
    }
    c = read_records(_jsonl(tmp_path / "k.jsonl", [row]), "pairwise")[0]
    assert (c.chosen, c.rejected, c.chosen_safe, c.rejected_safe, c.safer) == (
        "r1",
        "r0",
        False,
        True,
        1,
    )


def test_implicit_prompt_split() -> None:
    chosen = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: Sure, here"
    rejected = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me\n\nAssistant: Sorry no"
    p, c, r = split_implicit_prompt(chosen, rejected)
    assert p.endswith("help me\n\nAssistant:") and c == " Sure, here" and r == " Sorry no"


def test_hh_rlhf_harmless_every_row_splits_at_last_human_turn(shared_data: Path) -> None:
    f = shared_data / "hh-rlhf-harmless-base" / "test.jsonl.gz"
    if not f.exists():
        pytest.skip(f"{f} not present")
    recs = read_records(f, "pairwise")
    assert len(recs) > 100
    for rec in recs:
        assert isinstance(rec.prompt, str) and rec.prompt.endswith("\n\nAssistant:")
        last_human = rec.prompt.rfind("\n\nHuman:")
        assert "\n\nAssistant:" not in rec.prompt[last_human : -len("\n\nAssistant:")]
        assert rec.chosen != rec.rejected
