"""Online RL from feedback: PPO, GRPO, RLOO, REINFORCE++, ReMax, f-DPG and Safe RLHF as ONE loop.

Each iteration: sample prompts → generate a group of responses per prompt (KV cache) → score
them (reward model, ensemble, Python function or the sandbox oracle) → compute old and
reference log-probs (and critic values) without gradients → advantages from the chosen
estimator → a few clipped policy-gradient steps (and critic steps) through the shared Trainer.

The methods differ only in ``advantages()`` (and in whether a critic and a cost stream
exist), which is the point (OpenRLHF's insight; STYLE.md). All maths lives in ``losses/``.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignkit.config import ConfigError, ModelConfig
from alignkit.configs.rl import RewardSource, RLConfig
from alignkit.data.readers import read_records
from alignkit.data.tokenize import IGNORE_INDEX
from alignkit.engine.distributed import Dist
from alignkit.engine.loop import Trainer
from alignkit.losses.advantages import (
    adaptive_kl_coef,
    fraction_uniform_groups,
    gae,
    grpo_advantages,
    kl_penalized_rewards,
    kl_penalized_scores,
    reinforce_plus_plus_advantages,
    remax_advantages,
    rloo_advantages,
)
from alignkit.losses.fdiv import fdpg_pseudo_rewards
from alignkit.losses.policy import (
    aggregate_tokens,
    aggregation_normalizer,
    clipped_value_loss,
    kl_k3,
    masked_sum,
    masked_whiten,
    ppo_policy_loss,
)
from alignkit.losses.safety import lagrange_update, safe_rlhf_advantage
from alignkit.models.load import disable_dropout, is_peft, load_causal_lm
from alignkit.models.logprobs import gather_logprobs, token_entropy
from alignkit.recipes.common import Timer, prepare_run_dir, set_seed, write_summary
from alignkit.rollout.backends import logprob_mismatch, make_backend
from alignkit.rollout.generate import SamplingConfig
from alignkit.rollout.judges import FunctionJudge, Judge, OracleJudge, RewardModelJudge

# --------------------------------------------------------------------------------------------
# Reward and cost sources
# --------------------------------------------------------------------------------------------


def import_function(spec: str, key: str) -> Any:
    if ":" not in spec:
        raise ConfigError(f"{key}={spec!r}: expected module:function (e.g. my_rewards:score)")
    module, name = spec.split(":", 1)
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{key}={spec!r}: cannot import ({e})") from None
    if not callable(fn):
        raise ConfigError(f"{key}={spec!r} is not callable")
    return fn


class EnsembleJudge:
    def __init__(self, paths: Sequence[str], mode: str, k: float) -> None:
        from alignkit.models.scorer import RewardEnsemble

        self.ens = RewardEnsemble.from_pretrained(list(paths), mode=mode, std_coef=k)

    def score(
        self, prompts: Sequence[Any], responses: Sequence[str], records: Sequence[dict]
    ) -> list[float]:
        return [float(s) for s in self.ens.score(list(prompts), list(responses))]


def build_judge(src: RewardSource) -> Judge:
    chosen = [
        k
        for k, v in (
            ("model", src.model),
            ("models", src.models),
            ("function", src.function),
            ("oracle", src.oracle),
        )
        if v
    ]
    if len(chosen) != 1:
        raise ConfigError(
            "set exactly one of reward.model, reward.models (ensemble), reward.function, "
            f"reward.oracle (got: {', '.join(chosen) or 'none'})"
        )
    if src.model:
        return RewardModelJudge(src.model)
    if src.models:
        return EnsembleJudge(src.models, src.ensemble, src.ensemble_std_coef)
    if src.function:
        return FunctionJudge(import_function(src.function, "reward.function"))
    assert src.oracle is not None
    return OracleJudge(src.oracle)


class OracleCost:
    """The sandbox oracle's harm judgement as a cost: +1 unsafe, −1 safe (the sign convention
    of Safe RLHF cost models: safe responses have negative cost)."""

    def __init__(self, world: str) -> None:
        from alignkit.sandbox.oracle import GoldOracle

        self.oracle = GoldOracle.from_dir(world)

    def score(
        self, prompts: Sequence[Any], responses: Sequence[str], records: Sequence[dict]
    ) -> list[float]:
        rows = [{"prompt": p, **r} for p, r in zip(prompts, records, strict=True)]
        return [
            1.0 if s.is_unsafe else -1.0 for s in self.oracle.score_batch(rows, list(responses))
        ]


def build_cost(cfg: RLConfig) -> Judge | None:
    s = cfg.safety
    if not s.enabled:
        return None
    chosen = [
        k
        for k, v in (
            ("cost_model", s.cost_model),
            ("cost_function", s.cost_function),
            ("oracle", s.oracle),
        )
        if v
    ]
    if len(chosen) != 1:
        raise ConfigError(
            "safety.enabled: set exactly one of safety.cost_model, safety.cost_function, "
            f"safety.oracle (got: {', '.join(chosen) or 'none'})"
        )
    if s.cost_model:
        return RewardModelJudge(s.cost_model)
    if s.cost_function:
        return FunctionJudge(import_function(s.cost_function, "safety.cost_function"))
    assert s.oracle is not None
    return OracleCost(s.oracle)


# --------------------------------------------------------------------------------------------
# Rollouts
# --------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """One iteration's sequences, right-padded; per-token grids are ``[N, W-1]`` (shifted)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    group: torch.Tensor  # prompt index within the iteration, per sequence
    texts: list[str]
    prompts: list[Any]
    records: list[dict[str, Any]]
    finished: torch.Tensor
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    entropy: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


