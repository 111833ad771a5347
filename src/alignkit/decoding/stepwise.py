"""Token-by-token decoding with the KV cache, with the CBF filter and reward guidance in the
loop.

``transformers.generate`` hides the per-step distribution behind logits processors that see
token ids only; the CBF filter and reward guidance need to decode each candidate continuation
to text and score it with another model, for every row, at every step. So this loop drives the
model itself: one forward of the whole prompt batch (left-padded, explicit position ids so
learned absolute positions are right too), then one new token per row per step reusing the
cache. Rows that end stay in the batch with their new positions masked out, which keeps the
cache a plain tensor per layer (no per-row surgery) at the price of some wasted compute on
finished rows.

Without a filter or a guide the loop samples exactly as ``generate`` does (temperature, top-k,
top-p; greedy at temperature 0); the tests check it reproduces ``generate``'s greedy output.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from alignkit.data.records import Text
from alignkit.decoding.cbf import CBFFilter, CBFTrace, Projection
from alignkit.decoding.guided import RewardGuide
from alignkit.models.heads import positions_from_mask
from alignkit.rollout.generate import SamplingConfig, _left_pad


@dataclass
class Decoded:
    """One sampled response with what the decoding-time filters did to it.

    ``text`` is the whole response (a prefilled opening included), stripped; ``guide_values``
    holds V of the chosen continuation at each guided step.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    finished: bool
    cbf: CBFTrace | None = None
    guide_values: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def cache_kwarg(model: torch.nn.Module) -> str:
    """The forward argument that carries the KV cache: ``cache`` in transformers >= 5.25
    (``past_key_values`` is deprecated there and removed in 5.40), ``past_key_values`` before.
    The output field has the same name. PEFT wrappers are looked through."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _nucleus(probs: Tensor, top_p: float) -> Tensor:
    """Keep the smallest prefix (by descending probability) whose mass reaches ``top_p``."""
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(descending=True)
    before = sorted_p.cumsum(-1) - sorted_p
    keep_sorted = before < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = torch.where(keep, probs, torch.zeros_like(probs))
    return kept / kept.sum(-1, keepdim=True)


def _pick(probs: Tensor, greedy: bool, gen: torch.Generator | None) -> int:
    if greedy:
        return int(probs.argmax())
    return int(torch.multinomial(probs.float(), 1, generator=gen))


class _Batch:
    """Per-row state of one batch: response tokens (prefill included) and decoded text."""

    def __init__(self, tokenizer: Any, prefix_ids: list[int], rows: int) -> None:
        self.tok = tokenizer
        self.resp = [list(prefix_ids) for _ in range(rows)]
        self.comp: list[list[int]] = [[] for _ in range(rows)]

    def texts_with(self, row: int, tokens: list[int]) -> list[str]:
        base = self.resp[row]
        decoded = self.tok.batch_decode([base + [t] for t in tokens], skip_special_tokens=True)
        return [d.strip() for d in decoded]

    def text(self, row: int) -> str:
        return str(self.tok.decode(self.resp[row], skip_special_tokens=True)).strip()


@torch.no_grad()
def stepwise_generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt_ids: Sequence[list[int]],
    sampling: SamplingConfig,
    *,
    score_prompts: Sequence[Text],
    num_samples: int = 1,
    cbf: CBFFilter | None = None,
    guide: RewardGuide | None = None,
    prefix_ids: list[int] | None = None,
    seed: int | None = None,
) -> list[list[Decoded]]:
    """``num_samples`` responses per prompt: result[i][j] is sample j of prompt i.

    ``prompt_ids`` are the rendered prompts (with any retrieval passages or reasoning
    instruction); ``score_prompts`` are what h and V see next to the response (normally the
    user's prompt as written). ``prefix_ids`` is a prefilled opening of the response: fed to
    the model after the prompt and part of the text h, V and the result see.
    """
    prefix = list(prefix_ids or [])
    encoded = [list(p)[-sampling.max_prompt_length :] for p in prompt_ids]
    jobs = [(i, j) for i in range(len(encoded)) for j in range(num_samples)]
    jobs.sort(key=lambda ij: len(encoded[ij[0]]))
    results: list[list[Decoded | None]] = [[None] * num_samples for _ in encoded]
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(jobs), sampling.batch_size):
            chunk = jobs[start : start + sampling.batch_size]
            done = _decode_batch(
                model,
                tokenizer,
                [encoded[i] for i, _ in chunk],
                [score_prompts[i] for i, _ in chunk],
                sampling,
                cbf,
                guide,
                prefix,
                gen,
            )
            for (i, j), d in zip(chunk, done, strict=True):
                results[i][j] = d
    finally:
        model.train(was_training)
    return [[d for d in row if d is not None] for row in results]


def _decode_batch(
    model: torch.nn.Module,
    tok: Any,
    prompts: list[list[int]],
    score_prompts: list[Text],
    sampling: SamplingConfig,
    cbf: CBFFilter | None,
    guide: RewardGuide | None,
    prefix: list[int],
    gen: torch.Generator | None,
) -> list[Decoded]:
    device = next(model.parameters()).device
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    rows = len(prompts)
    ids, attn = _left_pad([p + prefix for p in prompts], pad)
    ids, attn = ids.to(device), attn.to(device)
    pos = positions_from_mask(attn)
    state = _Batch(tok, prefix, rows)
    done = [False] * rows
    finished = [False] * rows
    traces = [CBFTrace() for _ in range(rows)] if cbf else None
    values: list[list[float]] | None = [[] for _ in range(rows)] if guide else None
    h_cur: list[float] = []
    if cbf is not None and traces is not None:
        h_cur = cbf.initial(score_prompts, [state.text(r) for r in range(rows)])
        for r in range(rows):
            traces[r].h.append(h_cur[r])
    past = None
    kv = cache_kwarg(model)
    inp = ids
    greedy = sampling.temperature == 0.0
    for step in range(sampling.max_new_tokens):
        out = model(
            input_ids=inp,
            attention_mask=attn,
            position_ids=pos[:, -inp.shape[1] :],
            use_cache=True,
            **{kv: past},
        )
        past = getattr(out, kv)
        active = [r for r in range(rows) if not done[r]]
        logits = out.logits[active, -1, :].double()
        probs = torch.softmax(logits / (1.0 if greedy else sampling.temperature), dim=-1).cpu()
        chosen = _choose(probs, active, score_prompts, state, sampling, cbf, guide, h_cur, gen)
        next_col = torch.full((rows,), pad, dtype=torch.long)
        new_mask = torch.zeros((rows,), dtype=torch.long)
        for r, (token, proj_h, value, n_removed) in zip(active, chosen, strict=True):
            if traces is not None and n_removed:
                traces[r].interventions += n_removed
                traces[r].intervened_steps += 1
            if token is None:  # nothing allowed: the declared fallback
                assert cbf is not None and traces is not None
                traces[r].fallback = cbf.config.fallback
                traces[r].fallback_step = step
                if cbf.config.fallback == "refuse":
                    refusal = list(tok(cbf.config.refusal, add_special_tokens=False)["input_ids"])
                    state.resp[r] = refusal
                    state.comp[r] = refusal + [eos]
                else:
                    state.comp[r].append(eos)
                done[r] = finished[r] = True
                continue
            state.comp[r].append(token)
            if values is not None and value is not None:
                values[r].append(value)
            if token == eos:
                done[r] = finished[r] = True
            else:
                state.resp[r].append(token)
            if cbf is not None and traces is not None:
                h_cur[r] = proj_h
                traces[r].h.append(proj_h)
            next_col[r] = token
            new_mask[r] = 1
        if all(done):
            break
        inp = next_col.unsqueeze(1).to(device)
        attn = torch.cat([attn, new_mask.unsqueeze(1).to(device)], dim=1)
        pos = torch.cat([pos, pos[:, -1:] + 1], dim=1)
    return [
        Decoded(
            prompt_ids=prompts[r] + prefix,
            completion_ids=state.comp[r],
            text=state.text(r),
            finished=finished[r],
            cbf=traces[r] if traces else None,
            guide_values=values[r] if values is not None else None,
        )
        for r in range(rows)
    ]


def _choose(
    probs: Tensor,
    active: list[int],
    score_prompts: list[Text],
    state: _Batch,
    sampling: SamplingConfig,
    cbf: CBFFilter | None,
    guide: RewardGuide | None,
    h_cur: list[float],
    gen: torch.Generator | None,
) -> list[tuple[int | None, float, float | None, int]]:
    """Next token of each active row: (token or None for the fallback, h of the continuation,
    V of the continuation, candidates the filter removed)."""
    greedy = sampling.temperature == 0.0
    if cbf is None and guide is None:
        out: list[tuple[int | None, float, float | None, int]] = []
        for row in probs:
            p = row
            if sampling.top_k > 0:
                kth = p.topk(min(sampling.top_k, p.numel())).values[-1]
                p = torch.where(p >= kth, p, torch.zeros_like(p))
                p = p / p.sum()
            p = _nucleus(p, sampling.top_p)
            out.append((_pick(p, greedy, gen), 0.0, None, 0))
        return out
    width = cbf.config.max_candidates if cbf else guide.config.top_k  # type: ignore[union-attr]
    top_p, top_i = probs.topk(min(width, probs.shape[-1]), dim=-1)
    prompts = [score_prompts[r] for r in active]
    if cbf is not None:
        projs = cbf.filter(
            prompts,
            [h_cur[r] for r in active],
            top_i,
            top_p,
            lambda i, toks: state.texts_with(active[i], toks),
        )
    else:
        projs = [
            Projection(
                top_i[i].tolist(),
                top_p[i] / top_p[i].sum(),
                [0.0] * top_i.shape[1],
                [True] * top_i.shape[1],
                False,
            )
            for i in range(len(active))
        ]
    dists = [p.probs for p in projs]
    vals: list[list[float] | None] = [None] * len(active)
    if guide is not None:
        live = [i for i, p in enumerate(projs) if not p.nothing_allowed]
        keep = [[j for j, q in enumerate(projs[i].probs.tolist()) if q > 0] for i in live]
        texts = [
            state.texts_with(active[i], [projs[i].token_ids[j] for j in ks])
            for i, ks in zip(live, keep, strict=True)
        ]
        sub = [projs[i].probs[ks] for i, ks in zip(live, keep, strict=True)]
        guided, v = guide.rescore([prompts[i] for i in live], texts, sub)
        for i, ks, g, vv in zip(live, keep, guided, v, strict=True):
            full = torch.zeros_like(projs[i].probs)
            full[ks] = g
            dists[i] = full
            per = [0.0] * len(projs[i].token_ids)
            for j, x in zip(ks, vv, strict=True):
                per[j] = x
            vals[i] = per
    chosen: list[tuple[int | None, float, float | None, int]] = []
    for i, proj in enumerate(projs):
        removed = proj.interventions if cbf is not None else 0
        if proj.nothing_allowed:
            chosen.append((None, 0.0, None, removed))
            continue
        # The filter already cut P to its nucleus (CBFConfig.top_p); truncating Q again would
        # shrink it twice.
        q = dists[i] if cbf is not None else _nucleus(dists[i], sampling.top_p)
        j = _pick(q, greedy, gen)
        value = vals[i][j] if vals[i] is not None else None  # type: ignore[index]
        chosen.append((proj.token_ids[j], proj.h_next[j], value, removed))
    return chosen
