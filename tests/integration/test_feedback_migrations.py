"""The migration runner: ordered, recorded, transactional, concurrent-safe, and in step with
the ORM models."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, Table, inspect, select, text

from alignkit.feedback.database import Database
from alignkit.feedback.importer import NewItem
from alignkit.feedback.migrations import (
    MIGRATIONS,
    VERSION_TABLE,
    Migration,
    SchemaTooNewError,
    current_version,
    migrate,
)
from alignkit.feedback.models import Base
from alignkit.feedback.store import FeedbackStore


def _v2_add_column(conn: Connection) -> None:
    # SQLAlchemy has no ALTER TABLE construct; a real migration writes such DDL as a constant
    # (never with values spliced in), exactly like this.
    conn.execute(text("ALTER TABLE feedback_annotations ADD COLUMN note VARCHAR(500)"))


def _fails(conn: Connection) -> None:
    md = MetaData()
    Table("feedback_half_done", md, Column("id", Integer, primary_key=True)).create(conn)
    raise RuntimeError("migration bug")


def test_new_database_reaches_latest_version_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "fb.db")
    try:
        assert current_version(db) == 0
        assert migrate(db) == [m.version for m in MIGRATIONS]
        assert current_version(db) == len(MIGRATIONS)
        assert migrate(db) == []  # a second run changes nothing
        with db.engine.connect() as conn:
            names = conn.execute(text(f"SELECT name FROM {VERSION_TABLE}")).scalars().all()
        assert names == [m.name for m in MIGRATIONS]
    finally:
        db.dispose()


def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    """Guards against editing models.py without writing the migration (or vice versa)."""
    db = Database(tmp_path / "fb.db")
    try:
        migrate(db)
        insp = inspect(db.engine)
        for table in Base.metadata.sorted_tables:
            cols = {c["name"]: c for c in insp.get_columns(table.name)}
            assert set(cols) == {c.name for c in table.columns}, table.name
            for column in table.columns:
                assert cols[column.name]["nullable"] == column.nullable, (table.name, column.name)
            uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints(table.name)}
            uniques |= {
                tuple(i["column_names"]) for i in insp.get_indexes(table.name) if i["unique"]
            }
            for column in table.columns:
                if column.unique:
                    assert (column.name,) in uniques, (table.name, column.name)
            expected_indexes = {i.name for i in table.indexes}
            assert expected_indexes <= {i["name"] for i in insp.get_indexes(table.name)}
        assert ("item_id", "annotator_id") in {
            tuple(u["column_names"]) for u in insp.get_unique_constraints("feedback_annotations")
        }
    finally:
        db.dispose()


def test_a_later_migration_upgrades_an_existing_database_keeping_data(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    store = FeedbackStore(path)
    store.add_items([NewItem("p", ["a", "b"], {}, "t:1")])
    token = store.add_annotator("alice")
    who = store.authenticate(token)
    assert who is not None
    ann = store.next_assignment(who)
    assert ann is not None
    store.submit(who, ann.id, [1, 0])
    store.close()

    db = Database(path)
    try:
        upgraded = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "annotation notes", _v2_add_column))
        assert migrate(db, upgraded) == [len(MIGRATIONS) + 1]
        with db.engine.connect() as conn:
            row = conn.execute(text("SELECT ranking, note FROM feedback_annotations")).one()
        assert row[1] is None and row[0] == "[1, 0]"
        # The released code now meets a database one version ahead and refuses to touch it.
        with pytest.raises(SchemaTooNewError, match="upgrade alignkit"):
            migrate(db)
    finally:
        db.dispose()
    with pytest.raises(SchemaTooNewError):
        FeedbackStore(path)


def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path: Path) -> None:
    db = Database(tmp_path / "fb.db")
    try:
        migrate(db)
        broken = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "broken", _fails))
        with pytest.raises(RuntimeError, match="migration bug"):
            migrate(db, broken)
        assert current_version(db) == len(MIGRATIONS)
        # Its DDL was rolled back with it (SQLite and PostgreSQL have transactional DDL).
        assert "feedback_half_done" not in inspect(db.engine).get_table_names()
    finally:
        db.dispose()


@pytest.mark.parametrize("versions", [(2,), (1, 3), (2, 1)])
def test_misnumbered_migrations_are_refused(tmp_path: Path, versions: tuple[int, ...]) -> None:
    db = Database(tmp_path / "fb.db")
    try:
        bad = tuple(Migration(v, f"m{v}", lambda conn: None) for v in versions)
        with pytest.raises(ValueError, match="numbered"):
            migrate(db, bad)
    finally:
        db.dispose()


def test_concurrent_runners_apply_each_migration_once(tmp_path: Path) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def counted(conn: Connection) -> None:
        with lock:
            calls.append(1)
        MIGRATIONS[0].apply(conn)

    steps = (Migration(1, "counted initial", counted),)
    dbs = [Database(tmp_path / "fb.db") for _ in range(6)]
    errors: list[BaseException] = []

    def run(db: Database) -> None:
        try:
            migrate(db, steps)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert not errors, errors
        assert len(calls) == 1
        with dbs[0].engine.connect() as conn:
            versions = conn.execute(select(text("version")).select_from(text(VERSION_TABLE))).all()
        assert [tuple(v) for v in versions] == [(1,)]
    finally:
        for db in dbs:
            db.dispose()


def test_sqlite_settings_behind_the_durability_promise(tmp_path: Path) -> None:
    """WAL + synchronous=FULL (commits survive crashes), a busy timeout and BEGIN IMMEDIATE for
    writers (concurrent writers queue instead of failing), foreign keys enforced."""
    from sqlalchemy import event

    db = Database(tmp_path / "fb.db")
    begins: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def _log(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if statement.startswith("BEGIN"):
            begins.append(statement)

    try:
        with db.engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
        assert pragma == {
            "journal_mode": "wal",
            "synchronous": 2,
            "busy_timeout": 30000,
            "foreign_keys": 1,
        }
        begins.clear()
        with db.write() as s:
            s.execute(text("SELECT 1"))
        with db.read() as s:
            s.execute(text("SELECT 1"))
        assert begins == ["BEGIN IMMEDIATE", "BEGIN"]
    finally:
        db.dispose()
