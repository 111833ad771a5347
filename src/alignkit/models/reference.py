"""Reference log-probabilities for preference and KL-regularised methods.

Methods that compare the policy π with a frozen reference π_ref (DPO and its relatives, KTO,
KL penalties) need log π_ref of the same token sequences. Where they come from is a memory /
compute trade-off, chosen in config and implemented once here:

* ``precompute``: one pass before training, cached in memory and on disk; during training
  nothing reference-shaped is in memory and each step costs one forward;
* ``adapter``: a LoRA policy with its adapter disabled *is* the base model, so no second copy
  is needed, at the price of a second forward per step;
* ``live``: a frozen copy, one extra forward per step (any policy, twice the weights).

All of them read sequences as :class:`~alignkit.data.pairs.GroupBatch` rows, the same layout
the policy's forward uses, so the two sides are computed on identical tokens.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from alignkit.data.pairs import Group, GroupBatch, collate_groups
from alignkit.models.load import disable_dropout, is_peft
from alignkit.models.logprobs import shared_prompt_logprobs, target_logprobs


def sequence_logps(model: nn.Module, gb: GroupBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed completion log-probs, completion lengths), both ``[groups, responses]``, from
    one forward over all rows (chosen and rejected concatenated, group-major). Groups with
    fewer responses than the largest (rankings that lost a repeated response) are padded
    with zeros on the right; their pairs never index the padding."""
    n = gb.group_of.numel()
    if gb.shared is not None:
        rows = gb.shared
        tok = shared_prompt_logprobs(model, rows)
        summed = tok.new_zeros(n).index_add(0, rows.seg, tok)
        lengths = torch.bincount(rows.seg, minlength=n).to(tok.dtype)
    else:
        assert gb.batch is not None
        # The LM head runs at completion positions only (prompt and padding logits are unused).
        logp, mask = target_logprobs(model, gb.batch.model_inputs(), gb.batch.labels)
        summed, lengths = logp.sum(-1), mask.sum(-1)
    return by_group(summed, gb), by_group(lengths, gb)


def by_group(flat: torch.Tensor, gb: GroupBatch) -> torch.Tensor:
    """Per-response values (group-major) → ``[groups, most responses]``, zero-padded."""
    k = max(len(g.responses) for g in gb.groups)  # from the host-side groups: no device sync
    if flat.numel() == gb.num_groups * k:
        return flat.view(-1, k)
    out = flat.new_zeros(gb.num_groups, k)
    where = (gb.group_of.to(flat.device), gb.index_in_group.to(flat.device))
    return out.index_put(where, flat)


class Reference:
    """Where reference log-probs come from.

    ``precompute``: one pass before training (the initial policy, the LoRA base, or
    ``reference_model``), cached in memory and in the run folder; nothing reference-shaped
    stays in memory during training. ``adapter``: every step, the policy with its LoRA adapter
    disabled — exactly the base model, no second copy. ``live``: every step, a frozen copy.
    """

    def __init__(self, mode: str, policy: nn.Module, frozen: nn.Module | None) -> None:
        self.mode = mode
        self.policy = policy
        self.frozen = frozen
        self.use_current_policy = False  # online.update_reference after the first iteration
        self.seconds = 0.0

    @contextlib.contextmanager
    def model(self) -> Iterator[nn.Module]:
        """The module whose forward gives reference log-probs (adapter toggled as needed)."""
        if self.frozen is not None:
            yield self.frozen
        elif is_peft(self.policy) and not self.use_current_policy:
            with self.policy.disable_adapter():
                yield self.policy
        else:
            yield self.policy

    def refresh(self) -> None:
        """online.update_reference: the policy as it is now becomes the reference."""
        if self.frozen is None:
            self.use_current_policy = True
            return
        self.frozen = frozen_copy(self.policy)

    @torch.no_grad()
    def logps(self, gb: GroupBatch) -> torch.Tensor:
        """Summed completion log-probs ``[groups, responses]`` of a batch, one forward."""
        t0 = time.perf_counter()
        with self.model() as m:
            summed, _ = sequence_logps(m, gb)
        self.seconds += time.perf_counter() - t0
        return summed

    def precompute(
        self,
        named: dict[str, list[Group]],
        cache: Path,
        tag: str,
        batch_size: int,
        pad_id: int,
        device: torch.device,
        write: bool = True,
        collate: Callable[[Sequence[Group]], GroupBatch] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Reference log-probs ``[groups, responses]`` of every named group list, reused from
        ``cache`` when its fingerprint (``tag`` and every token) matches, else computed and,
        with ``write``, saved there (only the main process should write)."""
        fingerprint = _fingerprint(named, tag)
        if cache.is_file():
            with contextlib.suppress(Exception):
                stored = load_file(str(cache))
                meta = json.loads((cache.with_suffix(".json")).read_text())
                if meta.get("fingerprint") == fingerprint:
                    return stored
        out = {}
        for name, groups in named.items():
            k = max((len(g.responses) for g in groups), default=0)
            rows = torch.zeros((len(groups), k), dtype=torch.float32)
            # Length-sorted batches pad little; the values do not depend on batch composition.
            order = sorted(range(len(groups)), key=lambda i: _longest(groups[i]))
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                chunk = [groups[i] for i in idx]
                gb = (collate(chunk) if collate else collate_groups(chunk, pad_id)).to(device)
                values = self.logps(gb).float().cpu()
                rows[idx, : values.shape[1]] = values
            out[name] = rows
        if write:
            save_file(out, str(cache))
            cache.with_suffix(".json").write_text(json.dumps({"fingerprint": fingerprint}))
        return out


def _longest(g: Group) -> int:
    return len(g.prompt_ids) + max(len(r) for r in g.responses)


def _fingerprint(named: dict[str, list[Group]], tag: str) -> str:
    h = hashlib.sha256(tag.encode())
    for name, groups in named.items():
        h.update(name.encode())
        for g in groups:
            h.update(json.dumps([g.prompt_ids, g.responses]).encode())
    return h.hexdigest()


def frozen_copy(policy: nn.Module) -> nn.Module:
    """A gradient-free copy of the policy as it is now (LoRA merged: same function, less work)."""
    frozen = copy.deepcopy(policy)
    if is_peft(frozen):
        frozen = frozen.merge_and_unload()
    return freeze(frozen, policy)


def freeze(model: nn.Module, like: nn.Module) -> nn.Module:
    """Eval mode, no dropout, no gradients, on ``like``'s device."""
    disable_dropout(model)
    return model.requires_grad_(False).eval().to(next(like.parameters()).device)


__all__ = ["Reference", "freeze", "frozen_copy", "sequence_logps"]
