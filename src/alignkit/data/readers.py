"""Read datasets from local files into typed records, stopping early on malformed rows.

Accepted containers: JSONL (``.jsonl``, ``.jsonl.gz``), JSON (a list of objects, or
``{"data": [...]}``), parquet, CSV, plain text (``.txt``: one document per blank-line
separated block, for language modeling), and a folder written by ``datasets.save_to_disk``
(a Dataset or a DatasetDict with ``split``). Accepted row shapes follow TRL's conventions
(DESIGN.md "Data"); each ``parse_*`` function turns one row into one record or raises
:class:`DataError` naming file, line and field.

The whole file is validated before training starts: a bad record at line 90,000 must not
crash a run after an hour.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from alignkit.data.records import (
    ROLES,
    Comparison,
    Demonstration,
    LMText,
    Message,
    PromptOnly,
    Ranking,
    Text,
    Unpaired,
)


class DataError(ValueError):
    """A user-facing data problem; the message names file:line:field and what to do."""


@dataclass(frozen=True)
class Row:
    """One raw row with its origin, so every error can point at it."""

    source: str
    line: int
    data: dict[str, Any]

    def where(self, field: str | None = None) -> str:
        loc = f"{self.source}:{self.line}"
        return f"{loc}: field '{field}'" if field else loc


# --------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------


def iter_rows(path: str | Path, split: str | None = None) -> Iterator[Row]:
    """Yield the rows of a dataset file or folder. Line numbers are 1-based file lines for
    JSONL and row numbers (1-based) for other containers."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found (check data.path; paths are relative to the cwd)")
    if p.is_dir():
        yield from _iter_saved_dataset(p, split)
        return
    name = p.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        yield from _iter_jsonl(p)
    elif name.endswith(".json"):
        yield from _iter_json(p)
    elif name.endswith(".parquet"):
        yield from _iter_parquet(p)
    elif name.endswith(".csv"):
        with p.open(newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                yield Row(str(p), i, dict(row))
    elif name.endswith(".txt"):
        yield from _iter_text(p)
    else:
        raise DataError(
            f"{p}: unsupported file type; use .jsonl, .json, .parquet, .csv, .txt or a "
            "datasets.save_to_disk folder"
        )


def _iter_jsonl(p: Path) -> Iterator[Row]:
    opener: Callable[..., Any] = gzip.open if p.name.endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8") as f:
        for i, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{p}:{i}: malformed JSON ({e.msg} at column {e.colno}); each line must be "
                    "one JSON object"
                ) from None
            if not isinstance(obj, dict):
                raise DataError(f"{p}:{i}: expected a JSON object, got {type(obj).__name__}")
            yield Row(str(p), i, obj)


def _iter_json(p: Path) -> Iterator[Row]:
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: malformed JSON ({e.msg})") from None
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        raise DataError(f"{p}: expected a list of objects (or {{'data': [...]}})")
    for i, item in enumerate(obj, start=1):
        if not isinstance(item, dict):
            raise DataError(f"{p}: item {i}: expected an object, got {type(item).__name__}")
        yield Row(str(p), i, item)


def _iter_parquet(p: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq  # datasets depends on pyarrow

    table = pq.read_table(p)
    for i, item in enumerate(table.to_pylist(), start=1):
        yield Row(str(p), i, item)


def _iter_text(p: Path) -> Iterator[Row]:
    block: list[str] = []
    start = 1
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if line.strip():
                if not block:
                    start = i
                block.append(line.rstrip("\n"))
            elif block:
                yield Row(str(p), start, {"text": "\n".join(block)})
                block = []
    if block:
        yield Row(str(p), start, {"text": "\n".join(block)})


def _iter_saved_dataset(p: Path, split: str | None) -> Iterator[Row]:
    if not (p / "dataset_info.json").exists() and not (p / "dataset_dict.json").exists():
        raise DataError(
            f"{p}: a folder must be written by datasets.save_to_disk (no dataset_info.json or "
            "dataset_dict.json found)"
        )
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(p))
    if isinstance(ds, DatasetDict):
        if split is None:
            if len(ds) != 1:
                raise DataError(
                    f"{p}: DatasetDict with splits {sorted(ds)}; set data.split to one of them"
                )
            split = next(iter(ds))
        if split not in ds:
            raise DataError(f"{p}: no split {split!r}; available: {sorted(ds)}")
        ds = ds[split]
    for i, item in enumerate(ds, start=1):
        yield Row(f"{p}[{split}]" if split else str(p), i, dict(item))