def build_rollout(
    gens: list[list[Any]], prompts: list[Any], records: list[dict], pad_id: int
) -> Rollout:
    rows, groups, texts, finished, ps, rs = [], [], [], [], [], []
    for gi, (samples, p, r) in enumerate(zip(gens, prompts, records, strict=True)):
        for g in samples:
            comp = g.completion_ids or [pad_id]  # an empty completion still needs one slot
            rows.append((g.prompt_ids, comp))
            groups.append(gi)
            texts.append(g.text)
            finished.append(g.finished)
            ps.append(p)
            rs.append(r)
    width = max(len(p) + len(c) for p, c in rows)
    n = len(rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        row = torch.tensor(p + c, dtype=torch.long)
        ids[i, : len(row)] = row
        labels[i, len(p) : len(row)] = row[len(p) :]
        attn[i, : len(row)] = 1
    mask = (labels[:, 1:] != IGNORE_INDEX).float()
    return Rollout(
        ids, attn, labels, mask, torch.tensor(groups), texts, ps, rs, torch.tensor(finished)
    )


@torch.no_grad()
def logprobs_of(
    model: nn.Module,
    roll: Rollout,
    batch_size: int,
    temperature: float,
    device: torch.device,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of the sampled tokens ``[N, W-1]`` (and entropies), batched."""
    outs, ents = [], []
    for s in range(0, roll.size, batch_size):
        sl = slice(s, s + batch_size)
        logits = model(
            input_ids=roll.input_ids[sl].to(device),
            attention_mask=roll.attention_mask[sl].to(device),
            use_cache=False,
        ).logits
        logp, _ = gather_logprobs(logits, roll.labels[sl].to(device), temperature)
        outs.append(logp.cpu())
        if with_entropy:
            ents.append(token_entropy(logits[:, :-1] / temperature).cpu())
    return torch.cat(outs), (torch.cat(ents) if with_entropy else None)


@torch.no_grad()
def values_of(
    critic: nn.Module, roll: Rollout, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Critic values V_t aligned with the shifted grid: the state before each sampled token."""
    outs = []
    for s in range(0, roll.size, batch_size):
        sl = slice(s, s + batch_size)
        v = critic(roll.input_ids[sl].to(device), roll.attention_mask[sl].to(device))
        outs.append(v[:, :-1].float().cpu())
    return torch.cat(outs) * roll.mask


# --------------------------------------------------------------------------------------------
# Advantages: the only place where the methods differ
# --------------------------------------------------------------------------------------------


@dataclass
class Advantages:
    adv: torch.Tensor  # [N, W-1] or [N]
    returns: torch.Tensor | None = None
    cost_returns: torch.Tensor | None = None


def advantages(
    cfg: RLConfig,
    roll: Rollout,
    scores: torch.Tensor,
    beta: float,
    values: torch.Tensor | None,
    greedy_scores: torch.Tensor | None,
    costs: torch.Tensor | None,
    cost_values: torch.Tensor | None,
    lam: float,
) -> Advantages:
    a = cfg.algo
    G = cfg.rollout.num_generations
    assert roll.old_logp is not None and roll.ref_logp is not None
    old, ref, mask = roll.old_logp, roll.ref_logp, roll.mask
    in_reward = a.kl_penalty == "reward"
    if a.estimator == "ppo":
        assert values is not None
        token_r, _ = kl_penalized_rewards(scores, old, ref, mask, beta if in_reward else 0.0)
        adv, returns = gae(token_r, values, mask, a.gamma, a.lam)
        cost_returns = None
        if costs is not None and cost_values is not None:
            # The cost stream carries +βKL (safe-rlhf): a KL increase is a cost too.
            cost_r, _ = kl_penalized_rewards(costs, old, ref, mask, -beta if in_reward else 0.0)
            cadv, cost_returns = gae(cost_r, cost_values, mask, a.gamma, a.lam)
            if a.whiten_advantages:
                adv, cadv = masked_whiten(adv, mask), masked_whiten(cadv, mask)
            return Advantages(safe_rlhf_advantage(adv, cadv, lam) * mask, returns, cost_returns)
        if a.whiten_advantages:
            adv = masked_whiten(adv, mask)
        return Advantages(adv * mask, returns)
    # Critic-free estimators: with a cost stream, optimise the Lagrangian reward R − λC.
    if costs is not None:
        scores = scores - lam * costs
    if a.estimator == "reinforce_pp":
        token_r, _ = kl_penalized_rewards(scores, old, ref, mask, beta if in_reward else 0.0)
        return Advantages(reinforce_plus_plus_advantages(token_r, mask, a.gamma) * mask)
    seq_scores = kl_penalized_scores(scores, old, ref, mask, beta) if in_reward else scores
    if a.estimator == "grpo":
        return Advantages(grpo_advantages(seq_scores, G, scale_by_std=a.scale_by_std))
    if a.estimator == "rloo":
        return Advantages(rloo_advantages(seq_scores, G))
    if a.estimator == "remax":
        assert greedy_scores is not None
        adv = remax_advantages(seq_scores, greedy_scores[roll.group])
        return Advantages(masked_whiten(adv, torch.ones_like(adv)) if a.whiten_advantages else adv)
    if a.estimator == "fdpg":
        seq_old, seq_ref = masked_sum(old, mask, dim=-1), masked_sum(ref, mask, dim=-1)
        pseudo = fdpg_pseudo_rewards(seq_old, seq_ref, scores, max(beta, 1e-6), a.fdpg_divergence)
        return Advantages(pseudo)
    raise ConfigError(f"unknown estimator {a.estimator!r}")


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _load_reference(cfg: RLConfig, policy: nn.Module) -> nn.Module | None:
    """A frozen reference copy, or None when the LoRA policy's base (adapter off) serves."""
    if cfg.reference is None and is_peft(policy):
        return None
    path = cfg.reference or cfg.model.path
    ref, _ = load_causal_lm(
        ModelConfig(
            path=path, dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code
        ),
        for_training=False,
    )
    disable_dropout(ref)
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref.eval()


def _load_critic(path: str, cfg: RLConfig) -> nn.Module:
    from alignkit.models.heads import load_scalar_model

    critic, _ = load_scalar_model(
        ModelConfig(path=path, dtype=cfg.model.dtype), kind="value", for_training=True
    )
    return critic


def run_rl(cfg: RLConfig) -> Path:
    timer = Timer()
    set_seed(cfg.train.seed)
    dist = Dist.create()
    out = prepare_run_dir(cfg.train.output_dir, cfg, dist.is_main)
    a, ro = cfg.algo, cfg.rollout
    if not cfg.data.path:
        raise ConfigError("data.path is empty; point it at a prompt file")
    records = read_records(cfg.data.path, "prompt", cfg.data.split, cfg.data.limit)
    rows = [{**r.extra} for r in records]
    judge = build_judge(cfg.reward)
    cost_judge = build_cost(cfg)
    gold = OracleJudge(cfg.monitor.world) if cfg.monitor.world else None

    policy, tok = load_causal_lm(cfg.model)
    disable_dropout(policy)  # ρ must be exactly 1 at the first step of each update
    device = dist.device
    reference = _load_reference(cfg, policy)
    if reference is not None:
        reference = reference.to(device)
    critic = cost_critic = None
    if a.estimator == "ppo":
        critic = _load_critic(cfg.critic.path or cfg.reward.model or cfg.model.path, cfg)
        if cost_judge is not None:
            cost_critic = _load_critic(
                cfg.safety.cost_critic or cfg.safety.cost_model or cfg.model.path, cfg
            )

    n_seq = ro.prompts_per_step * ro.num_generations
    _check_layout(cfg, dist.world_size)
    per_update = a.epochs * math.ceil(n_seq / a.minibatch_size)
    total = cfg.train.max_steps or 50
    micro = max(1, min(cfg.train.batch_size, a.minibatch_size))
    trainer = Trainer(
        policy,
        cfg.train,
        total * per_update,
        out,
        dist,
        run_config=cfg.model_dump(mode="json"),
        desc="rl",
    )
    critics: dict[str, Trainer] = {}
    for name, c in (("critic", critic), ("cost_critic", cost_critic)):
        if c is not None:
            ccfg = cfg.train.model_copy(update={"lr": cfg.critic.lr, "report_to": ["jsonl"]})
            critics[name] = Trainer(c, ccfg, total * per_update, out / name, dist, desc=name)
    state = trainer.begin()
    for t in critics.values():
        t.maybe_resume()
    start = int(state.get("iteration", 0))
    beta = float(state.get("kl_coef", a.kl_coef))
    log_lambda = float(state.get("log_lambda", math.log(cfg.safety.lambda_init)))
    cost_window: deque[float] = deque(state.get("cost_window", []), maxlen=cfg.safety.window)
    first_len: float | None = state.get("first_len")
    sampling = SamplingConfig(
        max_new_tokens=ro.max_new_tokens,
        temperature=ro.temperature,
        top_p=ro.top_p,
        top_k=ro.top_k,
        batch_size=ro.generation_batch_size,
        max_prompt_length=ro.max_prompt_length,
    )
    backend = make_backend(
        ro.backend,
        cfg.model.path,
        tok,
        cfg.data.chat_template,
        ro.vllm,
        ro.max_prompt_length + ro.max_new_tokens,
    )
    order: list[int] = []
    last: dict[str, float] = {}
    dist.print(
        f"[rl] {a.estimator}: {total} iterations × {n_seq} sequences, {per_update} optimizer steps each"
    )
    try:
        for it in range(start, total):
            # -- 1. prompts and rollouts --------------------------------------------------
            idx = _prompt_indices(it, ro.prompts_per_step, len(records), cfg.train.seed, order)
            seed = cfg.train.seed * 100_003 + it
            if ro.split_prompts:  # this process's share of the prompts; groups stay whole
                idx, seed = idx[dist.rank :: dist.world_size], seed + 7_919 * dist.rank
            prompts = [records[i].prompt for i in idx]
            recs = [rows[i] for i in idx]
            # Sharded engines (FSDP, ZeRO-3) gather the full weights for the no-grad passes.
            with contextlib.ExitStack() as stack:
                pol = stack.enter_context(dist.gathered(trainer.model))
                crit = {n: stack.enter_context(dist.gathered(t.model)) for n, t in critics.items()}
                backend.update_weights(pol)  # vLLM: push the updated policy (HF: no-op)
                gens = backend.generate(pol, prompts, sampling, ro.num_generations, seed)
                roll = build_rollout(gens, prompts, recs, tok.pad_token_id)
                greedy = None
                if a.estimator == "remax":
                    greedy_sampling = sampling.model_copy(update={"temperature": 0.0})
                    greedy = backend.generate(pol, prompts, greedy_sampling, 1, None)
                # -- 2. old / reference log-probs, values -----------------------------------
                roll.old_logp, roll.entropy = logprobs_of(
                    pol, roll, micro, ro.temperature, device, with_entropy=True
                )
                roll.ref_logp = _reference_logprobs(
                    pol, reference, roll, micro, ro.temperature, device
                )
                values = (
                    values_of(crit["critic"], roll, micro, device) if "critic" in crit else None
                )
                cost_values = (
                    values_of(crit["cost_critic"], roll, micro, device)
                    if "cost_critic" in crit
                    else None
                )
            # -- 3. scores --------------------------------------------------------------------
            scores_raw = torch.tensor(
                judge.score(roll.prompts, roll.texts, roll.records), dtype=torch.float32
            )
            scores = scores_raw.clone()
            if cfg.reward.eos_penalty:
                scores = scores + cfg.reward.eos_penalty * (~roll.finished).float()
            if cfg.reward.clip is not None:
                scores = scores.clamp(-cfg.reward.clip, cfg.reward.clip)
            if cfg.reward.normalize:  # statistics of the whole batch, on every process
                full = dist.all_gather(scores) if ro.split_prompts else scores
                scores = (scores - full.mean()) / (full.std() + 1e-6)
            costs = None
            if cost_judge is not None:
                costs = torch.tensor(
                    cost_judge.score(roll.prompts, roll.texts, roll.records), dtype=torch.float32
                )
            greedy_scores = None
            if greedy is not None:
                greedy_texts = [g[0].text for g in greedy]
                greedy_scores = torch.tensor(
                    judge.score(prompts, greedy_texts, recs), dtype=torch.float32
                )
            engine_gap = logprob_mismatch(
                [getattr(g, "logprobs", []) for row in gens for g in row], roll.old_logp, roll.mask
            )
            lam = math.exp(log_lambda)
            adv = advantages(
                cfg, roll, scores, beta, values, greedy_scores, costs, cost_values, lam
            )
            # -- 4. updates -------------------------------------------------------------------
            upd = _update(cfg, trainer, roll, adv, beta, micro, device, it, dist)
            for name, t in critics.items():
                returns = adv.returns if name == "critic" else adv.cost_returns
                old_v = values if name == "critic" else cost_values
                assert returns is not None and old_v is not None
                upd.update(
                    _critic_update(cfg, t, roll, returns, old_v, micro, device, it, name, dist)
                )
            # -- 5. controllers and monitors ---------------------------------------------------
            # Per-sequence statistics of the whole batch (gathered when prompts are split), so
            # β, λ and the logged metrics are the same on every process.
            seq = _sequence_stats(roll, scores_raw, scores, costs)
            if gold is not None:
                seq["gold"] = torch.tensor(gold.score(roll.prompts, roll.texts, roll.records))
            if ro.split_prompts:
                seq = {k: dist.all_gather(v.float()) for k, v in seq.items()}
            kl_mean = float(seq["kl"].mean())
            if a.kl_target is not None:
                beta = adaptive_kl_coef(beta, kl_mean, a.kl_target, a.kl_horizon_k)
            metrics: dict[str, Any] = {
                "iteration": it + 1,
                "sequences": seq["reward"].numel(),
                "reward": float(seq["reward"].mean()),
                "reward_std": float(seq["reward"].std()) if seq["reward"].numel() > 1 else 0.0,
                "kl": kl_mean,
                "kl_coef": beta,
                "length": float(seq["length"].mean()),
                "no_eos": float(seq["no_eos"].mean()),
                "entropy": float(seq["entropy_sum"].sum() / seq["length"].sum().clamp(min=1.0)),
                **engine_gap,
                **upd,
            }
            if ro.num_generations > 1:
                metrics["uniform_groups"] = float(
                    fraction_uniform_groups(seq["score"], ro.num_generations)
                )
            if "cost" in seq:
                cost_window.extend(seq["cost"].tolist())
                mean_cost = sum(cost_window) / len(cost_window)
                if it >= cfg.safety.delay:
                    log_lambda = lagrange_update(
                        log_lambda,
                        mean_cost,
                        cfg.safety.threshold,
                        cfg.safety.lambda_lr,
                        cfg.safety.lambda_max,
                    )
                metrics.update(
                    cost=float(seq["cost"].mean()),
                    cost_window=mean_cost,
                    **{"lambda": math.exp(log_lambda)},
                )
            if "gold" in seq:
                metrics["gold_reward"] = float(seq["gold"].mean())
            first_len = first_len if first_len is not None else metrics["length"]
            _warn(cfg, metrics, first_len, dist)
            trainer.log(metrics)
            last = metrics
            if (
                dist.is_main
                and cfg.train.progress
                and ((it + 1) % max(1, total // 10) == 0 or it + 1 == total)
            ):
                keys = ("reward", "gold_reward", "kl", "length", "cost", "lambda")
                dist.print(
                    f"[rl] iteration {it + 1}/{total} "
                    + " ".join(f"{k}={metrics[k]:.3g}" for k in keys if k in metrics)
                )
            if cfg.train.save_every and (it + 1) % cfg.train.save_every == 0:
                extra = {
                    "iteration": it + 1,
                    "kl_coef": beta,
                    "log_lambda": log_lambda,
                    "cost_window": list(cost_window),
                    "first_len": first_len,
                }
                trainer.save_checkpoint(extra)
                for t in critics.values():
                    t.save_checkpoint()
    finally:
        trainer.end()
    # Every process joins the saves: under FSDP / ZeRO-3 the weights are gathered from shards.
    dist.save_pretrained(trainer.model, tok, out, cfg.model.lora.merge_on_save)
    for name, t in critics.items():
        _save_critic(cfg, dist, t, name, out / name)
    if dist.is_main:
        write_summary(
            out,
            {
                "recipe": f"rl:{a.estimator}",
                "iterations": total,
                "world_size": dist.world_size,
                "split_prompts": ro.split_prompts,
                "rollout_backend": backend.name,
                "final": last,
                "wall_time_s": round(timer.seconds, 2),
            },
        )
    dist.barrier()
    dist.print(f"[rl] saved {out} ({timer.seconds:.1f}s)")
    return out


def _check_layout(cfg: RLConfig, world: int) -> None:
    """Several processes must each get the same number of sequences per micro-batch and step
    (DeepSpeed ZeRO >= 2 reduces in every backward, so unequal counts would deadlock)."""
    ro, a = cfg.rollout, cfg.algo
    n_seq = ro.prompts_per_step * ro.num_generations
    if world > 1 and (n_seq % world or a.minibatch_size % world):
        raise ConfigError(
            f"{world} processes: rollout.prompts_per_step × rollout.num_generations ({n_seq}) "
            f"and algo.minibatch_size ({a.minibatch_size}) must both be multiples of {world}"
        )
    if ro.split_prompts and ro.prompts_per_step % world:
        raise ConfigError(
            f"rollout.split_prompts with {world} processes: rollout.prompts_per_step "
            f"({ro.prompts_per_step}) must be a multiple of {world} so every process gets "
            "whole groups of the same size"
        )


def _sequence_stats(
    roll: Rollout, scores_raw: torch.Tensor, scores: torch.Tensor, costs: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """One value per sequence for each logged statistic (means are taken after gathering)."""
    assert roll.old_logp is not None and roll.ref_logp is not None
    out = {
        "reward": scores_raw,
        "score": scores,
        "kl": masked_sum(roll.old_logp - roll.ref_logp, roll.mask, dim=-1),
        "length": roll.mask.sum(-1),
        "no_eos": (~roll.finished).float(),
        "entropy_sum": masked_sum(roll.entropy, roll.mask, dim=-1)
        if roll.entropy is not None
        else torch.zeros(roll.size),
    }
    if costs is not None:
        out["cost"] = costs
    return out


def _save_critic(cfg: RLConfig, dist: Dist, trainer: Trainer, name: str, path: Path) -> None:
    """Save a critic as a value-model folder; from sharded engines, the gathered weights are
    loaded into a whole copy on the main process first (a shard cannot save itself)."""
    state = dist.full_state_dict(trainer.model)  # collective; None when the model is whole
    if dist.is_main:
        critic = trainer.unwrapped
        if state is not None:
            init = cfg.critic.path or cfg.reward.model or cfg.model.path
            if name == "cost_critic":
                init = cfg.safety.cost_critic or cfg.safety.cost_model or cfg.model.path
            critic = _load_critic(init, cfg)
            critic.load_state_dict(state)
        critic.save_pretrained(path)
    dist.barrier()


def _prompt_indices(it: int, k: int, n: int, seed: int, cache: list[int]) -> list[int]:
    """Prompts of iteration ``it``: consecutive slices of per-epoch permutations (resumable)."""
    out = []
    for j in range(it * k, it * k + k):
        epoch, pos = divmod(j, n)
        perm = list(range(n))
        random.Random(seed * 7_919 + epoch).shuffle(perm)
        out.append(perm[pos])
    return out


def _reference_logprobs(
    policy: nn.Module,
    reference: nn.Module | None,
    roll: Rollout,
    micro: int,
    temperature: float,
    device: torch.device,
) -> torch.Tensor:
    if reference is not None:
        return logprobs_of(reference, roll, micro, temperature, device)[0]
    with policy.disable_adapter():  # type: ignore[operator]
        return logprobs_of(policy, roll, micro, temperature, device)[0]


def _minibatches(
    n: int, size: int, micro: int, seed: int, rank: int = 0, world: int = 1
) -> list[list[list[int]]]:
    """The optimizer steps of one pass over ``n`` sequences: shuffled minibatches of ``size``
    sequences, each cut into global micro-batches of ``micro × world`` sequences of which this
    process takes the strided shard ``[rank::world]``, exactly as ``Windows`` shards a
    dataset; so ``world`` processes with ``micro`` see what one process sees with
    ``micro × world``, and the shared Trainer's global normaliser makes the update equal."""
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    out = []
    step = micro * world
    for s in range(0, n, size):
        mb = idx[s : s + size]
        out.append([mb[j : j + step][rank::world] for j in range(0, len(mb), step)])
    return out


def _layout(cfg: RLConfig, dist: Dist) -> tuple[int, int, int]:
    """(minibatch size, rank, world) for ``_minibatches`` over this process's sequences.

    Replicated rollouts: every process holds the whole batch and takes its strided shard.
    Split prompts: each process already holds only its share, so it takes all of it in
    minibatches ``world`` times smaller (the same number of optimizer steps everywhere)."""
    if cfg.rollout.split_prompts:
        return cfg.algo.minibatch_size // dist.world_size, 0, 1
    return cfg.algo.minibatch_size, dist.rank, dist.world_size


def _update(
    cfg: RLConfig,
    trainer: Trainer,
    roll: Rollout,
    adv: Advantages,
    beta: float,
    micro: int,
    device: torch.device,
    it: int,
    dist: Dist,
) -> dict[str, float]:
    a = cfg.algo
    kl_in_loss = a.kl_penalty == "loss" and beta > 0
    assert roll.old_logp is not None and roll.ref_logp is not None
    first_ratio_dev: list[float] = []

    def count(ix: list[int]) -> float:
        return float(
            aggregation_normalizer(roll.mask[ix], a.aggregation, cfg.rollout.max_new_tokens)
        )

    def loss_fn(
        model: nn.Module, ix: list[int], normaliser: float
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        sl = torch.tensor(ix)
        logits = model(
            input_ids=roll.input_ids[sl].to(device),
            attention_mask=roll.attention_mask[sl].to(device),
            use_cache=False,
        ).logits
        logp, _ = gather_logprobs(logits, roll.labels[sl].to(device), cfg.rollout.temperature)
        mask = roll.mask[sl].to(device)
        old = roll.old_logp[sl].to(device)  # type: ignore[index]
        out = ppo_policy_loss(logp, old, adv.adv[sl].to(device), mask, a.clip_eps)
        per_token = out.per_token
        if kl_in_loss:
            per_token = per_token + beta * kl_k3(logp, roll.ref_logp[sl].to(device)) * mask  # type: ignore[index]
        loss = aggregate_tokens(
            per_token, mask, a.aggregation, normaliser, cfg.rollout.max_new_tokens
        )
        if not first_ratio_dev:
            dev = (torch.exp(logp.detach() - old) - 1.0).abs() * mask
            first_ratio_dev.append(float(dev.max()))
        share = count(ix) / normaliser
        return loss, {
            "policy_loss": loss.detach(),
            "minibatch_sequences": len(ix),  # summed over processes: each trains its shard
            "clip_fraction": out.clip_fraction * share,
            "approx_kl": out.approx_kl * share,
        }

    sums: dict[str, float] = {}
    steps = 0
    size, rank, world = _layout(cfg, dist)
    for epoch in range(a.epochs):
        seed = cfg.train.seed * 1_000_003 + it * 31 + epoch
        for mb in _minibatches(roll.size, size, micro, seed, rank, world):
            m = trainer.train_step(mb, loss_fn, count)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
    out = {k: v / max(1, steps) for k, v in sums.items()}
    out["ratio_first_max_dev"] = first_ratio_dev[0] if first_ratio_dev else 0.0
    return out


def _critic_update(
    cfg: RLConfig,
    trainer: Trainer,
    roll: Rollout,
    returns: torch.Tensor,
    old_values: torch.Tensor,
    micro: int,
    device: torch.device,
    it: int,
    name: str,
    dist: Dist,
) -> dict[str, float]:
    a = cfg.algo

    def count(ix: list[int]) -> float:
        return float(roll.mask[ix].sum())

    def loss_fn(
        model: nn.Module, ix: list[int], normaliser: float
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        sl = torch.tensor(ix)
        v = model(roll.input_ids[sl].to(device), roll.attention_mask[sl].to(device))[:, :-1]
        mask = roll.mask[sl].to(device)
        out = clipped_value_loss(
            v, old_values[sl].to(device), returns[sl].to(device), mask, a.value_clip
        )
        loss = a.vf_coef * masked_sum(out.per_token, mask) / normaliser
        return loss, {f"{name}/loss": loss.detach() / max(a.vf_coef, 1e-12)}

    sums: dict[str, float] = {}
    steps = 0
    size, rank, world = _layout(cfg, dist)
    for epoch in range(a.epochs):
        seed = cfg.train.seed * 7 + it * 31 + epoch
        for mb in _minibatches(roll.size, size, micro, seed, rank, world):
            m = trainer.train_step(mb, loss_fn, count)
            sums[f"{name}/loss"] = sums.get(f"{name}/loss", 0.0) + m[f"{name}/loss"]
            steps += 1
    return {k: v / max(1, steps) for k, v in sums.items()}


def _warn(cfg: RLConfig, m: dict[str, Any], first_len: float, dist: Dist) -> None:
    """Reward hacking shows up as runaway KL or length first: say so while it runs."""
    if m["kl"] > cfg.monitor.max_kl:
        dist.print(
            f"[rl] warning: KL to the reference is {m['kl']:.2f} > monitor.max_kl={cfg.monitor.max_kl}; raise algo.kl_coef or lower train.lr"
        )
    if first_len > 0 and m["length"] > cfg.monitor.max_length_ratio * first_len:
        dist.print(
            f"[rl] warning: mean response length {m['length']:.1f} grew past {cfg.monitor.max_length_ratio}× its start ({first_len:.1f}): possible length hacking"
        )
    if m.get("no_eos", 0.0) > 0.5:
        dist.print(f"[rl] warning: {100 * m['no_eos']:.0f}% of responses never end (no EOS)")


__all__ = ["advantages", "build_judge", "build_rollout", "run_rl"]
