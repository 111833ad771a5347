"""Reward models and Safe RLHF cost models, as one readable loop (ALGORITHMS.md §2, §6).

Read top to bottom: read and validate the preference data (bad records stop the run before any
weights load, or are skipped and counted), hold out prompts for the fitness report, tokenise
each prompt with its responses as one group, load a causal LM with a scalar head, train with
the shared loop, save an ordinary Hugging Face folder, and write the fitness report.

Every response of a group goes through the model in the same forward pass, and the losses come
from :mod:`alignkit.losses` (Bradley–Terry, K-wise, Plackett–Luce, the cost-model loss): the
recipe only lays scores out best-first. The optimizer-step normaliser is the number of groups
(pairs or rankings) in the global batch, so gradient accumulation and process count do not
change the update.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from alignkit.configs.reward import (
    CostConfig,
    PreferenceDataConfig,
    ReportConfig,
    RewardConfig,
    RewardLossConfig,
)
from alignkit.data.pairs import (
    Group,
    GroupBatch,
    GroupTokenizer,
    collate_groups,
    tokenize_comparisons,
    tokenize_rankings,
)
from alignkit.data.readers import DataError, Row
from alignkit.data.records import Comparison, Ranking
from alignkit.data.reward_data import (
    PreferenceData,
    PreferenceRecord,
    read_preferences,
    safety_transform,
    split_by_prompt,
)
from alignkit.engine.distributed import Dist
from alignkit.engine.loop import LossFn, Trainer, steps_for
from alignkit.evaluation.rm_report import (
    build_report,
    print_report,
    ranking_accuracy,
    relevance_check,
    score_records,
    write_report,
)
from alignkit.losses.length import length_slope, pearson_correlation
from alignkit.losses.reward import (
    bradley_terry_loss,
    kwise_ranking_loss,
    pad_rankings,
    plackett_luce_loss,
)
from alignkit.losses.safety import cost_model_loss
from alignkit.models.heads import HeadKind, group_scores, load_scalar_model, unwrap_scalar
from alignkit.models.load import count_parameters, save_hf_folder
from alignkit.models.scorer import RewardEnsemble, RewardScorer, Scorer
from alignkit.models.shared_prompt import group_collator
from alignkit.recipes.common import Timer, Windows, prepare_run_dir, set_seed, write_summary

__all__ = ["RewardEnsemble", "RewardScorer", "Scorer", "run_cost", "run_reward"]

StepLoss = Callable[[Tensor, GroupBatch], tuple[Tensor, dict[str, Tensor]]]
"""(scores of every row ``[R]``, batch) → (per-group loss ``[G]``, per-group metrics)."""


# --------------------------------------------------------------------------------------------
# Laying scores out
# --------------------------------------------------------------------------------------------


def ranked_scores(scores: Tensor, gb: GroupBatch) -> tuple[Tensor, Tensor]:
    """Row scores ``[R]`` (group-major) → best-first ``[G, K_max]`` and its mask."""
    flat: list[int] = []
    offset = 0
    for g in gb.groups:
        flat.extend(offset + i for i in g.order)
        offset += len(g.responses)
    idx = torch.tensor(flat, device=scores.device)
    return pad_rankings(scores[idx], [len(g.responses) for g in gb.groups])


def expand_to_pairs(groups: Sequence[Group]) -> list[Group]:
    """A ranking of K responses → its C(K, 2) (better, worse) pairs, each its own group (for
    Bradley–Terry on ranking data). Tokens are shared, not re-tokenised."""
    out: list[Group] = []
    for g in groups:
        o = g.order
        for a in range(len(o)):
            for b in range(a + 1, len(o)):
                out.append(
                    Group(
                        prompt_ids=g.prompt_ids,
                        responses=[g.responses[o[a]], g.responses[o[b]]],
                        order=[0, 1],
                        margin=g.margin,
                        extra=g.extra,
                    )
                )
    return out


def add_irrelevant_negatives(groups: Sequence[Group], share: float, seed: int) -> list[Group]:
    """``groups`` plus, for ``share`` of them, a pair (the group's best response ≻ the best
    response of a group with another prompt). Tokens are reused; the other group is drawn at
    random among those whose prompt differs. Deterministic given ``seed``."""
    out = list(groups)
    if share <= 0 or len(groups) < 2:
        return out
    rng = random.Random(f"irrelevant-negatives-{seed}")
    chosen = rng.sample(range(len(groups)), round(share * len(groups)))
    for i in sorted(chosen):
        g = groups[i]
        for _ in range(20):  # a handful of draws finds another prompt unless nearly all repeat
            o = groups[rng.randrange(len(groups))]
            if o.prompt_ids != g.prompt_ids:
                break
        else:
            continue
        best, other = g.responses[g.order[0]], o.responses[o.order[0]]
        if best == other:
            continue
        out.append(
            Group(g.prompt_ids, [best, other], [0, 1], extra={**g.extra, "irrelevant": True})
        )
    return out


def add_prefixes(groups: Sequence[Group], copies: int, seed: int) -> list[Group]:
    """``groups`` plus ``copies`` truncated versions of each: every response cut after a
    uniformly drawn 1 … n−1 of its n tokens, order and safety labels kept, so a cost
    model learns to score the partial responses a decoding-time filter shows it. A copy whose
    truncated responses coincide is left out. Deterministic given ``seed``."""
    out = list(groups)
    rng = random.Random(f"prefixes-{seed}")
    for _ in range(copies):
        for g in groups:
            cut = [r[: rng.randint(1, len(r) - 1)] if len(r) > 1 else r for r in g.responses]
            if len({tuple(c) for c in cut}) == len(cut):
                out.append(replace(g, responses=cut, extra={**g.extra, "prefix": True}))
    return out


# --------------------------------------------------------------------------------------------
# Losses: which pure function, chosen by config (variants are data)
# --------------------------------------------------------------------------------------------


def reward_step_loss(cfg: RewardLossConfig) -> StepLoss:
    def bt(ranked: Tensor, mask: Tensor, gb: GroupBatch) -> Tensor:
        if mask.shape[1] != 2 or not bool(mask.all()):
            raise ValueError("loss.type=bt needs pairs; rankings must be expanded to pairs first")
        margin = None
        if cfg.use_margin:
            margin = torch.tensor([g.margin for g in gb.groups], device=ranked.device)
        return bradley_terry_loss(ranked[:, 0], ranked[:, 1], margin, cfg.center_coef)

    losses: dict[str, Callable[[Tensor, Tensor, GroupBatch], Tensor]] = {
        "bt": bt,
        "kwise": lambda ranked, mask, gb: kwise_ranking_loss(ranked, mask),
        "plackett_luce": lambda ranked, mask, gb: plackett_luce_loss(ranked, mask),
    }
    fn = losses[cfg.type]

    def step(scores: Tensor, gb: GroupBatch) -> tuple[Tensor, dict[str, Tensor]]:
        ranked, mask = ranked_scores(scores, gb)
        per_group = fn(ranked, mask, gb)
        acc = ranking_accuracy(ranked.detach(), mask)
        return per_group, {"accuracy": acc, "score_mean": _row_mean(ranked.detach(), mask)}

    return step


def _row_mean(x: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


def cost_step_loss(reg_coef: float) -> StepLoss:
    """Groups are [safer, less safe] pairs; ``Group.safe`` holds ±1 labels."""

    def step(scores: Tensor, gb: GroupBatch) -> tuple[Tensor, dict[str, Tensor]]:
        costs = scores.view(-1, 2)  # group-major rows: [safer, unsafer] per pair
        safe = torch.tensor([g.safe for g in gb.groups], device=scores.device) > 0
        per_pair = cost_model_loss(costs[:, 0], costs[:, 1], safe[:, 0], safe[:, 1], reg_coef)
        c = costs.detach()
        sign_ok = torch.where(safe, c < 0, c > 0).float().mean(dim=1)
        # "accuracy" for a cost model: the less safe response costs more.
        acc = ranking_accuracy(c.flip(1))
        return per_pair, {"accuracy": acc, "safety_accuracy": sign_ok, "score_mean": c.mean(dim=1)}

    return step


def as_loss_fn(step: StepLoss, decorrelation: float = 0.0) -> LossFn:
    """Adapt a per-group loss to the Trainer contract: summed, divided by the global number
    of groups in the optimizer step; metrics as shares of the step.

    With the model's length term (``loss.length_control``) the labels are fitted by
    ``r + b·log(1+n)``, and ``decorrelation · slope(r on log(1+n))²`` over the micro-batch's
    responses (after ODIN) keeps the length preference in ``b``: without it nothing stops
    ``r`` from learning length as well, since ``r`` can represent any function of the text.
    """

    def loss_fn(
        model: nn.Module, gb: GroupBatch, normaliser: float
    ) -> tuple[Tensor, dict[str, Any]]:
        scores = group_scores(model, gb)
        length_term = unwrap_scalar(model).length_term
        extra = scores.new_zeros(())
        out: dict[str, Any] = {}
        if length_term is not None:
            log_len = torch.log1p(response_lengths(gb).to(scores.device))
            slope = length_slope(scores, log_len)
            extra = decorrelation * slope.square() * gb.num_groups / normaliser
            share = gb.num_groups / normaliser
            out["length_slope"] = slope.detach() * share
            out["length_corr"] = pearson_correlation(scores.detach(), log_len) * share
            scores = scores + length_term(torch.expm1(log_len))
        per_group, metrics = step(scores, gb)
        loss = per_group.sum() / normaliser + extra
        out["loss"] = loss.detach()
        out.update({k: v.sum() / normaliser for k, v in metrics.items()})
        return loss, out

    return loss_fn


def response_lengths(gb: GroupBatch) -> Tensor:
    """Response tokens (with EOS) of every row, group-major like the batch."""
    return torch.tensor([len(r) for g in gb.groups for r in g.responses], dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def read_split(
    data: PreferenceDataConfig,
    seed: int,
    transform: Callable[[PreferenceRecord, Row], PreferenceRecord] | None,
) -> tuple[PreferenceData, list[PreferenceRecord], list[PreferenceRecord]]:
    """(data as read, train records, held-out records)."""
    if not data.path:
        raise DataError("data.path is empty; point it at a pairwise or ranking file")
    read = read_preferences(
        data.path, data.format, data.split, data.limit, data.on_invalid, transform
    )
    if data.eval_path:
        held = read_preferences(data.eval_path, read.kind, None, None, data.on_invalid, transform)
        return read, list(read.records), list(held.records)
    train, evals = split_by_prompt(read.records, data.eval_fraction, seed)
    return read, train, evals


def tokenize(gt: GroupTokenizer, records: Sequence[PreferenceRecord], source: str) -> list[Group]:
    pairs = [r for r in records if isinstance(r, Comparison)]
    ranks = [r for r in records if isinstance(r, Ranking)]
    if pairs and ranks:
        raise DataError(f"{source}: mixes pairs and rankings; use one format per file")
    return (
        tokenize_rankings(gt, ranks, source) if ranks else tokenize_comparisons(gt, pairs, source)
    )


def _template_text(policy: str) -> str:
    """What to save so scoring renders prompts exactly as training did."""
    p = Path(policy)
    if policy.endswith(".jinja") and p.is_file():
        return p.read_text()
    return policy


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def train_scalar_model(
    cfg: RewardConfig | CostConfig,
    kind: HeadKind,
    step: StepLoss,
    transform: Callable[[PreferenceRecord, Row], PreferenceRecord] | None = None,
    pairs_only: bool = False,
) -> Path:
    """Shared body of :func:`run_reward` and :func:`run_cost`; returns the output folder."""
    timer = Timer()
    set_seed(cfg.train.seed)
    dist = Dist.create()
    tag = f"[{kind}]"

    # Validate and tokenise everything before loading weights: bad data fails in seconds,
    # and before creating the run folder, so a typo leaves nothing behind.
    read, train_records, eval_records = read_split(cfg.data, cfg.train.seed, transform)
    out = prepare_run_dir(cfg.train.output_dir, cfg, dist.is_main)
    from alignkit.models.load import load_tokenizer

    tok = load_tokenizer(cfg.model.tokenizer or cfg.model.path, cfg.model.trust_remote_code)
    gt = GroupTokenizer(
        tok, cfg.data.max_length, cfg.data.max_prompt_length, cfg.data.chat_template
    )
    groups = tokenize(gt, train_records, cfg.data.path)
    train_stats = gt.stats.as_dict()
    if isinstance(cfg, RewardConfig) and cfg.data.irrelevant_negatives:
        # Per record, before rankings become pairs: the share means the same for every loss.
        before = len(groups)
        groups = add_irrelevant_negatives(groups, cfg.data.irrelevant_negatives, cfg.train.seed)
        dist.print(f"{tag} irrelevant negatives: {len(groups) - before} pairs added")
    if isinstance(cfg, CostConfig) and cfg.data.prefix_copies:
        before = len(groups)
        groups = add_prefixes(groups, cfg.data.prefix_copies, cfg.train.seed)
        dist.print(f"{tag} prefixes: {len(groups) - before} truncated pairs added")
    if pairs_only:
        groups = expand_to_pairs(groups)
    eval_groups: list[Group] = []
    if eval_records:
        gt_eval = GroupTokenizer(
            tok, cfg.data.max_length, cfg.data.max_prompt_length, cfg.data.chat_template
        )
        eval_groups = tokenize(gt_eval, eval_records, cfg.data.eval_path or "held-out prompts")
        if pairs_only:
            eval_groups = expand_to_pairs(eval_groups)
    dist.print(
        f"{tag} {read.kind} data: {len(train_records)} train / {len(eval_records)} held-out records "
        f"({len(read.skipped)} skipped), {len(groups)} training groups; tokens {train_stats}"
    )

    length_rate = None
    if isinstance(cfg, RewardConfig) and cfg.loss.length_control:
        length_rate = cfg.loss.length_step / cfg.train.lr  # b moves ~length_step per step
    model, tok = load_scalar_model(cfg.model, kind=kind, length_term=length_rate)
    trainable, total = count_parameters(model)
    dist.print(f"{tag} trainable parameters: {trainable:,} / {total:,}")
    pad_id = tok.pad_token_id
    decorrelation = cfg.loss.length_decorrelation if isinstance(cfg, RewardConfig) else 0.0
    loss_fn = as_loss_fn(step, decorrelation)

    collate = group_collator(
        model, groups, pad_id, cfg.data.max_length, cfg.data.shared_prompt, "scores", dist.print
    )

    def make_batch(idx: list[int]) -> GroupBatch:
        return collate([groups[i] for i in idx]).to(dist.device)

    windows = Windows(
        len(groups), cfg.train.batch_size, cfg.train.grad_accum, cfg.train.seed, make_batch, dist
    )
    total_steps = steps_for(windows.per_epoch, cfg.train)
    trainer = Trainer(
        model, cfg.train, total_steps, out, dist, run_config=cfg.model_dump(mode="json"), desc=kind
    )

    def evaluate(m: nn.Module) -> dict[str, float]:
        return evaluate_groups(m, eval_groups, loss_fn, pad_id, cfg.train.batch_size, dist.device)

    last = trainer.fit(
        windows,
        loss_fn,
        count=lambda gb: gb.num_groups,
        eval_fn=evaluate if eval_groups else None,
        tokens=lambda gb: gb.num_real_tokens,
    )
    scalar = unwrap_scalar(trainer.unwrapped)
    scalar.meta.update(
        chat_template=_template_text(cfg.data.chat_template),
        max_length=cfg.data.max_length,
        max_prompt_length=cfg.data.max_prompt_length,
    )
    if scalar.length_term is not None:
        # b of the labels' b·log(1+n) length preference (log1p(e − 1) = 1 reads b off).
        with torch.no_grad():
            coef = float(scalar.length_term(torch.tensor([math.e - 1.0])).reshape(-1)[0])
        scalar.meta["label_length_coef"] = round(coef, 6)
        dist.print(f"{tag} labels' length preference b = {coef:.4f} per log(1 + tokens)")
    summary: dict[str, Any] = {
        "recipe": kind,
        "data": {
            **read.summary(),
            "train_records": len(train_records),
            "eval_records": len(eval_records),
        },
        "tokenization": train_stats,
        "train_groups": len(groups),
        "steps": total_steps,
        "trainable_params": trainable,
        "final": last,
    }
    if "label_length_coef" in scalar.meta:
        summary["label_length_coef"] = scalar.meta["label_length_coef"]
    if dist.is_main:
        if cfg.model.lora.enabled and not cfg.model.lora.merge_on_save:
            dist.print(
                f"{tag} scalar-head models are always saved merged (adapter in adapter/ too)"
            )
        save_hf_folder(trainer.unwrapped, tok, out, merge_lora=True)
        if cfg.report.enabled:
            summary["report"] = fitness_report(
                scalar,
                tok,
                eval_records or train_records,
                kind,
                cfg.report,
                out,
                held_out=bool(eval_records),
            )
        summary["wall_time_s"] = round(timer.seconds, 2)
        write_summary(out, summary)
    dist.barrier()
    dist.print(f"{tag} saved {out} ({timer.seconds:.1f}s)")
    return out


@torch.no_grad()
def evaluate_groups(
    model: nn.Module,
    groups: Sequence[Group],
    loss_fn: LossFn,
    pad_id: int,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Held-out loss and metrics, each averaged over groups."""
    sums: dict[str, float] = {}
    for i in range(0, len(groups), batch_size):
        gb = collate_groups(groups[i : i + batch_size], pad_id).to(device)
        _, metrics = loss_fn(model, gb, float(len(groups)))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return sums


