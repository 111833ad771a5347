"""Read candidate responses to be ranked from JSONL, checking every row before anything is stored.

Two row shapes are accepted, and may be mixed in one file:

* ``{"prompt": ..., "responses": [r0, r1, ...]}``: one item per row (what
  ``alignkit generate --num-samples K`` writes);
* ``{"prompt": ..., "response": r}`` (or ``"completion"``): one response per row; rows with the
  same prompt are grouped, in file order, into one item. This is the shape most sampling
  scripts write, one line per sample.

Prompts and responses are strings or chat-message lists (``[{"role", "content"}]``), as
everywhere in alignkit. Any other field is kept as item metadata and comes back in the export.
For grouped rows, fields equal on every row of a group become item metadata and the rest are
kept per response under ``metadata["per_response"]`` so nothing is silently dropped.

Identical responses within an item are merged (ranking two copies of one text would produce
pairs whose chosen and rejected are the same); the summary counts them. An item needs at least
two distinct responses. Every problem is reported as ``file:line:field: message`` and nothing
is imported while any remains, so a file is never half imported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.data.records import ROLES, Text

MAX_RESPONSES = 16
"""More responses than this cannot be ranked carefully by a person; split such items."""

_MAX_REPORTED = 20


class FeedbackDataError(ValueError):
    """A candidates file has problems; ``problems`` lists each as ``file:line:field: message``."""

    def __init__(self, problems: list[str], total: int | None = None) -> None:
        self.problems = problems
        total = len(problems) if total is None else total
        more = f"\n... and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(f"{total} problem(s) in candidates file:\n" + "\n".join(problems) + more)


@dataclass(frozen=True)
class NewItem:
    """An item ready to be stored: validated prompt, distinct responses, metadata, origin."""

    prompt: Text
    responses: list[Text]
    metadata: dict[str, Any]
    source: str
    duplicates_removed: int = 0

    @property
    def content_hash(self) -> str:
        """Identity of the item: re-importing the same prompt and responses adds nothing."""
        return content_hash(self.prompt, self.responses)


@dataclass
class ReadResult:
    """What a candidates file holds once validated."""

    items: list[NewItem] = field(default_factory=list)
    rows: int = 0
    duplicates_removed: int = 0
    # ``file:line`` of prompts left out with ``skip_identical``: all their responses were the
    # same text (a peaked model sampling K times), so there is nothing to rank.
    skipped_identical: list[str] = field(default_factory=list)


def content_hash(prompt: Text, responses: list[Text]) -> str:
    """SHA-256 of the canonical JSON of prompt and responses."""
    canonical = json.dumps(
        {"prompt": prompt, "responses": responses},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_text(value: Any, where: str, *, allow_empty: bool) -> str | None:
    """Why ``value`` is not a valid prompt/response (``None`` when it is)."""
    if isinstance(value, str):
        if not allow_empty and not value.strip():
            return f"{where}: is empty"
        return None
    if isinstance(value, list):
        if not value:
            return f"{where}: message list is empty"
        for i, message in enumerate(value):
            at = f"{where}[{i}]"
            if not isinstance(message, dict):
                return f"{at}: expected a message object, got {type(message).__name__}"
            if message.get("role") not in ROLES:
                return f"{at}.role: expected one of {', '.join(ROLES)}, got {message.get('role')!r}"
            if not isinstance(message.get("content"), str):
                return f"{at}.content: expected a string"
        return None
    return f"{where}: expected a string or a list of chat messages, got {type(value).__name__}"


def _dedupe(responses: list[Text]) -> tuple[list[Text], list[int], int]:
    """Distinct responses in first-seen order, the kept indices, and how many were dropped."""
    seen: set[str] = set()
    kept: list[Text] = []
    kept_idx: list[int] = []
    for i, r in enumerate(responses):
        key = json.dumps(r, sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            kept.append(r)
            kept_idx.append(i)
    return kept, kept_idx, len(responses) - len(kept)


@dataclass
class _Group:
    prompt: Text
    first: str
    responses: list[Text] = field(default_factory=list)
    extras: list[dict[str, Any]] = field(default_factory=list)


def _rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    with path.open("r", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield lineno, None, f"invalid JSON ({exc.msg} at column {exc.colno})"


def read_candidates(path: str | Path, skip_identical: bool = False) -> ReadResult:
    """Validate ``path`` and return its items; raises ``FeedbackDataError`` listing problems.

    With ``skip_identical`` a prompt whose responses are all one text (after de-duplication
    fewer than 2) is left out and listed in ``skipped_identical`` instead of being an error;
    every other problem still fails the whole file.
    """
    path = Path(path)
    name = str(path)
    problems: list[str] = []
    result = ReadResult()
    skipped = result.skipped_identical if skip_identical else None
    groups: dict[str, _Group] = {}
    # Item order follows the file: each K-row and each group's first row claim a slot.
    order: list[NewItem | _Group] = []

    for lineno, row, error in _rows(path):
        result.rows += 1
        at = f"{name}:{lineno}"
        if error is not None:
            problems.append(f"{at}: {error}")
            continue
        if not isinstance(row, dict):
            problems.append(f"{at}: expected a JSON object, got {type(row).__name__}")
            continue
        if "prompt" not in row:
            problems.append(f"{at}:prompt: missing")
            continue
        bad = check_text(row["prompt"], f"{at}:prompt", allow_empty=False)
        if bad:
            problems.append(bad)
            continue
        single_key = (
            "response" if "response" in row else "completion" if "completion" in row else None
        )
        if "responses" in row and single_key:
            problems.append(
                f"{at}:{single_key}: give either 'responses' (a list) or one response per row, not both"
            )
            continue
        if "responses" in row:
            responses = row["responses"]
            if not isinstance(responses, list):
                problems.append(f"{at}:responses: expected a list, got {type(responses).__name__}")
                continue
            errors = [
                e
                for i, r in enumerate(responses)
                if (e := check_text(r, f"{at}:responses[{i}]", allow_empty=True))
            ]
            if errors:
                problems.extend(errors)
                continue
            kept, _, dropped = _dedupe(responses)
            if len(kept) < 2:
                msg = f"{at}:responses: needs at least 2 distinct responses, got {len(kept)}"
                _too_few(len(kept), at, msg, problems, skipped)
                continue
            if len(kept) > MAX_RESPONSES:
                problems.append(
                    f"{at}:responses: {len(kept)} responses; at most {MAX_RESPONSES} can be "
                    "ranked by a person, split the item"
                )
                continue
            meta = {k: v for k, v in row.items() if k not in ("prompt", "responses")}
            order.append(NewItem(row["prompt"], kept, meta, at, dropped))
            continue
        if single_key is None:
            problems.append(f"{at}:responses: missing (or give one 'response' per row)")
            continue
        bad = check_text(row[single_key], f"{at}:{single_key}", allow_empty=True)
        if bad:
            problems.append(bad)
            continue
        key = json.dumps(row["prompt"], sort_keys=True, ensure_ascii=False)
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(row["prompt"], at)
            order.append(group)
        group.responses.append(row[single_key])
        group.extras.append({k: v for k, v in row.items() if k not in ("prompt", single_key)})

    for entry in order:
        item = entry if isinstance(entry, NewItem) else _group_item(entry, problems, skipped)
        if item is not None:
            result.items.append(item)
            result.duplicates_removed += item.duplicates_removed
    if problems:
        raise FeedbackDataError(problems[:_MAX_REPORTED], total=len(problems))
    if not result.items:
        why = (
            f"every prompt's responses were identical ({len(result.skipped_identical)} skipped)"
            if result.skipped_identical
            else "the file has no rows"
        )
        raise FeedbackDataError([f"{name}: no items found ({why})"])
    return result


def _too_few(
    distinct: int, at: str, msg: str, problems: list[str], skipped: list[str] | None
) -> None:
    """A prompt with fewer than 2 distinct responses: left out and listed in ``skipped`` when
    it is one text repeated and skipping was asked for, otherwise a problem (with the hint)."""
    if distinct == 1 and skipped is not None:
        skipped.append(at)
    else:
        problems.append(
            msg + (" (import --skip-identical leaves such prompts out)" if distinct else "")
        )


def _group_item(
    group: _Group, problems: list[str], skipped: list[str] | None = None
) -> NewItem | None:
    kept, kept_idx, dropped = _dedupe(group.responses)
    if len(kept) < 2:
        msg = (
            f"{group.first}:response: this prompt has {len(kept)} distinct response(s) in the "
            "file; an item needs at least 2"
        )
        _too_few(len(kept), group.first, msg, problems, skipped)
        return None
    if len(kept) > MAX_RESPONSES:
        problems.append(
            f"{group.first}:response: this prompt has {len(kept)} responses in the file; at "
            f"most {MAX_RESPONSES} can be ranked by a person"
        )
        return None
    extras = [group.extras[i] for i in kept_idx]
    keys = set().union(*extras)
    common = {k: extras[0][k] for k in keys if all(k in e and e[k] == extras[0][k] for e in extras)}
    per_response = {k: [e.get(k) for e in extras] for k in sorted(keys - common.keys())}
    meta = dict(sorted(common.items()))
    if per_response:
        meta["per_response"] = per_response
    return NewItem(group.prompt, kept, meta, group.first, dropped)
