"""Schema migrations: a version table and an ordered list of steps.

Why not alembic: the feedback schema is three tables. A runner of ~100 lines with its own tests
covers what alembic would (ordered, recorded, transactional, safe against two processes
starting at once) without another dependency or a second configuration file for users.

Rules for adding a migration:

* append a ``Migration`` with the next version number; never edit or reorder a released one;
* write its DDL against its own ``MetaData`` (as ``_v1_initial`` does), never against the ORM
  models, which always describe the *latest* schema; DDL that SQLAlchemy has no construct for
  (``ALTER TABLE ... ADD COLUMN``) is a constant ``text()`` statement, never one with values
  spliced in;
* update ``models.py`` to match; ``test_feedback_migrations.py`` compares the two.

Each migration runs in its own transaction together with the row that records it, so a failed
step leaves the database at the previous version (SQLite and PostgreSQL both have
transactional DDL). Runners in concurrent processes are serialised: SQLite by its write lock,
PostgreSQL by an advisory lock taken before the version is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    func,
    insert,
    select,
)

from alignkit.feedback.database import MIGRATION_LOCK_KEY, Database
from alignkit.feedback.models import utcnow

VERSION_TABLE = "feedback_schema_version"


@dataclass(frozen=True)
class Migration:
    """One schema step: ``apply`` receives a connection inside an open transaction."""

    version: int
    name: str
    apply: Callable[[Connection], None]


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer alignkit; refuse rather than corrupt it."""


def _v1_initial(conn: Connection) -> None:
    """Items, annotators and annotations, as first released."""
    md = MetaData()
    Table(
        "feedback_items",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("content_hash", String(64), nullable=False, unique=True),
        Column("prompt", JSON, nullable=False),
        Column("responses", JSON, nullable=False),
        Column("metadata", JSON, nullable=False),
        Column("source", String(1024), nullable=False),
        Column("created_at", DateTime, nullable=False),
    )
    Table(
        "feedback_annotators",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(200), nullable=False, unique=True),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("is_admin", Boolean, nullable=False),
        Column("active", Boolean, nullable=False),
        Column("created_at", DateTime, nullable=False),
    )
    Table(
        "feedback_annotations",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("item_id", Integer, ForeignKey("feedback_items.id"), nullable=False),
        Column("annotator_id", Integer, ForeignKey("feedback_annotators.id"), nullable=False),
        Column("status", String(16), nullable=False),
        Column("ranking", JSON, nullable=True),
        Column("safe", JSON, nullable=True),
        Column("assigned_at", DateTime, nullable=False),
        Column("completed_at", DateTime, nullable=True),
        UniqueConstraint("item_id", "annotator_id", name="uq_feedback_annotation_item_annotator"),
        CheckConstraint(
            "status IN ('assigned', 'submitted', 'skipped')", name="ck_feedback_annotation_status"
        ),
        Index("ix_feedback_annotations_annotator_status", "annotator_id", "status"),
        Index("ix_feedback_annotations_item_status", "item_id", "status"),
    )
    md.create_all(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema: items, annotators, annotations", _v1_initial),
)

_version_md = MetaData()
_version_table = Table(
    VERSION_TABLE,
    _version_md,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", DateTime, nullable=False),
)


def _check_order(migrations: Sequence[Migration]) -> None:
    expected = list(range(1, len(migrations) + 1))
    got = [m.version for m in migrations]
    if got != expected:
        raise ValueError(f"migrations must be numbered 1..{len(migrations)} in order, got {got}")


def _current(conn: Connection) -> int:
    return int(
        conn.execute(select(func.coalesce(func.max(_version_table.c.version), 0))).scalar_one()
    )


def current_version(db: Database) -> int:
    """The schema version recorded in the database (0 for a new, empty database)."""
    with db.write_connection() as conn:
        _version_md.create_all(conn, checkfirst=True)
        return _current(conn)


def migrate(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Bring the database to the latest version; returns the versions applied (often none).

    Raises ``SchemaTooNewError`` when the database is ahead of ``migrations`` (an older alignkit
    opening a newer database), because writing with an outdated idea of the schema could
    corrupt it.
    """
    _check_order(migrations)
    latest = len(migrations)
    applied: list[int] = []
    while True:
        with db.write_connection() as conn:
            db.serialize(conn, MIGRATION_LOCK_KEY)
            _version_md.create_all(conn, checkfirst=True)
            version = _current(conn)
            if version > latest:
                raise SchemaTooNewError(
                    f"database schema is at version {version} but this alignkit knows only "
                    f"up to {latest}: upgrade alignkit before using this database"
                )
            if version == latest:
                return applied
            step = migrations[version]
            step.apply(conn)
            conn.execute(
                insert(_version_table).values(
                    version=step.version, name=step.name, applied_at=utcnow()
                )
            )
        applied.append(step.version)
