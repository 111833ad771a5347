"""Database connections: the one place that knows SQLite's and PostgreSQL's quirks.

The feedback app promises that an acknowledged ranking is never lost and that concurrent
annotators never fail with "database is locked". Both promises depend on settings that are
easy to get wrong, so they live here and nowhere else:

* **SQLite** (the embedded default) runs in WAL mode, so readers never block the writer and a
  killed process replays its log on the next open; ``synchronous=FULL`` so a commit survives
  power loss, not only a process crash; a busy timeout so a writer waits for the lock instead
  of failing; foreign keys on (SQLite leaves them off). Write transactions begin with
  ``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes fails at once with
  ``SQLITE_BUSY`` (the busy timeout does not apply to that lock upgrade) when another writer
  committed in between; taking the write lock at ``BEGIN`` makes every writer queue instead.
* **PostgreSQL** (``--db postgresql://...``) uses psycopg 3 and ``READ COMMITTED``. Work that
  must be serialised across processes (assigning items, migrations) takes a transaction-level
  advisory lock, which PostgreSQL releases by itself at commit, rollback or disconnect.

Other databases are refused with a clear message rather than half supported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for the write lock before giving up (seconds)."""

_WRITE_OPTION = "alignkit_feedback_write"
"""Execution option that marks an engine whose transactions will write (see ``_begin``)."""

# Advisory lock keys (PostgreSQL): arbitrary constants, distinct per purpose, so that the app
# never collides with itself. They are bound as parameters, never spliced into SQL text.
ASSIGNMENT_LOCK_KEY = 0x616C_6B66_0001
MIGRATION_LOCK_KEY = 0x616C_6B66_0002


class DatabaseConfigError(ValueError):
    """The database URL names something the feedback app cannot use; the message says why."""


def normalize_url(db: str | Path) -> URL:
    """Turn a user's ``--db`` value into a SQLAlchemy URL.

    A plain path means a SQLite file (the common case should need no URL syntax). ``postgres://``
    and ``postgresql://`` select psycopg 3 explicitly, because SQLAlchemy's default PostgreSQL
    driver differs between versions and psycopg2 is not a dependency.
    """
    text = str(db).strip()
    if not text:
        raise DatabaseConfigError("--db is empty: give a file path or a database URL")
    if "://" not in text:
        return URL.create("sqlite", database=str(Path(text).expanduser().resolve()))
    if text.startswith("postgres://"):
        text = "postgresql://" + text[len("postgres://") :]
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise DatabaseConfigError(f"--db {text!r} is not a valid database URL: {exc}") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:" or "mode=memory" in text:
            raise DatabaseConfigError(
                "--db: an in-memory SQLite database disappears when the process exits and is "
                "not shared between connections; give a file path such as feedback.db"
            )
        return url
    if backend == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return url
    raise DatabaseConfigError(
        f"--db: database {backend!r} is not supported; use a SQLite file path or a "
        "postgresql:// URL"
    )


def redact(url: URL) -> str:
    """The URL with its password hidden, for logs and messages."""
    return url.render_as_string(hide_password=True)


def _sqlite_engine(url: URL) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        pool_size=8,
        max_overflow=24,
        pool_timeout=60,
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below: the sqlite3 module's
        # own implicit BEGIN is always DEFERRED and would defeat BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        busy_ms = int(SQLITE_BUSY_TIMEOUT_S * 1000)
        # PRAGMA values cannot be bound parameters; these are integer and keyword constants.
        cursor.execute(f"PRAGMA busy_timeout={busy_ms:d}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        writes = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


def _postgres_engine(url: URL) -> Engine:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise DatabaseConfigError(
            "--db is a PostgreSQL URL but the psycopg driver is not installed: "
            "pip install 'psycopg[binary]>=3.1'"
        ) from None
    return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=24, pool_timeout=60)


class Database:
    """An engine plus the two kinds of transaction the feedback store needs.

    ``read()`` opens an ordinary transaction; ``write()`` one that will write (on SQLite it holds
    the write lock from its first statement). Both commit on a clean exit and roll back on an
    exception, so callers cannot forget either.
    """

    def __init__(self, db: str | Path) -> None:
        self.url = normalize_url(db)
        self.backend = self.url.get_backend_name()
        if self.backend == "sqlite":
            assert self.url.database is not None
            parent = Path(self.url.database).parent
            if not parent.is_dir():
                raise DatabaseConfigError(
                    f"--db: folder {parent} does not exist; create it or choose another path"
                )
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = _postgres_engine(self.url)
        self._write_engine = self.engine.execution_options(**{_WRITE_OPTION: True})

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A unit of work that writes; committed when the block exits without an exception."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A Core connection inside a write transaction (for migrations and DDL)."""
        with self._write_engine.begin() as connection:
            yield connection

    def serialize(self, conn: Session | Connection, key: int) -> None:
        """Make the rest of this transaction exclusive among all transactions using ``key``.

        SQLite already serialises write transactions (``BEGIN IMMEDIATE``). PostgreSQL gets a
        transaction-scoped advisory lock, released automatically at commit or rollback.
        """
        if self.backend == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(key)))

    def dispose(self) -> None:
        """Close pooled connections (call when the app or command is done)."""
        self.engine.dispose()
