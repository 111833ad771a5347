"""Reading candidate files: both row shapes, metadata, duplicates, and errors that name
file:line:field; importing into the store is all-or-nothing and idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignkit.feedback.cli import app
from alignkit.feedback.importer import MAX_RESPONSES, FeedbackDataError, read_candidates
from alignkit.feedback.store import FeedbackStore


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_k_response_rows_keep_order_and_metadata(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "hi"}]
    f = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"prompt": "p1", "responses": ["a", "b", "c"], "category": "math", "seed": 3},
            "",
            {"prompt": messages, "responses": [[{"role": "assistant", "content": "x"}], "y"]},
        ],
    )
    result = read_candidates(f)
    assert result.rows == 2
    first, second = result.items
    assert (first.prompt, first.responses) == ("p1", ["a", "b", "c"])
    assert first.metadata == {"category": "math", "seed": 3}
    assert first.source == f"{f}:1"
    assert second.prompt == messages and second.source == f"{f}:3"


def test_one_response_per_row_is_grouped_by_prompt(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"prompt": "p1", "response": "a", "model": "m", "seed": 0},
            {"prompt": "p2", "completion": "x", "model": "m", "seed": 0},
            {"prompt": "p1", "response": "b", "model": "m", "seed": 1},
            {"prompt": "p2", "completion": "y", "model": "m", "seed": 1},
            {"prompt": "p1", "response": "c", "model": "m", "seed": 2},
        ],
    )
    items = read_candidates(f).items
    assert [(i.prompt, i.responses) for i in items] == [("p1", ["a", "b", "c"]), ("p2", ["x", "y"])]
    # Fields equal across the group are item metadata; the others are kept per response.
    assert items[0].metadata == {"model": "m", "per_response": {"seed": [0, 1, 2]}}
    assert items[0].source == f"{f}:1"


def test_duplicate_responses_are_merged_and_counted(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"prompt": "p", "responses": ["a", "b", "a", "c", "b"]},
            {"prompt": "q", "response": "z"},
            {"prompt": "q", "response": "z"},
            {"prompt": "q", "response": "w"},
        ],
    )
    result = read_candidates(f)
    assert [i.responses for i in result.items] == [["a", "b", "c"], ["z", "w"]]
    assert result.duplicates_removed == 3


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("{oops", ":1: invalid JSON"),
        ("[1, 2]", ":1: expected a JSON object, got list"),
        ({"responses": ["a", "b"]}, ":1:prompt: missing"),
        ({"prompt": "", "responses": ["a", "b"]}, ":1:prompt: is empty"),
        (
            {"prompt": 5, "responses": ["a", "b"]},
            ":1:prompt: expected a string or a list of chat messages, got int",
        ),
        (
            {"prompt": [{"role": "bot", "content": "x"}], "responses": ["a", "b"]},
            ":1:prompt[0].role: expected one of",
        ),
        (
            {"prompt": [{"role": "user"}], "responses": ["a", "b"]},
            ":1:prompt[0].content: expected a string",
        ),
        ({"prompt": "p", "responses": "a"}, ":1:responses: expected a list, got str"),
        (
            {"prompt": "p", "responses": ["a", 7]},
            ":1:responses[1]: expected a string or a list of chat messages, got int",
        ),
        (
            {"prompt": "p", "responses": ["a", "a"]},
            ":1:responses: needs at least 2 distinct responses, got 1",
        ),
        (
            {"prompt": "p", "responses": [str(i) for i in range(MAX_RESPONSES + 1)]},
            f":1:responses: {MAX_RESPONSES + 1} responses; at most",
        ),
        ({"prompt": "p"}, ":1:responses: missing"),
        ({"prompt": "p", "responses": ["a", "b"], "response": "c"}, ":1:response: give either"),
        (
            {"prompt": "p", "response": "only one"},
            ":1:response: this prompt has 1 distinct response(s)",
        ),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, row: object, expected: str) -> None:
    f = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(FeedbackDataError) as info:
        read_candidates(f)
    assert f"{f}{expected}" in str(info.value), str(info.value)


def test_all_problems_are_reported_not_just_the_first(tmp_path: Path) -> None:
    rows: list[object] = [{"prompt": "ok", "responses": ["a", "b"]}]
    rows += [{"prompt": i} for i in range(30)]
    f = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(FeedbackDataError) as info:
        read_candidates(f)
    assert len(info.value.problems) == 20
    assert "30 problem(s)" in str(info.value) and "and 10 more" in str(info.value)
    assert f"{f}:2:prompt" in str(info.value) and f"{f}:21:prompt" in str(info.value)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(FeedbackDataError, match="no items found"):
        read_candidates(f)


def test_cli_import_is_idempotent_and_all_or_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "fb.db")
    good = write_jsonl(
        tmp_path / "good.jsonl",
        [{"prompt": f"p{i}", "responses": ["a", "b"]} for i in range(3)],
    )
    runner = CliRunner()
    r = runner.invoke(app, ["import", "--responses", str(good), "--db", db])
    assert r.exit_code == 0, r.output
    assert "3 item(s) added, 0 already present" in r.output
    r = runner.invoke(app, ["import", "--responses", str(good), "--db", db])
    assert "0 item(s) added, 3 already present" in r.output

    mixed = write_jsonl(
        tmp_path / "mixed.jsonl",
        [{"prompt": "new", "responses": ["a", "b"]}, {"prompt": "bad", "responses": ["a"]}],
    )
    r = runner.invoke(app, ["import", "--responses", str(mixed), "--db", db])
    assert r.exit_code == 2
    assert f"{mixed}:2:responses: needs at least 2 distinct responses" in r.output
    assert "Traceback" not in r.output
    store = FeedbackStore(db)
    try:
        assert store.stats().items == 3  # nothing from the bad file was stored
    finally:
        store.close()


def test_cli_refuses_unsupported_databases(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"prompt": "p", "responses": ["a", "b"]}])
    runner = CliRunner()
    for db, message in [
        ("mysql://u@h/db", "not supported"),
        ("sqlite://", "in-memory"),
        (str(tmp_path / "missing" / "fb.db"), "does not exist"),
    ]:
        r = runner.invoke(app, ["import", "--responses", str(good), "--db", db])
        assert r.exit_code == 2 and message in r.output, r.output


def test_skip_identical_leaves_out_prompts_with_one_distinct_response(tmp_path: Path) -> None:
    # A peaked model sampled K times often returns one text K times: with --skip-identical
    # those prompts are listed and left out, every other item is imported.
    f = write_jsonl(
        tmp_path / "cands.jsonl",
        [
            {"prompt": "p0", "responses": ["a", "b"]},
            {"prompt": "p1", "responses": ["same", "same", "same"]},
            {"prompt": "p2", "response": "x"},
            {"prompt": "p2", "response": "x"},
            {"prompt": "p3", "response": "y"},
            {"prompt": "p3", "response": "z"},
        ],
    )
    with pytest.raises(FeedbackDataError) as exc:
        read_candidates(f)
    assert "--skip-identical" in str(exc.value)
    result = read_candidates(f, skip_identical=True)
    assert [i.prompt for i in result.items] == ["p0", "p3"]
    assert result.skipped_identical == [f"{f}:2", f"{f}:3"]

    db = str(tmp_path / "fb.db")
    r = CliRunner().invoke(app, ["import", "--responses", str(f), "--db", db, "--skip-identical"])
    assert r.exit_code == 0, r.output
    assert "2 item(s) added" in r.output
    assert f"2 prompt(s) left out, all their responses identical: {f}:2, {f}:3" in r.output


def test_skip_identical_does_not_hide_other_problems(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "cands.jsonl",
        [{"prompt": "p0", "responses": ["a", "a"]}, {"prompt": "p1", "responses": "not a list"}],
    )
    with pytest.raises(FeedbackDataError, match=r"cands.jsonl:2:responses: expected a list"):
        read_candidates(f, skip_identical=True)
    only = write_jsonl(tmp_path / "only.jsonl", [{"prompt": "p0", "responses": ["a", "a"]}])
    with pytest.raises(FeedbackDataError, match="every prompt's responses were identical"):
        read_candidates(only, skip_identical=True)
