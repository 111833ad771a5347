"""The feedback store: every read and write the app, the CLI and the export make.

Each public method is one transaction and returns plain dataclasses, never live ORM objects,
so callers cannot touch the database outside a transaction by accident.

How the guarantees are kept:

* **Assignment is race-free.** ``next_assignment`` runs in a serialised write transaction
  (SQLite's write lock; a PostgreSQL advisory lock), so two annotators asking at once cannot
  both take an item's last slot. The unique (item, annotator) constraint makes "never twice to
  the same person" a database fact, not a hope.
* **Acknowledged means committed.** ``submit`` returns only after its transaction commits; the
  HTTP handler replies only after ``submit`` returns.
* **Submissions are idempotent and immutable.** The state change is a conditional ``UPDATE ...
  WHERE status = 'assigned'``; a retry of an already-stored submission (the client lost the
  reply) is recognised and answered as a duplicate, while a *different* ranking for a
  submitted item is refused: acknowledged data never changes.
* **Abandoned work is reclaimed.** An assignment not finished within the lease stops holding
  one of the item's ``per_item`` slots, so someone else may take it. Its holder may still
  submit (the item then has one ranking more than asked); nothing is discarded.
* **All SQL is built by SQLAlchemy with bound parameters**, never from strings.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any, cast

from sqlalchemy import CursorResult, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from alignkit.data.records import Text
from alignkit.feedback.agreement import AgreementSummary, Judgement, summarize
from alignkit.feedback.database import ASSIGNMENT_LOCK_KEY, Database
from alignkit.feedback.importer import NewItem
from alignkit.feedback.migrations import migrate
from alignkit.feedback.models import (
    STATUS_ASSIGNED,
    STATUS_SKIPPED,
    STATUS_SUBMITTED,
    Annotation,
    Annotator,
    Item,
    utcnow,
)

TOKEN_PREFIX = "akf_"
DEFAULT_LEASE = timedelta(minutes=30)


class FeedbackError(Exception):
    """Base class of the store's refusals; each maps to one HTTP status in the app."""


class NotFoundError(FeedbackError):
    """No such record *for this annotator* (another annotator's work is reported the same way,
    so its existence is not revealed)."""


class ConflictError(FeedbackError):
    """The request contradicts what is already stored (e.g. a different ranking resubmitted)."""


class InvalidRankingError(FeedbackError, ValueError):
    """A ranking or safety list that does not fit the item."""


class AnnotatorExistsError(FeedbackError):
    """``add_annotator`` with a name that is taken (use ``rotate=True`` to issue a new token)."""


def hash_token(token: str) -> str:
    """SHA-256 of a token.

    Tokens are 256 random bits, so a slow password hash (bcrypt, argon2) would add nothing
    against guessing while making every request pay for it; a leaked database still yields no
    usable token.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def validate_ranking(ranking: Sequence[int], safe: Sequence[bool] | None, k: int) -> None:
    """Raise ``InvalidRankingError`` unless ``ranking`` is a permutation of ``0..k-1``.

    ``safe``, when given, must hold one boolean per response, by response index.
    """
    if len(ranking) != k:
        raise InvalidRankingError(
            f"ranking must list all {k} responses exactly once, got {len(ranking)} indices"
        )
    bad = [i for i in ranking if not 0 <= i < k]
    if bad:
        raise InvalidRankingError(f"ranking indices out of range 0..{k - 1}: {bad}")
    if len(set(ranking)) != k:
        repeated = sorted({i for i in ranking if list(ranking).count(i) > 1})
        raise InvalidRankingError(f"ranking repeats indices {repeated}")
    if safe is not None and len(safe) != k:
        raise InvalidRankingError(f"safe must have one label per response ({k}), got {len(safe)}")


@dataclass(frozen=True)
class AnnotatorInfo:
    """Who is making a request."""

    id: int
    name: str
    is_admin: bool


@dataclass(frozen=True)
class ItemView:
    """What an annotator sees of an item."""

    id: int
    prompt: Text
    responses: list[Text]


@dataclass(frozen=True)
class AnnotationView:
    """One annotator's annotation of one item."""

    id: int
    item: ItemView
    status: str
    ranking: list[int] | None
    safe: list[bool] | None
    assigned_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class SubmitResult:
    """The outcome of a submission; ``duplicate`` marks a retry of one already stored."""

    annotation_id: int
    status: str
    duplicate: bool


