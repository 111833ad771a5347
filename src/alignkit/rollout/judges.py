"""Judges: whatever scores sampled responses so that online methods can rank them.

Iterative / online DPO samples two responses per prompt and needs to know which is better. A
judge is anything with ``score(prompts, responses, records) -> list[float]`` (higher is
better): a trained reward model, the sandbox's gold oracle, or a plain Python function. The
``records`` argument carries each prompt's extra fields (a sandbox prompt's category and
gold answer, a user's metadata), because a rule-based judge needs them and a reward model
ignores them.

The reward-model and oracle modules are imported only when such a judge is built, so this
module works (and its protocol can be used) before either of them exists in a checkout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from alignkit.config import ConfigError
from alignkit.data.records import Text, response_text

Record = dict[str, Any]


@runtime_checkable
class Judge(Protocol):
    """Scores responses; higher is better. One score per (prompt, response, record) triple."""

    def score(
        self, prompts: Sequence[Text], responses: Sequence[str], records: Sequence[Record]
    ) -> list[float]: ...


class FunctionJudge:
    """A plain function ``fn(prompts, responses, records) -> scores`` as a judge."""

    def __init__(
        self, fn: Callable[[Sequence[Text], Sequence[str], Sequence[Record]], Sequence[float]]
    ) -> None:
        self.fn = fn

    def score(
        self, prompts: Sequence[Text], responses: Sequence[str], records: Sequence[Record]
    ) -> list[float]:
        return [float(s) for s in self.fn(prompts, responses, records)]


class OracleJudge:
    """The sandbox gold oracle (:class:`alignkit.sandbox.oracle.GoldOracle`) as a judge.

    The oracle judges a response against the prompt's record (its category, gold answer,
    word budget), so records must be rows of a sandbox prompt file, with their fields kept.
    """

    def __init__(self, world_dir: str | Path) -> None:
        from alignkit.sandbox.oracle import GoldOracle

        self.world_dir = Path(world_dir)
        self.oracle = GoldOracle.from_dir(world_dir)

    def score(
        self, prompts: Sequence[Text], responses: Sequence[str], records: Sequence[Record]
    ) -> list[float]:
        rows = []
        for p, rec in zip(prompts, records, strict=True):
            if "category" not in rec:
                raise ConfigError(
                    "the sandbox oracle judges sandbox prompts only, but a prompt record has no "
                    "'category' field; sample from a sandbox prompt file (e.g. "
                    f"{self.world_dir}/rl_prompts.jsonl), or judge with a reward model"
                )
            rows.append({"prompt": p, **rec})
        return self.oracle.rewards(rows, [response_text(r) for r in responses])


class RewardModelJudge:
    """A trained alignkit reward model (``RewardScorer``) as a judge; records are ignored."""

    def __init__(self, path: str | Path) -> None:
        scorer_cls = _reward_scorer_class()
        self.path = Path(path)
        self.scorer = scorer_cls.from_pretrained(str(path))

    def score(
        self, prompts: Sequence[Text], responses: Sequence[str], records: Sequence[Record]
    ) -> list[float]:
        return [float(s) for s in self.scorer.score(list(prompts), list(responses))]


def _reward_scorer_class() -> Any:
    """``RewardScorer`` from the reward-model module (imported lazily: it may be absent)."""
    for module in ("alignkit.models.scorer", "alignkit.models.heads", "alignkit.recipes.reward"):
        try:
            mod = __import__(module, fromlist=["RewardScorer"])
        except ImportError:
            continue
        if hasattr(mod, "RewardScorer"):
            return mod.RewardScorer
    raise ConfigError(
        "judging with a reward model needs alignkit's reward-model module "
        "(alignkit.models.scorer.RewardScorer), which this installation does not have; "
        "use a sandbox world folder as judge, or pass a Judge object from Python"
    )


def load_judge(spec: str) -> Judge:
    """A judge from a config string: a sandbox world folder (has ``world.json``) → the gold
    oracle; a reward-model folder (has ``config.json``) → the reward model."""
    p = Path(spec)
    if (p / "world.json").is_file():
        return OracleJudge(p)
    if (p / "config.json").is_file():
        return RewardModelJudge(p)
    raise ConfigError(
        f"judge={spec!r}: not a sandbox world folder (no world.json) nor a reward-model folder "
        "(no config.json); point it at e.g. runs/sandbox/world or a trained reward model"
    )


__all__ = [
    "FunctionJudge",
    "Judge",
    "OracleJudge",
    "RewardModelJudge",
    "load_judge",
]