# --------------------------------------------------------------------------------------------
# Field validation
# --------------------------------------------------------------------------------------------


def _require(row: Row, field: str) -> Any:
    if field not in row.data or row.data[field] is None:
        present = ", ".join(sorted(row.data)) or "none"
        raise DataError(f"{row.where(field)}: missing (fields present: {present})")
    return row.data[field]


def _text(row: Row, field: str, value: Any, allow_empty: bool = False) -> Text:
    if isinstance(value, str):
        if not allow_empty and not value.strip():
            raise DataError(f"{row.where(field)}: empty text")
        return value
    if isinstance(value, list):
        return _messages(row, field, value)
    raise DataError(
        f"{row.where(field)}: expected a string or a list of messages, got {type(value).__name__}"
    )


def _messages(row: Row, field: str, value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{row.where(field)}: expected a non-empty list of messages")
    out: list[Message] = []
    for j, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(
                f"{row.where(field)}[{j}]: each message needs 'role' and 'content' keys"
            )
        if m["role"] not in ROLES:
            raise DataError(
                f"{row.where(field)}[{j}].role: {m['role']!r} is not one of {', '.join(ROLES)}"
            )
        if not isinstance(m["content"], str):
            raise DataError(f"{row.where(field)}[{j}].content: expected a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _extra(row: Row, used: set[str]) -> dict[str, Any]:
    return {k: v for k, v in row.data.items() if k not in used}


def _bool(row: Row, field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise DataError(f"{row.where(field)}: expected true/false, got {value!r}")


# --------------------------------------------------------------------------------------------
# Row parsers, one per record kind
# --------------------------------------------------------------------------------------------


def parse_lm(row: Row) -> LMText:
    value = _require(row, "text")
    if not isinstance(value, str):
        raise DataError(f"{row.where('text')}: expected a string")
    return LMText(text=value)


def parse_demonstration(row: Row) -> Demonstration:
    d = row.data
    if "messages" in d and d["messages"] is not None:
        msgs = _messages(row, "messages", d["messages"])
        if not any(m["role"] == "assistant" for m in msgs):
            raise DataError(
                f"{row.where('messages')}: no assistant turn, so there is nothing to learn; "
                "add one or drop the record"
            )
        return Demonstration(messages=msgs, extra=_extra(row, {"messages"}))
    if "prompt" in d and "completion" in d:
        prompt = _text(row, "prompt", d["prompt"], allow_empty=True)
        completion = _text(row, "completion", d["completion"])
        return Demonstration(
            prompt=prompt, completion=completion, extra=_extra(row, {"prompt", "completion"})
        )
    present = ", ".join(sorted(d)) or "none"
    raise DataError(
        f"{row.where()}: a demonstration needs 'messages', or 'prompt' and 'completion' "
        f"(fields present: {present})"
    )


def split_implicit_prompt(chosen: Text, rejected: Text) -> tuple[Text, Text, Text]:
    """Split hh-rlhf style whole transcripts at their longest common prefix at a turn boundary.

    Strings: the boundary is the last ``"\\n\\nAssistant:"`` inside the common prefix, and the
    prompt keeps that marker (so it ends at the last human turn and the assistant cue).
    Message lists: the common leading messages form the prompt.
    """
    if isinstance(chosen, list) and isinstance(rejected, list):
        k = 0
        while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
            k += 1
        return chosen[:k], chosen[k:], rejected[k:]
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise ValueError("chosen and rejected must both be strings or both message lists")
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    marker = "\n\nAssistant:"
    cut = chosen.rfind(marker, 0, n + len(marker))
    # The marker must lie wholly inside the shared prefix.
    while cut != -1 and cut + len(marker) > n:
        cut = chosen.rfind(marker, 0, cut)
    if cut == -1:
        raise ValueError("no shared '\\n\\nAssistant:' turn boundary")
    end = cut + len(marker)
    return chosen[:end], chosen[end:], rejected[end:]


def parse_comparison(row: Row) -> Comparison:
    d = row.data
    if "response_0" in d and "response_1" in d:  # PKU-SafeRLHF style
        return _parse_pku(row)
    chosen = _text(row, "chosen", _require(row, "chosen"))
    rejected = _text(row, "rejected", _require(row, "rejected"))
    if "prompt" in d and d["prompt"] is not None:
        prompt = _text(row, "prompt", d["prompt"], allow_empty=True)
    else:
        try:
            prompt, chosen, rejected = split_implicit_prompt(chosen, rejected)
        except ValueError as e:
            raise DataError(
                f"{row.where('chosen')}: no 'prompt' field and the implicit prompt could not be "
                f"split ({e}); add a 'prompt' field"
            ) from None
    if chosen == rejected:
        raise DataError(f"{row.where('rejected')}: identical to 'chosen'; nothing to learn")
    margin = d.get("margin")
    if margin is not None and not isinstance(margin, (int, float)):
        raise DataError(f"{row.where('margin')}: expected a number")
    chosen_safe = _bool(row, "chosen_safe", d["chosen_safe"]) if "chosen_safe" in d else None
    rejected_safe = (
        _bool(row, "rejected_safe", d["rejected_safe"]) if "rejected_safe" in d else None
    )
    safer = d.get("safer")
    if safer is not None and safer not in (0, 1):
        raise DataError(f"{row.where('safer')}: expected 0 (chosen is safer) or 1 (rejected is)")
    used = {"prompt", "chosen", "rejected", "margin", "chosen_safe", "rejected_safe", "safer"}
    return Comparison(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        margin=float(margin) if margin is not None else None,
        chosen_safe=chosen_safe,
        rejected_safe=rejected_safe,
        safer=safer,
        extra=_extra(row, used),
    )


def _parse_pku(row: Row) -> Comparison:
    d = row.data
    prompt = _text(row, "prompt", _require(row, "prompt"))
    r0 = _text(row, "response_0", d["response_0"])
    r1 = _text(row, "response_1", d["response_1"])
    better = _require(row, "better_response_id")
    if better not in (0, 1):
        raise DataError(f"{row.where('better_response_id')}: expected 0 or 1")
    safe0 = _bool(row, "is_response_0_safe", _require(row, "is_response_0_safe"))
    safe1 = _bool(row, "is_response_1_safe", _require(row, "is_response_1_safe"))
    safer_id = _require(row, "safer_response_id")
    if safer_id not in (0, 1):
        raise DataError(f"{row.where('safer_response_id')}: expected 0 or 1")
    chosen, rejected = (r0, r1) if better == 0 else (r1, r0)
    chosen_safe, rejected_safe = (safe0, safe1) if better == 0 else (safe1, safe0)
    used = {
        "prompt",
        "response_0",
        "response_1",
        "better_response_id",
        "safer_response_id",
        "is_response_0_safe",
        "is_response_1_safe",
    }
    return Comparison(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        chosen_safe=chosen_safe,
        rejected_safe=rejected_safe,
        safer=0 if safer_id == better else 1,
        extra=_extra(row, used),
    )


def parse_ranking(row: Row) -> Ranking:
    d = row.data
    prompt = _text(row, "prompt", _require(row, "prompt"), allow_empty=True)
    responses_raw = _require(row, "responses")
    if not isinstance(responses_raw, list) or len(responses_raw) < 2:
        raise DataError(f"{row.where('responses')}: expected a list of at least 2 responses")
    responses = [_text(row, f"responses[{j}]", r) for j, r in enumerate(responses_raw)]
    k = len(responses)
    if "ranking" in d and d["ranking"] is not None:
        ranking = d["ranking"]
        if not isinstance(ranking, list) or not all(isinstance(i, int) for i in ranking):
            raise DataError(f"{row.where('ranking')}: expected a list of response indices")
        bad = [i for i in ranking if not 0 <= i < k]
        if bad:
            raise DataError(f"{row.where('ranking')}: indices {bad} out of range 0..{k - 1}")
        if len(set(ranking)) != len(ranking):
            raise DataError(f"{row.where('ranking')}: repeated indices in {ranking}")
        if len(ranking) != k:
            raise DataError(
                f"{row.where('ranking')}: ranks {len(ranking)} of {k} responses; rank them all"
            )
    elif "scores" in d and d["scores"] is not None:
        scores = d["scores"]
        if not isinstance(scores, list) or len(scores) != k:
            raise DataError(f"{row.where('scores')}: expected {k} numbers, one per response")
        if not all(isinstance(s, (int, float)) for s in scores):
            raise DataError(f"{row.where('scores')}: expected numbers")
        if len(set(scores)) != len(scores):
            raise DataError(f"{row.where('scores')}: tied scores {scores} do not define a ranking")
        ranking = sorted(range(k), key=lambda i: -scores[i])
    else:
        raise DataError(
            f"{row.where()}: a ranking needs 'ranking' (indices best first) or 'scores'"
        )
    annotator = d.get("annotator")
    return Ranking(
        prompt=prompt,
        responses=responses,
        ranking=list(ranking),
        annotator=str(annotator) if annotator is not None else None,
        extra=_extra(row, {"prompt", "responses", "ranking", "scores", "annotator"}),
    )


def parse_unpaired(row: Row) -> Unpaired:
    prompt = _text(row, "prompt", _require(row, "prompt"), allow_empty=True)
    completion = _text(row, "completion", _require(row, "completion"))
    label = _bool(row, "label", _require(row, "label"))
    return Unpaired(
        prompt=prompt,
        completion=completion,
        label=label,
        extra=_extra(row, {"prompt", "completion", "label"}),
    )


def parse_prompt(row: Row) -> PromptOnly:
    d = row.data
    if "prompt" not in d and "messages" in d:
        msgs = _messages(row, "messages", d["messages"])
        while msgs and msgs[-1]["role"] == "assistant":
            msgs = msgs[:-1]
        if not msgs:
            raise DataError(f"{row.where('messages')}: no prompt turns")
        return PromptOnly(prompt=msgs, extra=_extra(row, {"messages"}))
    prompt = _text(row, "prompt", _require(row, "prompt"))
    return PromptOnly(prompt=prompt, extra=_extra(row, {"prompt"}))


PARSERS: dict[str, Callable[[Row], Any]] = {
    "lm": parse_lm,
    "sft": parse_demonstration,
    "pairwise": parse_comparison,
    "ranking": parse_ranking,
    "unpaired": parse_unpaired,
    "prompt": parse_prompt,
}

R = TypeVar("R")


def read_records(
    path: str | Path,
    kind: str,
    split: str | None = None,
    limit: int | None = None,
) -> list[Any]:
    """Read and validate every row of ``path`` as records of ``kind`` (see :data:`PARSERS`).

    Raises :class:`DataError` at the first malformed row, before any training starts.
    """
    if kind not in PARSERS:
        raise ValueError(f"unknown record kind {kind!r}; one of {sorted(PARSERS)}")
    parse = PARSERS[kind]
    out: list[Any] = []
    for row in iter_rows(path, split):
        out.append(parse(row))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(f"{path}: no records found")
    return out


def read_jsonl_dicts(path: str | Path) -> list[dict[str, Any]]:
    """Plain dict rows (for tools that keep arbitrary fields, e.g. evaluation prompts)."""
    return [r.data for r in iter_rows(path)]


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows atomically (temporary file, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    buf = io.StringIO()
    for r in rows:
        buf.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    tmp.replace(p)
