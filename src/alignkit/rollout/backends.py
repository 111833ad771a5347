"""Where online RL's rollouts come from: transformers ``generate`` (default) or a vLLM engine.

Both return the same :class:`~alignkit.rollout.generate.Generation` rows, built from the same
chat formatting, so the training loop does not know which one sampled. The trainer always
recomputes the log-probs it trains on; a backend that reports its own sampling log-probs
(vLLM) lets the loop log how far the two disagree (:func:`logprob_mismatch`), which is the
first thing to look at when an engine's kernels or stale weights bias the update.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from alignkit.data.records import Text
from alignkit.rollout.generate import Generation, SamplingConfig, generate

log = logging.getLogger("alignkit")


class RolloutBackend(Protocol):
    name: str

    def update_weights(self, policy: nn.Module) -> None:
        """Make the next ``generate`` sample from ``policy``'s current weights."""

    def generate(
        self,
        policy: nn.Module,
        prompts: Sequence[Text],
        sampling: SamplingConfig,
        num_samples: int,
        seed: int | None,
    ) -> list[list[Generation]]:
        """``num_samples`` completions per prompt: result[i][j] is sample j of prompt i."""


class HFBackend:
    """transformers ``generate`` on the policy module itself: always current, no copy."""

    name = "hf"

    def __init__(self, tokenizer: Any, chat_template: str) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template

    def update_weights(self, policy: nn.Module) -> None:
        return None  # it samples from the live module

    def generate(
        self,
        policy: nn.Module,
        prompts: Sequence[Text],
        sampling: SamplingConfig,
        num_samples: int,
        seed: int | None,
    ) -> list[list[Generation]]:
        return generate(
            policy, self.tokenizer, prompts, sampling, num_samples, self.chat_template, seed=seed
        )


def make_backend(
    name: str, model_path: str, tokenizer: Any, chat_template: str, settings: Any, max_len: int
) -> RolloutBackend:
    """The backend ``rollout.backend`` asks for; vLLM falls back to HF (with a warning) where
    it cannot run, so a config written for a GPU cluster still runs on a laptop."""
    if name == "vllm":
        from alignkit.rollout.vllm_backend import VLLMBackend, vllm_unavailable_reason

        reason = vllm_unavailable_reason()
        if reason is None:
            return VLLMBackend.create(model_path, tokenizer, chat_template, settings, max_len)
        log.warning("rollout.backend=vllm: %s; falling back to transformers generate", reason)
    return HFBackend(tokenizer, chat_template)


def logprob_mismatch(
    engine: Sequence[Sequence[float]], trainer: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    """How far the engine's sampling log-probs are from the trainer's recomputed ones.

    ``engine[i]`` holds the log-probs of sequence i's sampled tokens in order; ``trainer`` and
    ``mask`` are the rollout's shifted ``[N, W-1]`` grids, whose masked entries are exactly
    those tokens. Returns the mean and max |Δ log p| per token and the mean sequence-level
    k1 = Σ (log p_engine − log p_trainer): a sampler/trainer mismatch biases the ratio ρ.
    """
    diffs, seq = [], []
    for i, lp in enumerate(engine):
        pos = mask[i].nonzero().flatten()
        n = min(len(lp), int(pos.numel()))
        if n == 0:
            continue
        d = torch.tensor(lp[:n], dtype=torch.float64) - trainer[i, pos[:n]].double()
        diffs.append(d.abs())
        seq.append(float(d.sum()))
    if not diffs:
        return {}
    flat = torch.cat(diffs)
    return {
        "rollout/logprob_diff_mean": float(flat.mean()),
        "rollout/logprob_diff_max": float(flat.max()),
        "rollout/seq_k1_engine_vs_trainer": sum(seq) / len(seq),
    }


__all__ = ["HFBackend", "RolloutBackend", "logprob_mismatch", "make_backend"]
