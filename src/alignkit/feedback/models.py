"""ORM models: the current schema of the feedback database.

The tables are created and changed only by ``migrations.py``, never by ``create_all`` on these
classes: a migration must produce the same schema on a new database and on an old one being
upgraded. A test compares the migrated schema with these models so the two cannot drift.

Table names carry a ``feedback_`` prefix so the app can share a PostgreSQL database with other
tables. Timestamps are naive UTC: SQLite has no time-zone type, and one convention for both
back ends keeps lease comparisons correct.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

STATUS_ASSIGNED = "assigned"
STATUS_SUBMITTED = "submitted"
STATUS_SKIPPED = "skipped"
STATUSES = (STATUS_ASSIGNED, STATUS_SUBMITTED, STATUS_SKIPPED)


def utcnow() -> datetime:
    """Naive UTC now (see the module docstring for why naive)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base for the feedback tables."""


class Item(Base):
    """A prompt with K candidate responses waiting to be ranked."""

    __tablename__ = "feedback_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """SHA-256 of the canonical prompt + responses: importing a file twice adds nothing."""
    prompt: Mapped[Any] = mapped_column(JSON, nullable=False)
    responses: Mapped[Any] = mapped_column(JSON, nullable=False)
    meta: Mapped[Any] = mapped_column("metadata", JSON, nullable=False)
    source: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Annotator(Base):
    """A person who ranks. Only a SHA-256 of their token is stored, never the token."""

    __tablename__ = "feedback_annotators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Annotation(Base):
    """One annotator's work on one item: assigned, then submitted (with a ranking) or skipped.

    The unique (item, annotator) pair is what guarantees an item never reaches the same person
    twice, whatever the application code does.
    """

    __tablename__ = "feedback_annotations"
    __table_args__ = (
        UniqueConstraint("item_id", "annotator_id", name="uq_feedback_annotation_item_annotator"),
        CheckConstraint(
            "status IN ('assigned', 'submitted', 'skipped')", name="ck_feedback_annotation_status"
        ),
        Index("ix_feedback_annotations_annotator_status", "annotator_id", "status"),
        Index("ix_feedback_annotations_item_status", "item_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("feedback_items.id"))
    annotator_id: Mapped[int] = mapped_column(ForeignKey("feedback_annotators.id"))
    status: Mapped[str] = mapped_column(String(16))
    ranking: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    """Response indices, best first; set when submitted."""
    safe: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    """Per-response safety labels (by response index), or null when not labelled."""
    assigned_at: Mapped[datetime] = mapped_column(DateTime)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