@dataclass(frozen=True)
class Progress:
    """An annotator's counts, and how many more items they could still be given."""

    submitted: int
    skipped: int
    open: int
    available: int


@dataclass(frozen=True)
class ImportSummary:
    """What ``add_items`` did."""

    added: int
    already_present: int


@dataclass(frozen=True)
class AnnotatorStats:
    """Per-annotator line of the admin page."""

    name: str
    is_admin: bool
    active: bool
    submitted: int
    skipped: int
    open: int
    median_seconds: float | None
    agreement: float | None


@dataclass(frozen=True)
class Stats:
    """Counts and agreement for the admin page and ``alignkit feedback stats``."""

    items: int
    per_item: int
    items_complete: int
    rankings: int
    skipped: int
    open: int
    items_by_rankings: dict[int, int]
    agreement: AgreementSummary
    annotators: list[AnnotatorStats] = field(default_factory=list)


@dataclass(frozen=True)
class StoredRanking:
    """A submitted ranking with its item, as the export needs it."""

    annotation_id: int
    item_id: int
    prompt: Text
    responses: list[Text]
    ranking: list[int]
    safe: list[bool] | None
    annotator: str
    metadata: dict[str, Any]
    completed_at: datetime


def _item_view(item: Item) -> ItemView:
    return ItemView(id=item.id, prompt=item.prompt, responses=list(item.responses))


def _annotation_view(ann: Annotation, item: Item) -> AnnotationView:
    return AnnotationView(
        id=ann.id,
        item=_item_view(item),
        status=ann.status,
        ranking=list(ann.ranking) if ann.ranking is not None else None,
        safe=list(ann.safe) if ann.safe is not None else None,
        assigned_at=ann.assigned_at,
        completed_at=ann.completed_at,
    )


