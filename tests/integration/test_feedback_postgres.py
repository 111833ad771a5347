"""The PostgreSQL path: URL handling, migrations (also two processes at once), the whole
import -> annotate over HTTP -> export cycle, and the advisory lock that serialises claims.

Runs when ALIGNKIT_TEST_POSTGRES_URL names a database the role may create schemas in (each
test gets a fresh schema, dropped afterwards); skipped with that reason otherwise. With the variable set,
test_feedback_api.py and test_feedback_concurrency.py also run every test on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from typer.testing import CliRunner

from alignkit.feedback.app import create_app
from alignkit.feedback.cli import app as cli
from alignkit.feedback.database import ASSIGNMENT_LOCK_KEY, Database, normalize_url
from alignkit.feedback.importer import NewItem
from alignkit.feedback.migrations import MIGRATIONS, current_version
from alignkit.feedback.store import FeedbackStore
from alignkit.feedback.testing import POSTGRES_ENV, POSTGRES_SKIP_REASON, fresh_postgres_database

pytestmark = pytest.mark.skipif(not os.environ.get(POSTGRES_ENV), reason=POSTGRES_SKIP_REASON)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_postgres_database(os.environ[POSTGRES_ENV]) as url:
        yield url


def test_urls_select_psycopg3() -> None:
    for raw in ("postgresql://u:p@h:5/d", "postgres://u:p@h:5/d"):
        url = normalize_url(raw)
        assert url.drivername == "postgresql+psycopg" and url.database == "d"
    assert normalize_url("postgresql+psycopg://u@h/d").drivername == "postgresql+psycopg"


def test_two_processes_migrating_at_once_apply_each_step_once(pg_url: str) -> None:
    code = (
        "import sys; from alignkit.feedback.database import Database; "
        "from alignkit.feedback.migrations import migrate; "
        "db = Database(sys.argv[1]); print(migrate(db)); db.dispose()"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, pg_url], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    # Exactly one process applied the migrations; the others found nothing to do.
    assert outputs.count("[]") == 2
    assert str([m.version for m in MIGRATIONS]) in outputs
    db = Database(pg_url)
    try:
        assert current_version(db) == len(MIGRATIONS)
        assert {"feedback_items", "feedback_annotators", "feedback_annotations"} <= set(
            inspect(db.engine).get_table_names()
        )
    finally:
        db.dispose()


def test_import_annotate_export_cycle(pg_url: str, tmp_path: Path) -> None:
    candidates = tmp_path / "c.jsonl"
    candidates.write_text(
        "\n".join(
            json.dumps({"prompt": f"p{i} <script>x</script>", "responses": ["a", "b", "c"], "i": i})
            for i in range(3)
        ),
        encoding="utf-8",
    )
    runner = CliRunner()
    r = runner.invoke(cli, ["import", "--responses", str(candidates), "--db", pg_url])
    assert r.exit_code == 0 and "3 item(s) added" in r.output, r.output
    r = runner.invoke(cli, ["add-annotator", "alice", "--db", pg_url])
    assert r.exit_code == 0
    token = r.stdout.strip().splitlines()[0]

    store = FeedbackStore(pg_url)
    try:
        with TestClient(create_app(pg_url, store=store)) as client:
            h = {"Authorization": f"Bearer {token}"}
            rankings = [[2, 0, 1], [0, 1, 2], [1, 2, 0]]
            for ranking in rankings:
                ann = client.post("/api/next", headers=h).json()["annotation"]
                body = {"ranking": ranking, "safe": [True, False, True]}
                url = f"/api/annotations/{ann['annotation_id']}"
                assert client.put(url, json=body, headers=h).status_code == 200
                assert client.put(url, json=body, headers=h).json()["duplicate"] is True
            assert client.post("/api/next", headers=h).json()["annotation"] is None
            assert client.get("/api/me").status_code == 401
    finally:
        store.close()

    out = tmp_path / "ranking.jsonl"
    r = runner.invoke(cli, ["export", "--format", "ranking", "--out", str(out), "--db", pg_url])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["ranking"] for row in rows] == rankings
    assert [row["metadata"] for row in rows] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert rows[0]["prompt"] == "p0 <script>x</script>"


def test_claims_wait_for_the_advisory_lock(pg_url: str) -> None:
    """A claim blocks while another transaction holds the assignment lock, then proceeds."""
    store = FeedbackStore(pg_url, per_item=1)
    try:
        store.add_items([NewItem("p", ["a", "b"], {}, "t:1")])
        who = store.authenticate(store.add_annotator("alice"))
        assert who is not None
        done = threading.Event()
        claimed: list[object] = []

        def claim() -> None:
            claimed.append(store.next_assignment(who))
            done.set()

        with store.db.write() as holder:
            store.db.serialize(holder, ASSIGNMENT_LOCK_KEY)
            worker = threading.Thread(target=claim)
            worker.start()
            assert not done.wait(0.5), "the claim did not wait for the lock"
        assert done.wait(10), "the claim did not proceed after the lock was released"
        worker.join(timeout=10)
        assert claimed and claimed[0] is not None
    finally:
        store.close()
