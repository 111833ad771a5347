"""Tokenised response groups: one prompt with K responses (pairs, rankings, single labels).

Reward models, cost models and every direct-preference loss score several responses to the
same prompt. The responses of a group must share the *exact* prompt tokens (otherwise the
log-ratio compares different contexts), so the prompt is rendered once and each response's
tokens are read off the rendering of prompt + response with the chat template.

A batch of groups becomes one padded tensor, group-major (g0r0, g0r1, ..., g1r0, ...), so
chosen and rejected (or all K ranked responses) go through the model in one forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from alignkit.data.collate import Batch
from alignkit.data.readers import DataError
from alignkit.data.records import Comparison, Ranking, Text, Unpaired
from alignkit.data.tokenize import IGNORE_INDEX, ChatFormatter


@dataclass
class Group:
    """A prompt and its responses (token ids, each ending with EOS), plus per-group data:
    ``order`` ranks the responses best first; ``labels`` holds per-response flags (KTO
    desirability, safety) and ``margin`` an optional preference strength."""

    prompt_ids: list[int]
    responses: list[list[int]]
    order: list[int] = field(default_factory=list)
    labels: list[float] = field(default_factory=list)
    safe: list[int] = field(default_factory=list)  # +1 safe, −1 unsafe, 0 unknown
    margin: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class GroupStats:
    records: int = 0
    kept: int = 0
    prompt_truncated: int = 0
    response_truncated: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class GroupTokenizer:
    def __init__(
        self,
        tokenizer: Any,
        max_length: int,
        max_prompt_length: int | None = None,
        chat_template: str = "auto",
    ) -> None:
        self.fmt = ChatFormatter(tokenizer, chat_template)
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length or max_length // 2
        self.stats = GroupStats()

    def response_ids(self, prompt: Text, prompt_ids: list[int], response: Text) -> list[int]:
        full, plen = self.fmt.prompt_completion(prompt, response)
        if full[:plen] != prompt_ids:
            raise DataError("prompt tokens differ between responses (chat template is unstable)")
        ids = full[plen:]
        if not ids or ids[-1] != self.fmt.eos_id:
            ids = ids + [self.fmt.eos_id]
        return ids

    def group(
        self,
        prompt: Text,
        responses: Sequence[Text],
        where: str,
        **kw: Any,
    ) -> Group | None:
        self.stats.records += 1
        p_ids = self.fmt.prompt_ids(prompt)
        r_ids = [self.response_ids(prompt, p_ids, r) for r in responses]
        if len(p_ids) > self.max_prompt_length:
            # Keep the end of the prompt: the question usually sits in the last turn.
            p_ids = p_ids[-self.max_prompt_length :]
            self.stats.prompt_truncated += 1
        room = self.max_length - len(p_ids)
        if room < 2:
            self.stats.dropped += 1
            return None
        if any(len(r) > room for r in r_ids):
            self.stats.response_truncated += 1
            r_ids = [r[:room] for r in r_ids]
        if len({tuple(r) for r in r_ids}) < len(r_ids):
            # Responses identical after truncation carry no preference signal.
            self.stats.dropped += 1
            return None
        self.stats.kept += 1
        return Group(prompt_ids=p_ids, responses=r_ids, **kw)


def _safe_flag(v: bool | None) -> int:
    return 0 if v is None else (1 if v else -1)


def tokenize_comparisons(
    gt: GroupTokenizer, records: Sequence[Comparison], source: str
) -> list[Group]:
    out = []
    for i, r in enumerate(records):
        g = gt.group(
            r.prompt,
            [r.chosen, r.rejected],
            f"{source}: record {i + 1}",
            order=[0, 1],
            safe=[_safe_flag(r.chosen_safe), _safe_flag(r.rejected_safe)],
            margin=r.margin or 0.0,
            extra={**r.extra, "safer": r.safer},
        )
        if g is not None:
            out.append(g)
    return _nonempty(out, gt, source)


def tokenize_rankings(gt: GroupTokenizer, records: Sequence[Ranking], source: str) -> list[Group]:
    out = []
    for i, r in enumerate(records):
        g = gt.group(
            r.prompt,
            r.responses,
            f"{source}: record {i + 1}",
            order=list(r.ranking),
            extra=dict(r.extra),
        )
        if g is not None:
            out.append(g)
    return _nonempty(out, gt, source)


def tokenize_unpaired(gt: GroupTokenizer, records: Sequence[Unpaired], source: str) -> list[Group]:
    out = []
    for i, r in enumerate(records):
        g = gt.group(
            r.prompt,
            [r.completion],
            f"{source}: record {i + 1}",
            order=[0],
            labels=[1.0 if r.label else 0.0],
            extra=dict(r.extra),
        )
        if g is not None:
            out.append(g)
    return _nonempty(out, gt, source)


def _nonempty(out: list[Group], gt: GroupTokenizer, source: str) -> list[Group]:
    if not out:
        raise DataError(
            f"{source}: every record was dropped ({gt.stats.as_dict()}); raise data.max_length"
        )
    return out


@dataclass
class GroupBatch:
    """Responses of several groups in one padded tensor, group-major.

    ``group_of[i]`` is row i's group; ``index_in_group[i]`` its response index. Labels are
    −100 on prompt and padding, so log-prob sums cover response tokens only.
    """

    batch: Batch
    group_of: torch.Tensor
    index_in_group: torch.Tensor
    groups: list[Group]

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    def to(self, device: torch.device | str) -> GroupBatch:
        return GroupBatch(
            self.batch.to(device),
            self.group_of.to(device),
            self.index_in_group.to(device),
            self.groups,
        )


def collate_groups(groups: Sequence[Group], pad_id: int) -> GroupBatch:
    rows: list[tuple[list[int], int]] = []
    group_of, index_in = [], []
    for gi, g in enumerate(groups):
        for ri, resp in enumerate(g.responses):
            rows.append((g.prompt_ids + resp, len(g.prompt_ids)))
            group_of.append(gi)
            index_in.append(ri)
    width = max(len(r) for r, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, plen) in enumerate(rows):
        t = torch.tensor(r, dtype=torch.long)
        ids[i, : len(r)] = t
        labels[i, plen : len(r)] = t[plen:]
        attn[i, : len(r)] = 1
    batch = Batch(ids, labels, attn, None, len(rows), int(attn.sum()))
    return GroupBatch(batch, torch.tensor(group_of), torch.tensor(index_in), list(groups))