class FeedbackStore:
    """Repository over one feedback database.

    ``per_item`` is how many different annotators should rank each item; ``lease`` how long an
    assignment holds its slot before it may be handed to someone else. Opening a store migrates
    the database to the current schema (pass ``migrate_schema=False`` to skip, e.g. in tests of
    the migrations themselves).
    """

    def __init__(
        self,
        db: str | Path,
        *,
        per_item: int = 1,
        lease: timedelta = DEFAULT_LEASE,
        migrate_schema: bool = True,
    ) -> None:
        if per_item < 1:
            raise ValueError(f"per_item must be at least 1, got {per_item}")
        if lease <= timedelta(0):
            raise ValueError(f"lease must be positive, got {lease}")
        self.db = Database(db)
        self.per_item = per_item
        self.lease = lease
        if migrate_schema:
            migrate(self.db)

    def close(self) -> None:
        """Release pooled connections."""
        self.db.dispose()

    # ---------------------------------------------------------------- annotators

    def add_annotator(self, name: str, *, is_admin: bool = False, rotate: bool = False) -> str:
        """Create an annotator (or, with ``rotate``, replace an existing one's token).

        Returns the new token; it is shown once and only its hash is stored.
        """
        name = name.strip()
        if not name or len(name) > 200:
            raise ValueError("annotator name must be 1 to 200 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.write() as s:
            existing = s.scalars(select(Annotator).where(Annotator.name == name)).one_or_none()
            if existing is not None and not rotate:
                raise AnnotatorExistsError(
                    f"annotator {name!r} already exists; use --rotate (rotate=True) to issue a new token "
                    "(the old one stops working)"
                )
            if existing is None:
                s.add(
                    Annotator(
                        name=name,
                        token_hash=hash_token(token),
                        is_admin=is_admin,
                        active=True,
                        created_at=utcnow(),
                    )
                )
            else:
                existing.token_hash = hash_token(token)
                existing.active = True
                existing.is_admin = existing.is_admin or is_admin
        return token

    def revoke_annotator(self, name: str) -> None:
        """Disable an annotator's token; their submitted rankings are kept."""
        with self.db.write() as s:
            result = cast(
                CursorResult[Any],
                s.execute(update(Annotator).where(Annotator.name == name).values(active=False)),
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no annotator named {name!r}")

    def authenticate(self, token: str) -> AnnotatorInfo | None:
        """The active annotator holding ``token``, or ``None``."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        with self.db.read() as s:
            row = s.scalars(
                select(Annotator).where(
                    Annotator.token_hash == hash_token(token), Annotator.active.is_(True)
                )
            ).one_or_none()
            if row is None:
                return None
            return AnnotatorInfo(id=row.id, name=row.name, is_admin=row.is_admin)

    # ---------------------------------------------------------------- items

    def add_items(self, items: Iterable[NewItem]) -> ImportSummary:
        """Store new items in one transaction; items already present (same content) are skipped."""
        batch = list(items)
        added = 0
        with self.db.write() as s:
            hashes = [it.content_hash for it in batch]
            present: set[str] = set()
            for start in range(0, len(hashes), 500):
                chunk = hashes[start : start + 500]
                present.update(
                    s.scalars(select(Item.content_hash).where(Item.content_hash.in_(chunk)))
                )
            now = utcnow()
            for it, h in zip(batch, hashes, strict=True):
                if h in present:
                    continue
                present.add(h)
                s.add(
                    Item(
                        content_hash=h,
                        prompt=it.prompt,
                        responses=it.responses,
                        meta=it.metadata,
                        source=it.source[:1024],
                        created_at=now,
                    )
                )
                added += 1
        return ImportSummary(added=added, already_present=len(batch) - added)

    # ---------------------------------------------------------------- assignment

    def _active_count(self, cutoff: datetime) -> Any:
        """Per-item count of slots taken: submitted, or assigned within the lease."""
        return (
            select(func.count(Annotation.id))
            .where(
                Annotation.item_id == Item.id,
                or_(
                    Annotation.status == STATUS_SUBMITTED,
                    and_(Annotation.status == STATUS_ASSIGNED, Annotation.assigned_at >= cutoff),
                ),
            )
            .scalar_subquery()
        )

    def _available_for(self, annotator_id: int, cutoff: datetime) -> Any:
        mine = exists().where(
            Annotation.item_id == Item.id, Annotation.annotator_id == annotator_id
        )
        return and_(~mine, self._active_count(cutoff) < self.per_item)

    def next_assignment(self, annotator: AnnotatorInfo) -> AnnotationView | None:
        """The annotator's open assignment, or a newly claimed item; ``None`` when none is left.

        Items are handed out in import order, so with ``per_item > 1`` the first items collect
        all their rankings before later ones start (agreement is measurable early).
        """
        with self.db.write() as s:
            self.db.serialize(s, ASSIGNMENT_LOCK_KEY)
            open_row = s.execute(
                select(Annotation, Item)
                .join(Item, Item.id == Annotation.item_id)
                .where(
                    Annotation.annotator_id == annotator.id,
                    Annotation.status == STATUS_ASSIGNED,
                )
                .order_by(Annotation.id)
                .limit(1)
            ).one_or_none()
            if open_row is not None:
                return _annotation_view(open_row[0], open_row[1])
            now = utcnow()
            item = s.scalars(
                select(Item)
                .where(self._available_for(annotator.id, now - self.lease))
                .order_by(Item.id)
                .limit(1)
            ).one_or_none()
            if item is None:
                return None
            ann = Annotation(
                item_id=item.id, annotator_id=annotator.id, status=STATUS_ASSIGNED, assigned_at=now
            )
            s.add(ann)
            s.flush()
            return _annotation_view(ann, item)

    def get_annotation(self, annotator: AnnotatorInfo, annotation_id: int) -> AnnotationView:
        """One of the annotator's own annotations (``NotFoundError`` for anyone else's)."""
        with self.db.read() as s:
            row = s.execute(
                select(Annotation, Item)
                .join(Item, Item.id == Annotation.item_id)
                .where(Annotation.id == annotation_id, Annotation.annotator_id == annotator.id)
            ).one_or_none()
            if row is None:
                raise NotFoundError(f"annotation {annotation_id} not found")
            return _annotation_view(row[0], row[1])

    def list_annotations(
        self, annotator: AnnotatorInfo, *, limit: int = 50, offset: int = 0
    ) -> list[AnnotationView]:
        """The annotator's own finished annotations, newest first."""
        with self.db.read() as s:
            rows = s.execute(
                select(Annotation, Item)
                .join(Item, Item.id == Annotation.item_id)
                .where(
                    Annotation.annotator_id == annotator.id,
                    Annotation.status != STATUS_ASSIGNED,
                )
                .order_by(Annotation.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            return [_annotation_view(a, i) for a, i in rows]

    def _finish(
        self,
        s: Session,
        annotator: AnnotatorInfo,
        annotation_id: int,
        status: str,
        ranking: list[int] | None,
        safe: list[bool] | None,
    ) -> SubmitResult:
        """Move an own, open annotation to ``status``; the WHERE clause makes it race-free."""
        result = cast(
            CursorResult[Any],
            s.execute(
                update(Annotation)
                .where(
                    Annotation.id == annotation_id,
                    Annotation.annotator_id == annotator.id,
                    Annotation.status == STATUS_ASSIGNED,
                )
                .values(status=status, ranking=ranking, safe=safe, completed_at=utcnow())
            ),
        )
        if result.rowcount == 1:
            return SubmitResult(annotation_id, status, duplicate=False)
        current = s.scalars(
            select(Annotation).where(
                Annotation.id == annotation_id, Annotation.annotator_id == annotator.id
            )
        ).one_or_none()
        if current is None:
            raise NotFoundError(f"annotation {annotation_id} not found")
        if current.status == status and current.ranking == ranking and current.safe == safe:
            return SubmitResult(annotation_id, status, duplicate=True)
        raise ConflictError(
            f"annotation {annotation_id} was already {current.status}"
            + (" with a different ranking" if current.status == status else "")
            + "; acknowledged work cannot be changed"
        )

    def submit(
        self,
        annotator: AnnotatorInfo,
        annotation_id: int,
        ranking: Sequence[int],
        safe: Sequence[bool] | None = None,
    ) -> SubmitResult:
        """Store a ranking (and optional safety labels); returns after the commit."""
        ranking_list = [int(i) for i in ranking]
        safe_list = [bool(x) for x in safe] if safe is not None else None
        with self.db.write() as s:
            row = s.execute(
                select(Annotation.id, Item.responses)
                .join(Item, Item.id == Annotation.item_id)
                .where(Annotation.id == annotation_id, Annotation.annotator_id == annotator.id)
            ).one_or_none()
            if row is None:
                raise NotFoundError(f"annotation {annotation_id} not found")
            validate_ranking(ranking_list, safe_list, len(row.responses))
            return self._finish(
                s, annotator, annotation_id, STATUS_SUBMITTED, ranking_list, safe_list
            )

    def skip(self, annotator: AnnotatorInfo, annotation_id: int) -> SubmitResult:
        """Give an item back; it will go to someone else and never return to this annotator."""
        with self.db.write() as s:
            return self._finish(s, annotator, annotation_id, STATUS_SKIPPED, None, None)

    def progress(self, annotator: AnnotatorInfo) -> Progress:
        """Counts for the annotator's progress bar."""
        with self.db.read() as s:
            # A Result has .keys() (column names), so dict(result) would misread it.
            counts: dict[str, int] = {
                row_status: int(n)
                for row_status, n in s.execute(
                    select(Annotation.status, func.count(Annotation.id))
                    .where(Annotation.annotator_id == annotator.id)
                    .group_by(Annotation.status)
                )
            }
            available = s.scalar(
                select(func.count(Item.id)).where(
                    self._available_for(annotator.id, utcnow() - self.lease)
                )
            )
        return Progress(
            submitted=counts.get(STATUS_SUBMITTED, 0),
            skipped=counts.get(STATUS_SKIPPED, 0),
            open=counts.get(STATUS_ASSIGNED, 0),
            available=int(available or 0),
        )

    # ---------------------------------------------------------------- reporting

    def iter_rankings(self) -> Iterator[StoredRanking]:
        """Every submitted ranking, in submission order (one consistent snapshot)."""
        with self.db.read() as s:
            rows = s.execute(
                select(Annotation, Item, Annotator.name)
                .join(Item, Item.id == Annotation.item_id)
                .join(Annotator, Annotator.id == Annotation.annotator_id)
                .where(Annotation.status == STATUS_SUBMITTED)
                .order_by(Annotation.id)
                .execution_options(yield_per=500)
            )
            for ann, item, name in rows:
                yield StoredRanking(
                    annotation_id=ann.id,
                    item_id=item.id,
                    prompt=item.prompt,
                    responses=list(item.responses),
                    ranking=[int(i) for i in ann.ranking or ()],
                    safe=list(ann.safe) if ann.safe is not None else None,
                    annotator=name,
                    metadata=dict(item.meta),
                    completed_at=ann.completed_at or ann.assigned_at,
                )

    def stats(self) -> Stats:
        """Counts, per-annotator lines and inter-annotator agreement."""
        with self.db.read() as s:
            n_items = int(s.scalar(select(func.count(Item.id))) or 0)
            annotators = s.scalars(select(Annotator).order_by(Annotator.name)).all()
            rows = s.execute(
                select(
                    Annotation.item_id,
                    Annotation.annotator_id,
                    Annotation.status,
                    Annotation.ranking,
                    Annotation.safe,
                    Annotation.assigned_at,
                    Annotation.completed_at,
                )
            ).all()
        names = {a.id: a.name for a in annotators}
        by_item: dict[int, list[Judgement]] = defaultdict(list)
        status_counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        seconds: dict[int, list[float]] = defaultdict(list)
        totals: dict[str, int] = defaultdict(int)
        for r in rows:
            status_counts[r.annotator_id][r.status] += 1
            totals[r.status] += 1
            if r.status == STATUS_SUBMITTED:
                by_item[r.item_id].append(Judgement(names[r.annotator_id], r.ranking, r.safe))
                if r.completed_at is not None:
                    seconds[r.annotator_id].append((r.completed_at - r.assigned_at).total_seconds())
        agreement = summarize(by_item)
        histogram: dict[int, int] = defaultdict(int)
        for judgements in by_item.values():
            histogram[len(judgements)] += 1
        histogram[0] = n_items - len(by_item)
        return Stats(
            items=n_items,
            per_item=self.per_item,
            items_complete=sum(1 for j in by_item.values() if len(j) >= self.per_item),
            rankings=totals[STATUS_SUBMITTED],
            skipped=totals[STATUS_SKIPPED],
            open=totals[STATUS_ASSIGNED],
            items_by_rankings=dict(sorted(histogram.items())),
            agreement=agreement,
            annotators=[
                AnnotatorStats(
                    name=a.name,
                    is_admin=a.is_admin,
                    active=a.active,
                    submitted=status_counts[a.id][STATUS_SUBMITTED],
                    skipped=status_counts[a.id][STATUS_SKIPPED],
                    open=status_counts[a.id][STATUS_ASSIGNED],
                    median_seconds=median(seconds[a.id]) if seconds[a.id] else None,
                    agreement=agreement.per_annotator.get(a.name),
                )
                for a in annotators
            ],
        )
