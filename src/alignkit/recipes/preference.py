"""Direct preference optimisation: one loop for DPO, IPO, cDPO, robust DPO, KTO, ORPO, SimPO,
CPO and f-DPO, offline on a dataset or iteratively on pairs sampled from the policy.

Read top to bottom:

1. :func:`check_options` rejects combinations a method cannot use, before anything loads.
2. Data become *groups* (:mod:`alignkit.data.pairs`): a prompt with two responses (chosen,
   rejected) for paired losses; for KTO a prompt with its labelled response plus a *mismatched*
   response (another example's completion), whose log-ratio estimates KTO's reference point
   z₀. Both rows of a group go through the model in one padded forward.
3. :class:`Reference` says where reference log-probs come from: precomputed once (cached in the
   run folder), the LoRA policy with its adapter disabled, or a live frozen copy.
4. :class:`PreferenceStep` is the loss the shared :class:`~alignkit.engine.loop.Trainer`
   calls: one forward, summed completion log-probs, then
   :func:`~alignkit.losses.preference.preference_loss` — the maths lives there, not here.
5. :func:`run_dpo` trains once (offline) or, with ``iterations=N``, N times on fresh pairs that
   the policy samples and a :class:`~alignkit.rollout.judges.Judge` ranks.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from alignkit.config import ConfigError, ModelConfig
from alignkit.configs.preference import REFERENCE_FREE, DPOConfig
from alignkit.data.pairs import (
    Group,
    GroupBatch,
    GroupTokenizer,
    tokenize_comparisons,
    tokenize_rankings,
    tokenize_unpaired,
)
from alignkit.data.preference import (
    detect_format,
    distinct_ranking,
    kto_groups,
    pair_groups,
    pairs_to_singles,
    ranked_pairs,
)
from alignkit.data.readers import read_records, write_jsonl
from alignkit.data.records import PromptOnly
from alignkit.engine.checkpoint import trainable_state
from alignkit.engine.distributed import Dist
from alignkit.engine.loop import Trainer, steps_for
from alignkit.engine.tracking import read_metrics
from alignkit.losses.policy import kl_k1
from alignkit.losses.preference import (
    PairedLogps,
    PreferenceConfig,
    PreferenceLoss,
    UnpairedLogps,
    kto_reference_point,
    preference_loss,
)
from alignkit.models.load import (
    count_parameters,
    disable_dropout,
    is_peft,
    load_causal_lm,
    load_tokenizer,
    save_hf_folder,
)
from alignkit.models.reference import Reference, freeze, frozen_copy, sequence_logps
from alignkit.models.shared_prompt import group_collator
from alignkit.recipes.common import Timer, Windows, prepare_run_dir, set_seed, write_summary
from alignkit.rollout.generate import SamplingConfig, generate
from alignkit.rollout.judges import Judge, load_judge

# ------------------------------------------------------------------------------ options


def check_options(cfg: DPOConfig, judge_given: bool = False) -> tuple[PreferenceLoss, str]:
    """(loss kind, resolved reference mode), or one ConfigError saying what to do instead."""
    kind = PreferenceLoss(cfg.loss)
    ref = cfg.reference
    if kind.needs_reference:
        ref = "precompute" if ref == "auto" else ref
        if ref == "none":
            raise ConfigError(
                f"loss={kind.value} compares the policy with a reference model; set "
                "reference=precompute (default), adapter (LoRA) or live, or use a reference-free "
                f"loss ({', '.join(REFERENCE_FREE)})"
            )
    elif ref not in ("auto", "none") or cfg.reference_model or cfg.online.update_reference:
        raise ConfigError(
            f"loss={kind.value} is reference-free, so reference options (reference={ref}, "
            "reference_model, online.update_reference) do not apply: remove them, or choose a "
            "loss that uses a reference (dpo, ipo, cdpo, robust, kto, fdpo)"
        )
    else:
        ref = "none"
    if ref == "adapter" and not cfg.model.lora.enabled:
        raise ConfigError(
            "reference=adapter reads the reference from the base model with the LoRA adapter "
            "disabled, so it needs model.lora.enabled=true; with full fine-tuning use "
            "reference=precompute or reference=live"
        )
    if ref == "adapter" and (cfg.reference_model or cfg.online.update_reference):
        raise ConfigError(
            "reference=adapter: the reference is the base model under the adapter; drop "
            "reference_model / online.update_reference, or use reference=precompute or live"
        )
    if cfg.reference_model and cfg.online.update_reference:
        raise ConfigError(
            "online.update_reference makes each iteration's starting policy the reference; "
            "drop reference_model or set online.update_reference=false"
        )
    if cfg.label_smoothing and kind not in (PreferenceLoss.CDPO, PreferenceLoss.ROBUST):
        raise ConfigError(
            f"label_smoothing={cfg.label_smoothing} is read only by loss=cdpo or loss=robust "
            f"(noisy labels); set one of them, or label_smoothing=0 for loss={kind.value}"
        )
    if cfg.rpo_alpha and kind in (PreferenceLoss.ORPO, PreferenceLoss.CPO, PreferenceLoss.KTO):
        raise ConfigError(
            f"rpo_alpha adds an NLL term on the chosen response, which loss={kind.value} "
            + (
                "does not have (unpaired data)"
                if kind is PreferenceLoss.KTO
                else "already has: tune orpo_lambda / cpo_alpha instead"
            )
            + "; set rpo_alpha=0"
        )
    if cfg.iterations and not (cfg.judge or judge_given):
        raise ConfigError(
            f"iterations={cfg.iterations} samples pairs from the policy and needs a judge to rank "
            "them: judge=<reward model folder> or judge=<sandbox world folder>"
        )
    if cfg.judge and not cfg.iterations:
        raise ConfigError("judge is used by online rounds only: set iterations=N (N >= 1)")
    if not cfg.data.path:
        what = "a prompt file" if cfg.iterations else "a preference file"
        raise ConfigError(f"data.path is empty; point it at {what}")
    return kind, ref


# ------------------------------------------------------------------------------ data


def groups_for(
    records: Sequence[Any],
    fmt: str,
    gt: GroupTokenizer,
    cfg: DPOConfig,
    kind: PreferenceLoss,
    source: str,
) -> list[Group]:
    """Records of ``fmt`` → the groups ``kind`` trains on (pairs, or KTO single+mismatch)."""
    if fmt == "unpaired":
        if kind.paired:
            raise ConfigError(
                f"loss={kind.value} learns from pairs but {source} holds unpaired labelled "
                "examples (prompt, completion, label): use loss=kto, or pairwise/ranking data"
            )
        singles = tokenize_unpaired(gt, records, source)
    else:
        if fmt == "ranking":
            ranked = [r for r in (distinct_ranking(x) for x in records) if r is not None]
            mode = cfg.data.ranking_pairs
            if mode == "grouped" and not kind.paired:
                mode = "all"  # KTO splits pairs into singles: nothing to forward once
            pairs = pair_groups(tokenize_rankings(gt, ranked, source), mode)
        else:
            pairs = tokenize_comparisons(gt, records, source)
        return pairs if kind.paired else kto_from_pairs(pairs, cfg, f"{source} holds {fmt} data")
    return kto_groups(singles, cfg.train.seed, cfg.data.max_length)


def kto_from_pairs(pairs: list[Group], cfg: DPOConfig, what: str) -> list[Group]:
    """KTO on pairs only when asked (data.to_unpaired): splitting a pair is a modelling choice."""
    if not cfg.data.to_unpaired:
        raise ConfigError(
            f"loss=kto learns from unpaired labelled examples but {what}: set "
            "data.to_unpaired=true to split each pair into a desirable (chosen) and an "
            "undesirable (rejected) example, or use a paired loss such as dpo"
        )
    return kto_groups(pairs_to_singles(pairs), cfg.train.seed, cfg.data.max_length)


def read_preference_data(
    cfg: DPOConfig, kind: PreferenceLoss, tokenizer: Any
) -> tuple[list[Group], list[Group], dict[str, Any]]:
    """Train and eval groups. The eval split is taken from *records*, before pairs are formed,
    so pairs of one ranked prompt never land on both sides."""
    d = cfg.data
    fmt = d.format if d.format != "auto" else detect_format(d.path, d.split)
    records = read_records(d.path, fmt, d.split, d.limit)
    if d.eval_path:
        eval_fmt = d.format if d.format != "auto" else detect_format(d.eval_path, None)
        eval_records, eval_source = read_records(d.eval_path, eval_fmt), d.eval_path
    else:
        eval_fmt, eval_source = fmt, f"{d.path} (held out)"
        order = list(range(len(records)))
        random.Random(cfg.train.seed).shuffle(order)
        n_eval = int(len(records) * d.eval_fraction)
        held = set(order[:n_eval])
        eval_records = [r for i, r in enumerate(records) if i in held]
        records = [r for i, r in enumerate(records) if i not in held]
    gt = GroupTokenizer(tokenizer, d.max_length, d.max_prompt_length, d.chat_template)
    train = groups_for(records, fmt, gt, cfg, kind, d.path)
    stats = {"format": fmt, "records": len(records), **gt.stats.as_dict()}
    evals = groups_for(eval_records, eval_fmt, gt, cfg, kind, eval_source) if eval_records else []
    stats.update(train_groups=len(train), eval_groups=len(evals), eval_records=len(eval_records))
    return train, evals, stats


# ------------------------------------------------------------------------------ reference


def build_reference(cfg: DPOConfig, mode: str, policy: nn.Module) -> Reference:
    """The reference for ``mode``; a frozen model is loaded or copied only where needed."""
    frozen: nn.Module | None = None
    needs_copy = mode == "live" or (
        # Online rounds change the policy, so the starting weights must survive for precompute.
        mode == "precompute"
        and cfg.iterations > 0
        and not cfg.online.update_reference
        and not is_peft(policy)
    )
    if mode in ("live", "precompute") and cfg.reference_model:
        ref_cfg = ModelConfig(
            path=cfg.reference_model,
            dtype=cfg.model.dtype,
            trust_remote_code=cfg.model.trust_remote_code,
            allow_pickle=cfg.model.allow_pickle,
        )
        frozen, _ = load_causal_lm(ref_cfg, for_training=False)
        frozen = freeze(frozen, policy)
    elif needs_copy:
        frozen = frozen_copy(policy)
    return Reference(mode, policy, frozen)


# ------------------------------------------------------------------------------ the loss


@dataclass
class PrefBatch:
    """A micro-batch: the groups' padded rows and, when precomputed, their reference log-probs.
    ``pairs`` [P, 3] holds (group, winner, loser) of every pair the groups imply: one per pair
    group, C(K, 2) per whole ranking (``data.ranking_pairs=grouped``)."""

    gb: GroupBatch
    ref: torch.Tensor | None
    pairs: torch.Tensor

    @classmethod
    def of(cls, gb: GroupBatch, ref: torch.Tensor | None) -> PrefBatch:
        rows = [(gi, w, l_) for gi, g in enumerate(gb.groups) for w, l_ in ranked_pairs(g)]
        pairs = torch.tensor(rows, dtype=torch.long, device=gb.group_of.device).view(-1, 3)
        return cls(gb, ref, pairs)


@dataclass
class PreferenceStep:
    """``loss_fn`` of the Trainer: the loss of a micro-batch as a share of the step's pairs."""

    kind: PreferenceLoss
    config: PreferenceConfig
    reference: Reference
    dist: Dist
    forwards: int = field(default=0)

    def __call__(
        self, model: nn.Module, mb: PrefBatch, normaliser: float
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        summed, lengths = sequence_logps(model, mb.gb)
        self.forwards += 1
        ref = mb.ref
        if ref is None and self.reference.mode in ("adapter", "live"):
            ref = self.reference.logps(mb.gb)
        if ref is not None:
            ref = ref.to(summed.device, summed.dtype)
        if self.kind.paired:
            loss, metrics = preference_loss(
                self.kind, self._paired(summed, lengths, ref, mb.pairs), self.config
            )
            if ref is not None:
                real = lengths > 0  # not the padding of a ranking with fewer responses
                metrics["kl"] = kl_k1(summed[real], ref[real]).detach().mean()
        else:
            assert ref is not None
            loss, metrics = preference_loss(self.kind, self._unpaired(summed, ref, mb), self.config)
            desirable = _desirable(mb).to(summed.device)
            matched = summed[:, 0].detach()
            metrics["logps/chosen"] = matched[desirable].sum() / desirable.sum()
            metrics["logps/rejected"] = matched[~desirable].sum() / (~desirable).sum()
        share = self.units(mb) / normaliser
        out = {"loss": loss.detach().mean() * share}
        out.update({k: v * share for k, v in metrics.items()})
        return loss.sum() / normaliser, out

    def units(self, mb: PrefBatch) -> int:
        """What the loss averages over: pairs for paired losses, examples for KTO."""
        return int(mb.pairs.shape[0]) if self.kind.paired else mb.gb.num_groups

    @staticmethod
    def _paired(
        summed: torch.Tensor, lengths: torch.Tensor, ref: torch.Tensor | None, pairs: torch.Tensor
    ) -> PairedLogps:
        g, w, l_ = pairs.unbind(1)
        return PairedLogps(
            policy_chosen=summed[g, w],
            policy_rejected=summed[g, l_],
            chosen_lengths=lengths[g, w],
            rejected_lengths=lengths[g, l_],
            ref_chosen=None if ref is None else ref[g, w],
            ref_rejected=None if ref is None else ref[g, l_],
        )

    def _unpaired(self, summed: torch.Tensor, ref: torch.Tensor, mb: PrefBatch) -> UnpairedLogps:
        # z₀ from the mismatched rows (column 1), averaged over all processes before the clamp.
        diff = (summed[:, 1] - ref[:, 1]).detach()
        total = self.dist.all_reduce_sum(float(diff.sum()))
        count = self.dist.all_reduce_sum(float(diff.numel()))
        mean = torch.tensor([total / count], dtype=summed.dtype, device=summed.device)
        z0 = kto_reference_point(mean, torch.zeros_like(mean))
        return UnpairedLogps(
            policy=summed[:, 0],
            desirable=_desirable(mb).to(summed.device),
            reference_point=z0,
            ref=ref[:, 0],
        )


def _desirable(mb: PrefBatch) -> torch.Tensor:
    return torch.tensor([g.labels[0] > 0.5 for g in mb.gb.groups], dtype=torch.bool)


def evaluate(
    step: PreferenceStep, model: nn.Module, batches: Sequence[PrefBatch]
) -> dict[str, float]:
    """Loss and metrics over the held-out pairs (KTO: examples), each weighted equally."""
    n = sum(step.units(b) for b in batches)
    sums: dict[str, float] = {}
    forwards = step.forwards
    for b in batches:
        _, metrics = step(model, b, float(n))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    step.forwards = forwards  # count training forwards only
    return sums


# ------------------------------------------------------------------------------ one round


@dataclass
class Run:
    """What every round shares: the config, the policy, its reference and the loss."""

    cfg: DPOConfig
    dist: Dist
    model: nn.Module
    tokenizer: Any
    reference: Reference
    step: PreferenceStep
    out: Path


def train_round(
    run: Run, train: list[Group], evals: list[Group], out_dir: Path, desc: str
) -> dict[str, Any]:
    """Train on ``train`` with the shared loop (eval metrics on ``evals``); returns its summary."""
    cfg, dist = run.cfg, run.dist
    pad, bs = run.tokenizer.pad_token_id, cfg.train.batch_size
    refs: dict[str, torch.Tensor] = {}
    collate = group_collator(
        run.model, train, pad, cfg.data.max_length, cfg.data.shared_prompt, "logps", dist.print
    )
    if run.reference.mode == "precompute":
        named = {"train": train, **({"eval": evals} if evals else {})}
        tag = f"{cfg.reference_model or cfg.model.path}|current={run.reference.use_current_policy}"
        out_dir.mkdir(parents=True, exist_ok=True)
        refs = run.reference.precompute(
            named,
            out_dir / "reference_logps.safetensors",
            tag,
            2 * bs,
            pad,
            dist.device,
            write=dist.is_main,
            collate=collate,
        )
        if not cfg.iterations:
            run.reference.frozen = None  # a loaded reference_model is not needed any more
        dist.print(f"[dpo] reference log-probs: {run.reference.seconds:.1f}s (cached in {out_dir})")

    def batch(groups: list[Group], ref: torch.Tensor | None, idx: list[int]) -> PrefBatch:
        gb = collate([groups[i] for i in idx]).to(dist.device)
        return PrefBatch.of(gb, None if ref is None else ref[idx])

    windows = Windows(
        len(train),
        bs,
        cfg.train.grad_accum,
        cfg.train.seed,
        lambda idx: batch(train, refs.get("train"), idx),
        dist,
    )
    total = steps_for(windows.per_epoch, cfg.train)
    trainer = Trainer(
        run.model,
        cfg.train,
        total,
        out_dir,
        dist,
        run_config=cfg.model_dump(mode="json"),
        desc=desc,
    )
    eval_batches = [
        batch(evals, refs.get("eval"), list(range(s, min(s + bs, len(evals)))))
        for s in range(0, len(evals), bs)
    ]
    last = trainer.fit(
        windows,
        run.step,
        count=run.step.units,
        eval_fn=(lambda m: evaluate(run.step, m, eval_batches)) if eval_batches else None,
        tokens=lambda b: b.gb.num_real_tokens,
    )
    run.model = trainer.unwrapped
    return {"steps": total, "train_groups": len(train), "eval_groups": len(evals), "final": last}


# ------------------------------------------------------------------------------ online rounds


def read_prompts(cfg: DPOConfig) -> tuple[list[PromptOnly], list[PromptOnly]]:
    """Prompts to sample from (any file with a prompt field), and held-out prompts for eval."""
    d = cfg.data
    prompts: list[PromptOnly] = read_records(d.path, "prompt", d.split, d.limit)
    if d.eval_path:
        return prompts, read_records(d.eval_path, "prompt")
    order = list(range(len(prompts)))
    random.Random(cfg.train.seed).shuffle(order)
    held = set(order[: int(len(prompts) * d.eval_fraction)])
    return [p for i, p in enumerate(prompts) if i not in held], [prompts[i] for i in sorted(held)]


def sample_pairs(
    run: Run, judge: Judge, prompts: Sequence[PromptOnly], seed: int, path: Path
) -> tuple[list[Group], dict[str, float]]:
    """Two samples per prompt from the current policy, ranked by the judge → (pairs, stats).

    Pairs are built from the sampled token ids themselves, not re-tokenised text, so the policy
    is trained on exactly what it produced. Ties (equal scores, identical samples) are skipped.
    """
    cfg, o = run.cfg, run.cfg.online
    sampling = SamplingConfig(
        max_new_tokens=o.max_new_tokens,
        temperature=o.temperature,
        top_p=o.top_p,
        batch_size=o.generation_batch_size,
        max_prompt_length=cfg.data.max_prompt_length or cfg.data.max_length // 2,
    )
    texts = [p.prompt for p in prompts]
    gens = generate(run.model, run.tokenizer, texts, sampling, 2, cfg.data.chat_template, seed)
    scores = judge.score(
        [t for t in texts for _ in range(2)],
        [g.text for row in gens for g in row],
        [p.extra for p in prompts for _ in range(2)],
    )
    groups, rows = [], []
    for i, (p, (a, b)) in enumerate(zip(prompts, gens, strict=True)):
        sa, sb = scores[2 * i], scores[2 * i + 1]
        if abs(sa - sb) <= o.min_score_gap or a.completion_ids == b.completion_ids:
            continue
        (w, sw), (l_, sl) = sorted([(a, sa), (b, sb)], key=lambda x: -x[1])
        room = cfg.data.max_length - len(w.prompt_ids)
        groups.append(
            Group(w.prompt_ids, [w.completion_ids[:room], l_.completion_ids[:room]], [0, 1])
        )
        row = {"prompt": p.prompt, "chosen": w.text, "rejected": l_.text}
        rows.append({**row, "chosen_score": sw, "rejected_score": sl})
    if run.dist.is_main:
        write_jsonl(path, rows)
    mean = sum(scores) / max(1, len(scores))
    return groups, {"pairs": len(groups), "ties": len(prompts) - len(groups), "score_mean": mean}


def online_groups(run: Run, pairs: list[Group], source: str) -> list[Group]:
    """Sampled pairs → the groups the loss trains on (KTO: split, with the same rule as files)."""
    if run.step.kind.paired or not pairs:
        return pairs
    return kto_from_pairs(pairs, run.cfg, f"online iterations produce pairs ({source})")


def run_online(
    run: Run, judge: Judge, prompts: list[PromptOnly], eval_prompts: list[PromptOnly]
) -> list[dict[str, Any]]:
    """``iterations`` rounds of sample → judge → train. A finished round is reloaded on rerun."""
    cfg, o = run.cfg, run.cfg.online
    rounds: list[dict[str, Any]] = []
    for k in range(1, cfg.iterations + 1):
        rdir = run.out / f"iteration-{k}"
        done = rdir / "policy_state.safetensors"
        if k > 1 and o.update_reference:
            run.reference.refresh()
        if done.is_file() and cfg.train.resume is not False:
            _load_trainable(run.model, done)
            rounds.append(json.loads((rdir / "iteration.json").read_text()))
            run.dist.print(f"[dpo] iteration {k}: already trained, reloaded from {rdir}")
            continue
        seed = cfg.train.seed + 1000 * k
        picked = random.Random(seed).sample(prompts, min(o.prompts_per_iteration, len(prompts)))
        pairs, stats = sample_pairs(run, judge, picked, seed, rdir / "pairs.jsonl")
        info: dict[str, Any] = {"iteration": k, **{f"online/{n}": v for n, v in stats.items()}}
        eval_pairs: list[Group] = []
        if eval_prompts:
            eval_pairs, estats = sample_pairs(
                run, judge, eval_prompts, seed + 1, rdir / "eval_pairs.jsonl"
            )
            info.update({f"online_eval/{n}": v for n, v in estats.items()})
        run.dist.print(
            f"[dpo] iteration {k}: {stats['pairs']} pairs, judge mean {stats['score_mean']:.3f}"
        )
        train = online_groups(run, pairs, f"iteration {k}")
        if train:
            info.update(
                train_round(run, train, online_groups(run, eval_pairs, "eval"), rdir, f"dpo:{k}")
            )
        else:
            run.dist.print(f"[dpo] iteration {k}: every pair was a tie; nothing to train on")
        if run.dist.is_main:
            rdir.mkdir(parents=True, exist_ok=True)
            save_file(trainable_state(run.model), str(rdir / ".policy_state.tmp"))
            (rdir / "iteration.json").write_text(json.dumps(info, default=str))
            (rdir / ".policy_state.tmp").replace(done)
        rounds.append(info)
    if run.dist.is_main:
        _merge_iteration_metrics(run.out, rounds)
    return rounds


def _load_trainable(model: nn.Module, path: Path) -> None:
    params = dict(model.named_parameters())
    for name, tensor in load_file(str(path)).items():
        params[name].data.copy_(tensor)


def _merge_iteration_metrics(out: Path, rounds: list[dict[str, Any]]) -> None:
    """One metrics.jsonl for the run: each round's rows (global step) and its sampling stats."""
    lines, offset = [], 0
    for info in rounds:
        k = info["iteration"]
        for row in read_metrics(out / f"iteration-{k}" / "metrics.jsonl"):
            lines.append({**row, "iteration": k, "step": row["step"] + offset})
        offset += int(info.get("steps", 0))
        sampled = {n: v for n, v in info.items() if n.startswith("online")}
        lines.append({"step": offset, "iteration": k, **sampled})
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


# ------------------------------------------------------------------------------ the command


def run_dpo(cfg: DPOConfig, judge: Judge | None = None) -> Path:
    """Align ``cfg.model`` with a preference loss; returns the output folder (an HF folder).

    ``judge`` (Python only) overrides ``cfg.judge`` for online rounds: any object with
    ``score(prompts, responses, records)``, e.g. ``FunctionJudge(my_reward_fn)``.
    """
    timer = Timer()
    kind, ref_mode = check_options(cfg, judge is not None)
    set_seed(cfg.train.seed)
    dist = Dist.create()
    out = prepare_run_dir(cfg.train.output_dir, cfg, dist.is_main)

    # Read and tokenise every record before loading weights: bad data fails in seconds.
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path, cfg.model.trust_remote_code)
    summary: dict[str, Any] = {"recipe": "dpo", "loss": kind.value, "reference": ref_mode}
    if cfg.iterations:
        judge = judge or load_judge(str(cfg.judge))
        prompts, eval_prompts = read_prompts(cfg)
        summary["data"] = {"prompts": len(prompts), "eval_prompts": len(eval_prompts)}
    else:
        train, evals, summary["data"] = read_preference_data(cfg, kind, tokenizer)
        dist.print(f"[dpo] {len(train)} train / {len(evals)} eval groups ({summary['data']})")

    model, tokenizer = load_causal_lm(cfg.model)
    disable_dropout(model)  # deterministic forwards: π = π_ref exactly at step 0
    trainable, total = count_parameters(model)
    dist.print(f"[dpo] loss={kind.value} reference={ref_mode} trainable {trainable:,}/{total:,}")
    reference = build_reference(cfg, ref_mode, model)
    pcfg = PreferenceConfig(
        beta=cfg.resolved_beta(),
        label_smoothing=cfg.label_smoothing,
        simpo_gamma=cfg.simpo_gamma,
        cpo_alpha=cfg.cpo_alpha,
        orpo_lambda=cfg.orpo_lambda,
        kto_desirable_weight=cfg.kto_desirable_weight,
        kto_undesirable_weight=cfg.kto_undesirable_weight,
        f_divergence=cfg.f_divergence,
        f_alpha=cfg.f_alpha,
        rpo_alpha=cfg.rpo_alpha,
    )
    run = Run(
        cfg, dist, model, tokenizer, reference, PreferenceStep(kind, pcfg, reference, dist), out
    )
    if cfg.iterations:
        assert judge is not None
        summary["iterations"] = run_online(run, judge, prompts, eval_prompts)
    else:
        summary.update(train_round(run, train, evals, out, "dpo"))

    if dist.is_main:
        save_hf_folder(run.model, tokenizer, out, cfg.model.lora.merge_on_save)
        summary.update(
            beta=pcfg.beta,
            trainable_params=trainable,
            policy_forwards=run.step.forwards,
            reference_seconds=round(reference.seconds, 2),
            wall_time_s=round(timer.seconds, 2),
        )
        write_summary(out, summary)
    dist.barrier()
    dist.print(f"[dpo] saved {out} ({timer.seconds:.1f}s)")
    return out
