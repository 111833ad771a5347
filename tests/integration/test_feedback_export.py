"""Export: the three dataset formats, the `safer` rule, and a round trip from submitted
rankings through `alignkit feedback export` files back to alignkit records."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignkit.data.records import Comparison, Ranking
from alignkit.feedback.cli import app
from alignkit.feedback.export import ExportFormat, export, safer_index
from alignkit.feedback.importer import NewItem
from alignkit.feedback.store import FeedbackStore


@pytest.mark.parametrize(
    ("chosen_safe", "rejected_safe", "safer"),
    [(True, True, 0), (True, False, 0), (False, False, 0), (False, True, 1)],
)
def test_safer_rule(chosen_safe: bool, rejected_safe: bool, safer: int) -> None:
    """Safe beats unsafe whatever the rank; equal labels: the better-ranked (chosen) is safer."""
    assert safer_index(chosen_safe, rejected_safe) == safer


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def collected(tmp_path: Path) -> tuple[str, list[dict]]:
    """A database with 6 items of K=2..4 ranked by two annotators (one without safety labels
    on some items), and the submissions as the test made them."""
    db = str(tmp_path / "fb.db")
    store = FeedbackStore(db, per_item=2)
    rng = random.Random(7)
    items = []
    for i in range(6):
        k = 2 + i % 3
        prompt: object = f"prompt {i} <b>ünïcode</b>"
        if i == 5:
            prompt = [{"role": "user", "content": "chat prompt"}]
        items.append(NewItem(prompt, [f"r{i}.{j}" for j in range(k)], {"topic": f"t{i}"}, f"f:{i}"))
    store.add_items(items)
    submitted = []
    for name in ("alice", "bob"):
        who = store.authenticate(store.add_annotator(name))
        assert who is not None
        while (ann := store.next_assignment(who)) is not None:
            k = len(ann.item.responses)
            ranking = rng.sample(range(k), k)
            safe = (
                None
                if (name == "bob" and ann.item.id % 2)
                else [rng.random() < 0.6 for _ in range(k)]
            )
            store.submit(who, ann.id, ranking, safe)
            submitted.append(
                {
                    "annotator": name,
                    "item_id": ann.item.id,
                    "prompt": ann.item.prompt,
                    "responses": ann.item.responses,
                    "ranking": ranking,
                    "safe": safe,
                }
            )
    store.close()
    assert len(submitted) == 12
    return db, submitted


def run_export(db: str, fmt: str, out: Path) -> list[dict]:
    r = CliRunner().invoke(app, ["export", "--format", fmt, "--out", str(out), "--db", db])
    assert r.exit_code == 0, r.output
    return load(out)


def test_ranking_export_round_trips(collected: tuple[str, list[dict]], tmp_path: Path) -> None:
    db, submitted = collected
    rows = run_export(db, "ranking", tmp_path / "ranking.jsonl")
    assert len(rows) == len(submitted)
    for row, sub in zip(rows, submitted, strict=True):
        record = Ranking(
            prompt=row["prompt"],
            responses=row["responses"],
            ranking=row["ranking"],
            annotator=row["annotator"],
            extra={
                k: v
                for k, v in row.items()
                if k not in ("prompt", "responses", "ranking", "annotator")
            },
        )
        assert record.prompt == sub["prompt"] and record.responses == sub["responses"]
        assert record.ranking == sub["ranking"] and record.annotator == sub["annotator"]
        assert record.extra["item_id"] == sub["item_id"]
        assert record.extra.get("safe") == sub["safe"]
        assert record.extra["metadata"] == {"topic": f"t{sub['item_id'] - 1}"}


def test_pairwise_export_has_every_implied_pair(
    collected: tuple[str, list[dict]], tmp_path: Path
) -> None:
    db, submitted = collected
    rows = run_export(db, "pairwise", tmp_path / "pairs.jsonl")
    expected = []
    for sub in submitted:
        order = sub["ranking"]
        for a, b in itertools.combinations(range(len(order)), 2):
            expected.append(
                (
                    json.dumps(sub["prompt"]),
                    sub["responses"][order[a]],
                    sub["responses"][order[b]],
                    sub["annotator"],
                )
            )
    got = [(json.dumps(r["prompt"]), r["chosen"], r["rejected"], r["annotator"]) for r in rows]
    assert got == expected
    assert sum(len(s["ranking"]) * (len(s["ranking"]) - 1) // 2 for s in submitted) == len(rows)
    for r in rows:
        c = Comparison(prompt=r["prompt"], chosen=r["chosen"], rejected=r["rejected"])
        assert c.chosen != c.rejected
        assert set(r) == {"prompt", "chosen", "rejected", "annotator", "item_id", "metadata"}


def test_safety_export_labels_and_safer(collected: tuple[str, list[dict]], tmp_path: Path) -> None:
    db, submitted = collected
    out = tmp_path / "safety.jsonl"
    r = CliRunner().invoke(app, ["export", "--format", "safety", "--out", str(out), "--db", db])
    unlabelled = sum(1 for s in submitted if s["safe"] is None)
    assert unlabelled > 0
    assert f"{unlabelled} ranking(s) without safety labels left out" in r.output
    rows = load(out)
    expected = []
    for sub in submitted:
        if sub["safe"] is None:
            continue
        order, safe, resp = sub["ranking"], sub["safe"], sub["responses"]
        for a, b in itertools.combinations(range(len(order)), 2):
            w, l_ = order[a], order[b]
            expected.append(
                (resp[w], resp[l_], safe[w], safe[l_], 1 if (safe[l_] and not safe[w]) else 0)
            )
    got = [
        (r["chosen"], r["rejected"], r["chosen_safe"], r["rejected_safe"], r["safer"]) for r in rows
    ]
    assert got == expected
    assert {0, 1} <= {r["safer"] for r in rows}  # the data exercises both outcomes


def test_export_module_api_and_atomic_write(
    collected: tuple[str, list[dict]], tmp_path: Path
) -> None:
    db, submitted = collected
    store = FeedbackStore(db)
    try:
        out = tmp_path / "nested" / "ranking.jsonl"
        summary = export(store, ExportFormat.ranking, out)
        assert (summary.rows, summary.rankings) == (len(submitted), len(submitted))
        assert [p.name for p in out.parent.iterdir()] == ["ranking.jsonl"]  # no temp file left
    finally:
        store.close()


def test_export_of_empty_database_writes_empty_file(tmp_path: Path) -> None:
    db = str(tmp_path / "fb.db")
    rows = run_export(db, "pairwise", tmp_path / "empty.jsonl")
    assert rows == []


def test_cli_annotators_and_stats(collected: tuple[str, list[dict]]) -> None:
    db, submitted = collected
    runner = CliRunner()
    r = runner.invoke(app, ["add-annotator", "lead", "--admin", "--db", db])
    assert r.exit_code == 0
    token = r.stdout.strip()
    assert token.startswith("akf_") and "\n" not in token  # stdout holds only the token
    r = runner.invoke(app, ["add-annotator", "lead", "--db", db])
    assert r.exit_code == 2 and "already exists" in r.output
    r = runner.invoke(app, ["add-annotator", "lead", "--rotate", "--db", db])
    assert r.exit_code == 0 and r.stdout.strip() != token
    assert runner.invoke(app, ["revoke-annotator", "bob", "--db", db]).exit_code == 0
    r = runner.invoke(app, ["revoke-annotator", "nobody", "--db", db])
    assert r.exit_code == 2 and "no annotator named 'nobody'" in r.output

    r = runner.invoke(app, ["stats", "--per-item", "2", "--json", "--db", db])
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout)
    assert stats["rankings"] == len(submitted) and stats["items_complete"] == 6
    assert stats["agreement"]["comparisons"] == 6
    rows = {a["name"]: a for a in stats["annotators"]}
    assert rows["bob"]["active"] is False and rows["lead"]["is_admin"] is True
    r = runner.invoke(app, ["stats", "--per-item", "2", "--db", db])
    assert "complete (>= 2 ranking(s)): 6" in r.stdout and "bob (revoked)" in r.stdout
