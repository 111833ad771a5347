"""Score (prompt, response) pairs with a saved reward or cost model, or an ensemble of them.

One interface, :class:`Scorer` (``score(prompts, responses) -> list[float]``), is what RL
recipes, best-of-N, evaluation judges and the fitness report call, so a single model, an
ensemble, or a user's own function are interchangeable.

Text is tokenised exactly as during training (the same chat-template policy and the prompt /
response split of :mod:`alignkit.data.pairs`, EOS appended), because a reward model scores the
token sequence it was trained on: rendering the prompt differently at scoring time silently
shifts every score. Empty responses are scored (a policy can emit EOS at once), as the EOS
token alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from alignkit.config import ModelConfig
from alignkit.data.pairs import Group, GroupTokenizer, collate_groups
from alignkit.data.records import Text
from alignkit.losses.reward import EnsembleMode, ensemble_rewards
from alignkit.models.heads import HeadKind, ScalarHeadModel, load_scalar_model, read_meta


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores responses to prompts: one float per (prompt, response)."""

    def score(self, prompts: Sequence[Text], responses: Sequence[Text]) -> list[float]: ...


def default_max_length(model: ScalarHeadModel) -> int:
    """The training max_length if saved, else the model's context length (capped at 4096)."""
    saved = model.meta.get("max_length")
    if isinstance(saved, int) and saved > 0:
        return saved
    cfg = model.config
    ctx = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return int(min(ctx or 1024, 4096))


class RewardScorer:
    """Batched, gradient-free scoring with one :class:`ScalarHeadModel`."""

    def __init__(
        self,
        model: ScalarHeadModel,
        tokenizer: Any,
        chat_template: str | None = None,
        max_length: int | None = None,
        batch_size: int = 16,
        device: torch.device | str | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.chat_template = chat_template or str(model.meta.get("chat_template", "auto"))
        self.max_length = max_length or default_max_length(model)
        self.batch_size = batch_size
        self.device = (
            torch.device(device) if device is not None else next(model.parameters()).device
        )
        self.model.to(self.device)
        self.pad_id = int(tokenizer.pad_token_id)
        prompt_max = model.meta.get("max_prompt_length")
        self.tokens = GroupTokenizer(
            tokenizer,
            self.max_length,
            prompt_max if isinstance(prompt_max, int) else None,
            self.chat_template,
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: torch.device | str | None = None,
        dtype: str = "float32",
        batch_size: int = 16,
        max_length: int | None = None,
        chat_template: str | None = None,
        kind: HeadKind | None = None,
        trust_remote_code: bool = False,
    ) -> RewardScorer:
        """Load a saved reward/cost model folder (or any one-label sequence classifier)."""
        meta = read_meta(path)
        cfg = ModelConfig(path=str(path), dtype=dtype, trust_remote_code=trust_remote_code)  # type: ignore[arg-type]
        model, tok = load_scalar_model(
            cfg, kind=kind or meta.get("head", "reward"), for_training=False
        )
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        assert isinstance(model, ScalarHeadModel)
        return cls(model, tok, chat_template, max_length, batch_size, device)

    @property
    def kind(self) -> str:
        return self.model.kind

    def group(self, prompt: Text, responses: Sequence[Text], where: str = "input") -> Group:
        """Tokenise one prompt with its responses the way training did."""
        g = self.tokens.group(prompt, list(responses), where)
        if g is None:  # only when the prompt alone fills max_length
            raise ValueError(f"{where}: the prompt leaves no room for a response")
        # Identical responses are legitimate at scoring time (best-of-N may sample duplicates);
        # the group tokenizer drops them for training only.
        return g

    def score(self, prompts: Sequence[Text], responses: Sequence[Text]) -> list[float]:
        """One score per (prompt, response); prompts and responses pair up by position."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        groups = [
            self.group(p, [r], f"item {i}")
            for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
        ]
        return [s[0] for s in self.score_groups(groups)]

    @torch.no_grad()
    def score_groups(self, groups: Sequence[Group]) -> list[list[float]]:
        """Scores of every response of every group (rows sorted by length to pad little)."""
        rows = [(gi, ri) for gi, g in enumerate(groups) for ri in range(len(g.responses))]
        length = {
            (gi, ri): len(groups[gi].prompt_ids) + len(groups[gi].responses[ri]) for gi, ri in rows
        }
        rows.sort(key=lambda r: length[r])
        out: list[list[float]] = [[0.0] * len(g.responses) for g in groups]
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            singles = [
                Group(prompt_ids=groups[gi].prompt_ids, responses=[groups[gi].responses[ri]])
                for gi, ri in chunk
            ]
            batch = collate_groups(singles, self.pad_id).batch.to(self.device)
            assert batch.attention_mask is not None
            values = self.model.score(batch.input_ids, batch.attention_mask).tolist()
            for (gi, ri), v in zip(chunk, values, strict=True):
                out[gi][ri] = float(v)
        return out


class RewardEnsemble:
    """Several scorers combined per item: mean, min, or mean − k·std (ALGORITHMS.md §2).

    ``min`` and ``mean_minus_std`` are conservative: a policy can exploit one reward model's
    errors, but rarely every member's at once, so penalising disagreement slows reward
    over-optimisation. Members should share a scale (train them alike, or centre them).
    """

    def __init__(
        self, members: Sequence[Scorer], mode: EnsembleMode = "mean", std_coef: float = 1.0
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if mode not in ("mean", "min", "mean_minus_std"):
            raise ValueError(f"mode must be 'mean', 'min' or 'mean_minus_std', got {mode!r}")
        self.members = list(members)
        self.mode: EnsembleMode = mode
        self.std_coef = std_coef

    @classmethod
    def from_pretrained(
        cls,
        paths: Sequence[str | Path],
        mode: EnsembleMode = "mean",
        std_coef: float = 1.0,
        **kwargs: Any,
    ) -> RewardEnsemble:
        return cls([RewardScorer.from_pretrained(p, **kwargs) for p in paths], mode, std_coef)

    def member_scores(self, prompts: Sequence[Text], responses: Sequence[Text]) -> torch.Tensor:
        """``[M, N]`` scores, one row per member."""
        return torch.tensor(
            [m.score(prompts, responses) for m in self.members], dtype=torch.float64
        )

    def score(self, prompts: Sequence[Text], responses: Sequence[Text]) -> list[float]:
        scores = self.member_scores(prompts, responses)
        return [float(x) for x in ensemble_rewards(scores, self.mode, self.std_coef)]
