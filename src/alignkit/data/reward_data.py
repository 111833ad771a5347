"""Preference data for reward and cost models: reading with a skip policy, held-out splits by
prompt, and the orientation of safety pairs.

The record parsers in :mod:`alignkit.data.readers` already reject the common mistakes (repeated
or out-of-range ranking indices, chosen identical to rejected, empty responses) with
file:line:field. This module adds the policy a reward-model user needs on real, messy data:
stop at the first bad record (default), or skip it and count it in the run summary.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Union

from alignkit.data.readers import DataError, Row, iter_rows, parse_comparison, parse_ranking
from alignkit.data.records import Comparison, Ranking, as_text

PreferenceRecord = Union[Comparison, Ranking]


@dataclass
class PreferenceData:
    """Records of one kind read from one file, plus what was skipped and why."""

    kind: Literal["pairwise", "ranking"]
    records: list[PreferenceRecord]
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "records": len(self.records),
            "skipped": len(self.skipped),
            "skipped_examples": self.skipped[:5],
        }


def detect_format(row: Row) -> Literal["pairwise", "ranking"]:
    return "ranking" if "responses" in row.data else "pairwise"


def _parse(row: Row, kind: str) -> PreferenceRecord:
    if kind == "ranking":
        rec = parse_ranking(row)
        texts = [as_text(r) for r in rec.responses]
        dup = sorted({i for i, t in enumerate(texts) if texts.index(t) != i})
        if dup:
            raise DataError(
                f"{row.where('responses')}: responses {dup} repeat an earlier response; a "
                "ranking of identical texts carries no preference"
            )
        return rec
    return parse_comparison(row)


def read_preferences(
    path: str | Path,
    fmt: Literal["auto", "pairwise", "ranking"] = "auto",
    split: str | None = None,
    limit: int | None = None,
    on_invalid: Literal["error", "skip"] = "error",
    transform: Callable[[PreferenceRecord, Row], PreferenceRecord] | None = None,
) -> PreferenceData:
    """Read pairwise or ranking records; bad records raise :class:`DataError` naming
    file:line:field, or are skipped and counted when ``on_invalid='skip'``.

    ``transform`` runs on each parsed record with its row (so its errors can name the line),
    e.g. :func:`orient_safety_pair` for cost models.
    """
    kind: Literal["pairwise", "ranking"] | None = None if fmt == "auto" else fmt
    records: list[PreferenceRecord] = []
    skipped: list[str] = []
    for row in iter_rows(path, split):
        if kind is None:
            kind = detect_format(row)
        try:
            rec = _parse(row, kind)
            records.append(transform(rec, row) if transform is not None else rec)
        except DataError as e:
            if on_invalid == "error":
                raise
            skipped.append(str(e))
        if limit is not None and len(records) >= limit:
            break
    if not records:
        detail = f" ({len(skipped)} skipped; first: {skipped[0]})" if skipped else ""
        raise DataError(f"{path}: no usable records{detail}")
    assert kind is not None
    return PreferenceData(kind, records, skipped)


def split_by_prompt(
    records: Sequence[PreferenceRecord], fraction: float, seed: int
) -> tuple[list[PreferenceRecord], list[PreferenceRecord]]:
    """(train, held-out) with every prompt on one side only.

    Pairs of one prompt are strongly correlated (hh-rlhf has several per prompt); splitting
    them across train and eval would report memorisation as generalisation.
    """
    if fraction <= 0:
        return list(records), []
    keys = sorted({as_text(r.prompt) for r in records})
    random.Random(seed).shuffle(keys)
    n_eval = max(1, round(fraction * len(keys)))
    if n_eval >= len(keys):
        raise DataError(
            f"data.eval_fraction={fraction} holds out all {len(keys)} prompts; lower it or set "
            "data.eval_path"
        )
    held = set(keys[:n_eval])
    train = [r for r in records if as_text(r.prompt) not in held]
    evals = [r for r in records if as_text(r.prompt) in held]
    return train, evals


def orient_safety_pair(
    rec: Comparison, missing_safer: Literal["from_labels", "error"] = "from_labels", where: str = ""
) -> Comparison:
    """The pair rewritten as chosen = safer, rejected = less safe, with both safety labels.

    ``safer`` (0: chosen is safer, 1: rejected is) decides; without it the safe response of a
    safe/unsafe pair is the safer one. Both labels are required: the cost model's sign terms
    (safe → negative cost) need them.
    """
    loc = f"{where}: " if where else ""
    if rec.chosen_safe is None or rec.rejected_safe is None:
        raise DataError(
            f"{loc}a cost model needs per-response safety labels: add chosen_safe and "
            "rejected_safe (or is_response_0_safe / is_response_1_safe)"
        )
    safer = rec.safer
    if safer is None:
        if missing_safer == "error" or rec.chosen_safe == rec.rejected_safe:
            raise DataError(
                f"{loc}no 'safer' field, and "
                + (
                    "loss.missing_safer=error"
                    if missing_safer == "error"
                    else "both responses have the same safety label, so neither is safer"
                )
                + "; add safer (0 = chosen is safer, 1 = rejected is)"
            )
        safer = 0 if rec.chosen_safe else 1
    if safer == 0:
        return rec
    return replace(
        rec,
        chosen=rec.rejected,
        rejected=rec.chosen,
        chosen_safe=rec.rejected_safe,
        rejected_safe=rec.chosen_safe,
        safer=0,
    )


def safety_transform(
    missing_safer: Literal["from_labels", "error"] = "from_labels",
) -> Callable[[PreferenceRecord, Row], PreferenceRecord]:
    """A :func:`read_preferences` transform that orients every safety pair safer-first."""

    def transform(rec: PreferenceRecord, row: Row) -> PreferenceRecord:
        if not isinstance(rec, Comparison):
            raise DataError(f"{row.where()}: a cost model needs pairwise safety data, not rankings")
        return orient_safety_pair(rec, missing_safer, row.where())

    return transform
