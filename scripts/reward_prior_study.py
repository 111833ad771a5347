"""Would a likelihood prior or an ensemble lift the sandbox reward model to 85 % gold agreement?

The reward model misses the *correctness* categories (arithmetic, facts, formats, lists) even
though the SFT model it starts from states the world's facts correctly. This study scores the
reward model's held-out rankings (its own split) four ways, against the gold rewards stored
with each ranking:

* the reward model alone;
* ℓ, the SFT model's mean log-prob per response token, alone (what the LM "believes");
* r + w·ℓ for a few weights w (a global likelihood prior);
* the best w *per category*: the upper bound of any gate g(h) that decides from the prompt
  how much to trust ℓ, as if the gate knew the category exactly;

given more reward models trained on the same split (``--members``), their z-scored mean
(an ensemble); and given a DPO model trained on the same split (``--implicit``), its implicit
reward log π_dpo(y|x) − log π_sft(y|x) summed over the response. Usage::

    python scripts/reward_prior_study.py --run runs/quickstart [--members rm1 rm2] [--implicit dpo]

Members must hold out the same prompts: train them with ``data.eval_path`` set to the held-out
records (``--write-split DIR`` writes ``train.jsonl`` and ``held.jsonl`` for that).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reward_gold_check import held_out, pair_accuracy  # noqa: E402

from alignkit.config import ModelConfig
from alignkit.data.pairs import collate_groups
from alignkit.models.load import load_causal_lm
from alignkit.models.reference import sequence_logps
from alignkit.models.scorer import RewardScorer

WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


def scores_of(rm: Path, records: list[Any]) -> tuple[RewardScorer, list[list[float]]]:
    scorer = RewardScorer.from_pretrained(rm, device="cpu", batch_size=64)
    return scorer, scorer.score_groups([scorer.group(r.prompt, r.responses) for r in records])


@torch.no_grad()
def logprobs(
    lm: Path, scorer: RewardScorer, records: list[Any]
) -> tuple[list[list[float]], list[list[float]]]:
    """(summed log-prob, token count) of each response under ``lm``, tokenised as the RM
    reads it."""
    model, _ = load_causal_lm(ModelConfig(path=str(lm)), for_training=False)
    model.eval()
    sums, lengths = [], []
    for r in records:
        s, n = sequence_logps(
            model, collate_groups([scorer.group(r.prompt, r.responses)], scorer.pad_id)
        )
        sums.append(s[0].tolist())
        lengths.append(n[0].tolist())
    return sums, lengths


def pairs_of(records: list[Any], scores: list[list[float]]) -> dict[str, Any]:
    items = [
        (r.extra["category"], r.extra["gold_rewards"], s)
        for r, s in zip(records, scores, strict=True)
    ]
    return pair_accuracy(items)


def accuracy(records: list[Any], scores: list[list[float]]) -> dict[str, Any]:
    return {k: v["accuracy"] for k, v in pairs_of(records, scores).items()}


def zscored_mean(members: list[list[list[float]]]) -> list[list[float]]:
    stats = []
    for m in members:
        flat = [x for g in m for x in g]
        stats.append((statistics.mean(flat), statistics.pstdev(flat) or 1.0))
    return [
        [sum((m[g][i] - mu) / sd for m, (mu, sd) in zip(members, stats, strict=True)) / len(members)
         for i in range(len(members[0][g]))]
        for g in range(len(members[0]))
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/quickstart"))
    ap.add_argument("--members", type=Path, nargs="*", default=[])
    ap.add_argument("--implicit", type=Path, default=None)
    ap.add_argument("--write-split", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    rankings = a.run / "world" / "rankings.jsonl"
    records = held_out(a.run / "rm", rankings)
    if a.write_split:
        held = {r.prompt for r in records}
        a.write_split.mkdir(parents=True, exist_ok=True)
        with (
            open(a.write_split / "train.jsonl", "w") as tr,
            open(a.write_split / "held.jsonl", "w") as he,
        ):
            for line in rankings.read_text().splitlines(keepends=True):
                (he if json.loads(line)["prompt"] in held else tr).write(line)
    scorer, rm = scores_of(a.run / "rm", records)
    sft_sums, sft_lengths = logprobs(a.run / "sft", scorer, records)
    ell = [
        [x / n for x, n in zip(S, N, strict=True)]
        for S, N in zip(sft_sums, sft_lengths, strict=True)
    ]
    rm_pairs = pairs_of(records, rm)
    result: dict[str, Any] = {
        "held_out_rankings": len(records),
        "rm": {k: v["accuracy"] for k, v in rm_pairs.items()},
    }
    result["sft_mean_logprob"] = accuracy(records, ell)
    result["labels"] = accuracy(
        records, [[-r.ranking.index(i) for i in range(len(r.responses))] for r in records]
    )
    prior = {
        w: accuracy(
            records,
            [[s + w * x for s, x in zip(S, L, strict=True)] for S, L in zip(rm, ell, strict=True)],
        )
        for w in WEIGHTS
    }
    result["rm_plus_w_logprob"] = {str(w): v["all"] for w, v in prior.items()}
    cats = [c for c in result["rm"] if c != "all"]
    best = {c: max(WEIGHTS, key=lambda w: prior[w][c]) for c in cats}
    gated = sum(prior[best[c]][c] * rm_pairs[c]["pairs"] for c in cats) / rm_pairs["all"]["pairs"]
    result["gate_upper_bound"] = {
        "all": round(gated, 4),
        "by_category": {c: {"w": best[c], "accuracy": prior[best[c]][c]} for c in cats},
    }
    if a.members:
        members = [rm] + [scores_of(m, records)[1] for m in a.members]
        result["members"] = [accuracy(records, m)["all"] for m in members]
        result["ensemble_zscored_mean"] = accuracy(records, zscored_mean(members))["all"]
    if a.implicit:
        pol, _ = logprobs(a.implicit, scorer, records)
        implicit = [
            [p - q for p, q in zip(P, Q, strict=True)] for P, Q in zip(pol, sft_sums, strict=True)
        ]
        result["dpo_implicit_reward"] = accuracy(records, implicit)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
