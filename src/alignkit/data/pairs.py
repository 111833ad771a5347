"""Tokenised response groups: one prompt with K responses (pairs, rankings, single labels).

Reward models, cost models and every direct-preference loss score several responses to the
same prompt. The responses of a group must share the *exact* prompt tokens (otherwise the
log-ratio compares different contexts), so the prompt is rendered once and each response's
tokens are read off the rendering of prompt + response with the chat template.

A batch of groups becomes one padded tensor, group-major (g0r0, g0r1, ..., g1r0, ...), so
chosen and rejected (or all K ranked responses) go through the model in one forward; or, with
``collate_shared_prompt``, rows that hold each group's prompt once followed by all of its
responses, under a block attention mask (each response sees the prompt and itself), packed
several groups to a row. The second layout computes the same numbers with the prompt's tokens
run once instead of K times and no padding between responses.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from alignkit.data.collate import Batch, pack_rows
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
class SharedPromptRows:
    """Groups laid out as ``prompt ⊕ response_0 ⊕ response_1 ⊕ …`` segments in packed rows.

    ``allowed[b, 0, q, k]`` says whether token q may attend to token k: causally, within its
    group, and only to the prompt or its own response (padding attends to itself only, so no
    attention row is empty). Response positions continue from the prompt's end, so every
    response sees exactly the positions and context it has in a row of its own. Indices are
    into the flattened ``[B·T]`` outputs, responses in group-major order (as ``GroupBatch``):
    ``last[r]`` is response r's last token (where a scalar head is read), and for every
    response token ``src`` is the position whose output predicts it, ``tgt`` the token and
    ``seg`` its response.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    allowed: torch.Tensor
    last: torch.Tensor
    src: torch.Tensor
    tgt: torch.Tensor
    seg: torch.Tensor

    def to(self, device: torch.device | str) -> SharedPromptRows:
        return SharedPromptRows(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    def model_inputs(self, eager: bool) -> dict[str, Any]:
        """Forward kwargs with the block mask as transformers takes a custom 4D mask: boolean
        for SDPA, additive (0 / dtype minimum, float32) for the eager implementation."""
        mask: torch.Tensor = self.allowed
        if eager:
            mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
            mask.masked_fill_(~self.allowed, torch.finfo(torch.float32).min)
        return {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            "attention_mask": mask,
            "use_cache": False,
        }


@dataclass
class GroupBatch:
    """Responses of several groups, group-major: ``batch`` holds one padded row per response
    (labels −100 on prompt and padding, so log-prob sums cover response tokens only), or
    ``shared`` holds the shared-prompt layout (then ``batch`` is None).

    ``group_of[i]`` is response i's group; ``index_in_group[i]`` its response index.
    """

    batch: Batch | None
    group_of: torch.Tensor
    index_in_group: torch.Tensor
    groups: list[Group]
    shared: SharedPromptRows | None = None

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @property
    def num_real_tokens(self) -> int:
        """Prompt + response tokens of every response (a shared prompt counted per response,
        so the figure does not depend on the layout)."""
        return sum(
            len(g.prompt_ids) * len(g.responses) + sum(map(len, g.responses)) for g in self.groups
        )

    def to(self, device: torch.device | str) -> GroupBatch:
        return GroupBatch(
            None if self.batch is None else self.batch.to(device),
            self.group_of.to(device),
            self.index_in_group.to(device),
            self.groups,
            None if self.shared is None else self.shared.to(device),
        )


def _group_index(groups: Sequence[Group]) -> tuple[torch.Tensor, torch.Tensor]:
    group_of = [gi for gi, g in enumerate(groups) for _ in g.responses]
    index_in = [ri for g in groups for ri in range(len(g.responses))]
    return torch.tensor(group_of), torch.tensor(index_in)


def collate_groups(groups: Sequence[Group], pad_id: int) -> GroupBatch:
    """One right-padded row per response."""
    rows: list[tuple[list[int], int]] = [
        (g.prompt_ids + resp, len(g.prompt_ids)) for g in groups for resp in g.responses
    ]
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
    group_of, index_in = _group_index(groups)
    return GroupBatch(batch, group_of, index_in, list(groups))


def collate_shared_prompt(groups: Sequence[Group], pad_id: int, max_length: int) -> GroupBatch:
    """The shared-prompt layout (:class:`SharedPromptRows`): groups best-fit packed into rows
    of at most ``max(max_length, longest group)`` tokens."""
    sizes = [len(g.prompt_ids) + sum(map(len, g.responses)) for g in groups]
    rows = pack_rows(sizes, max(max_length, max(sizes)))
    width = max(sum(sizes[i] for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    # Every token's group (padding: a group of its own) and part (0 = prompt, 1 + response).
    grp = -1 - torch.arange(len(rows) * width).view(len(rows), width)
    part = torch.zeros((len(rows), width), dtype=torch.long)
    # Index of each group's first response in group-major order.
    first = [0, *itertools.accumulate(len(g.responses) for g in groups)]
    last = [0] * first[-1]
    src: list[int] = []
    tgt: list[int] = []
    seg: list[int] = []
    for r, row in enumerate(rows):
        at = 0
        for gi in row:
            g = groups[gi]
            p = len(g.prompt_ids)
            base = r * width
            ids[r, at : at + p] = torch.tensor(g.prompt_ids, dtype=torch.long)
            pos[r, at : at + p] = torch.arange(p)
            grp[r, at : at + sizes[gi]] = gi
            start = at + p
            for ri, resp in enumerate(g.responses):
                n = len(resp)
                ids[r, start : start + n] = torch.tensor(resp, dtype=torch.long)
                pos[r, start : start + n] = torch.arange(p, p + n)
                part[r, start : start + n] = 1 + ri
                k = first[gi] + ri
                last[k] = base + start + n - 1
                # The prompt's last token predicts every response's first token (none when
                # the prompt is empty, as in the padded layout's shifted labels).
                preds = ([base + at + p - 1] if p else []) + [
                    base + start + j for j in range(n - 1)
                ]
                src.extend(preds)
                tgt.extend(resp if p else resp[1:])
                seg.extend([k] * len(preds))
                start += n
            at += sizes[gi]
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    same_group = grp.unsqueeze(2) == grp.unsqueeze(1)
    visible = (part.unsqueeze(1) == 0) | (part.unsqueeze(2) == part.unsqueeze(1))
    allowed = (causal & same_group & visible).unsqueeze(1)
    shared = SharedPromptRows(
        ids,
        pos,
        allowed,
        torch.tensor(last),
        torch.tensor(src, dtype=torch.long),
        torch.tensor(tgt, dtype=torch.long),
        torch.tensor(seg, dtype=torch.long),
    )
    group_of, index_in = _group_index(groups)
    return GroupBatch(None, group_of, index_in, list(groups), shared)
