"""Export collected rankings as the datasets alignkit's trainers read (DESIGN.md, "Data").

Three formats, one JSON object per line:

* ``ranking`` - ``{"prompt", "responses", "ranking", "annotator"}``: one row per submitted
  ranking, indices best first (reward models with a Plackett-Luce / listwise loss);
* ``pairwise`` - ``{"prompt", "chosen", "rejected"}``: every C(K, 2) pair each ranking
  implies (Bradley-Terry reward models, DPO and its variants). A ranking has no ties, so
  chosen and rejected always differ;
* ``safety`` - pairwise plus ``chosen_safe``, ``rejected_safe`` and ``safer`` (cost models,
  Safe RLHF). Only rankings submitted with safety labels are exported.

**The ``safer`` rule.** ``safer`` is 0 when ``chosen`` is the safer response and 1 when
``rejected`` is. A safe response is safer than an unsafe one whatever their rank; when both
carry the same label the annotator's ranking decides, so the better-ranked ``chosen`` is
taken as the safer (``safer = 0``). Hence ``safer = 1`` exactly when ``chosen`` is unsafe and
``rejected`` is safe.

Every row also carries ``annotator`` and ``item_id`` (and the item's import metadata under
``metadata`` when it has any) so a dataset can be traced back, filtered by annotator, or split
by item without leaking one prompt into both halves. Readers keep such fields as ``extra``.
When several annotators ranked an item, each ranking is exported: disagreement is signal that
the training loss (or a later filter) may use.

Files are written atomically (a temporary file, then a rename), so an interrupted export never
leaves a truncated dataset where a complete one is expected.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from alignkit.data.records import Ranking
from alignkit.feedback.store import FeedbackStore, StoredRanking


class ExportFormat(str, Enum):
    """Dataset shape to write (see the module docstring)."""

    ranking = "ranking"
    pairwise = "pairwise"
    safety = "safety"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: rows, the rankings they came from, rankings left out (unlabelled)."""

    rows: int
    rankings: int
    skipped_unlabelled: int


def safer_index(chosen_safe: bool, rejected_safe: bool) -> int:
    """0 if ``chosen`` is the safer response, 1 if ``rejected`` is (rule in the module docstring)."""
    return 1 if (rejected_safe and not chosen_safe) else 0


def to_record(stored: StoredRanking) -> Ranking:
    """A stored ranking as alignkit's ``Ranking`` record (extras: item id, safety, metadata)."""
    extra: dict[str, Any] = {"item_id": stored.item_id}
    if stored.safe is not None:
        extra["safe"] = stored.safe
    if stored.metadata:
        extra["metadata"] = stored.metadata
    return Ranking(
        prompt=stored.prompt,
        responses=stored.responses,
        ranking=stored.ranking,
        annotator=stored.annotator,
        extra=extra,
    )


def _trace(record: Ranking) -> dict[str, Any]:
    trace: dict[str, Any] = {"annotator": record.annotator, "item_id": record.extra["item_id"]}
    if "metadata" in record.extra:
        trace["metadata"] = record.extra["metadata"]
    return trace


def rows_for(record: Ranking, fmt: ExportFormat) -> list[dict[str, Any]]:
    """The dataset rows one ranking contributes in ``fmt`` (none for unlabelled safety)."""
    if fmt is ExportFormat.ranking:
        row: dict[str, Any] = {
            "prompt": record.prompt,
            "responses": record.responses,
            "ranking": record.ranking,
            "annotator": record.annotator,
            "item_id": record.extra["item_id"],
        }
        if "safe" in record.extra:
            row["safe"] = record.extra["safe"]
        if "metadata" in record.extra:
            row["metadata"] = record.extra["metadata"]
        return [row]
    safe: list[bool] | None = record.extra.get("safe")
    if fmt is ExportFormat.safety and safe is None:
        return []
    out = []
    for winner, loser in record.pairs():
        row = {
            "prompt": record.prompt,
            "chosen": record.responses[winner],
            "rejected": record.responses[loser],
        }
        if fmt is ExportFormat.safety and safe is not None:
            row["chosen_safe"] = bool(safe[winner])
            row["rejected_safe"] = bool(safe[loser])
            row["safer"] = safer_index(safe[winner], safe[loser])
        row.update(_trace(record))
        out.append(row)
    return out


def iter_rows(store: FeedbackStore, fmt: ExportFormat) -> Iterator[dict[str, Any]]:
    """All rows of an export, in submission order."""
    for stored in store.iter_rankings():
        yield from rows_for(to_record(stored), fmt)


def _write_lines(rows: Iterable[dict[str, Any]], handle: Any) -> int:
    n = 0
    for row in rows:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        n += 1
    return n


def export(store: FeedbackStore, fmt: ExportFormat, out: str | Path) -> ExportSummary:
    """Write the ``fmt`` dataset to ``out`` (``-`` for standard output), atomically."""
    rankings = 0
    unlabelled = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal rankings, unlabelled
        for stored in store.iter_rankings():
            record = to_record(stored)
            produced = rows_for(record, fmt)
            rankings += 1
            if fmt is ExportFormat.safety and not produced:
                unlabelled += 1
            yield from produced

    if str(out) == "-":
        n = _write_lines(rows(), sys.stdout)
        sys.stdout.flush()
        return ExportSummary(n, rankings, unlabelled)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            n = _write_lines(rows(), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return ExportSummary(n, rankings, unlabelled)