def fitness_report(
    model: nn.Module,
    tok: Any,
    records: Sequence[PreferenceRecord],
    kind: Literal["reward", "cost", "value"],
    cfg: ReportConfig,
    out: Path,
    held_out: bool,
) -> dict[str, Any]:
    """Score ``records`` with the trained model and write rm_report.json/.png into ``out``."""
    scalar = unwrap_scalar(model)
    scorer = RewardScorer(scalar, tok, batch_size=cfg.batch_size)
    report_kind: Literal["reward", "cost"] = "cost" if kind == "cost" else "reward"
    scored = score_records(scorer, records, report_kind, cfg.category_field, cfg.gold_field)
    report = build_report(scored, report_kind, cfg.bins)
    if report_kind == "reward":
        report["relevance"] = relevance_check(scorer, records)
    report["data"] = "held-out" if held_out else "train (no held-out data: optimistic)"
    write_report(report, scored, out, cfg.plot)
    print_report(report, title=f"{kind} model fitness ({report['data']})")
    keys = ("accuracy", "pairs")
    head = {k: report[k] for k in keys}
    head["ece"] = report["calibration"]["ece"]
    if "sign_check" in report:
        head["safety_accuracy"] = report["sign_check"]["safety_accuracy"]
    if "gold" in report:
        head["accuracy_vs_gold"] = report["gold"]["accuracy_vs_gold"]
    return head


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def run_reward(cfg: RewardConfig) -> Path:
    """Train a reward model (``alignkit reward``); returns the output folder.

    Bradley–Terry trains on pairs (ranking data is expanded to all C(K, 2) pairs); K-wise and
    Plackett–Luce keep each ranking in one batch element (pairs are rankings of two).
    """
    return train_scalar_model(
        cfg, "reward", reward_step_loss(cfg.loss), pairs_only=cfg.loss.type == "bt"
    )


def run_cost(cfg: CostConfig) -> Path:
    """Train a Safe RLHF cost model (``alignkit cost``); returns the output folder."""
    return train_scalar_model(
        cfg,
        "cost",
        cost_step_loss(cfg.loss.reg_coef),
        transform=safety_transform(cfg.loss.missing_safer),
    )
