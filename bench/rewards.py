"""The GRPO reward, one function with both frameworks' signatures (no model: scoring must not
dominate the step): answers of about 20 words with vowel-rich text score higher."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _score(text: str) -> float:
    words = text.split()
    vowels = sum(c in "aeiou" for c in text) / max(1, len(text))
    return vowels - abs(len(words) - 20) / 20.0


def alignkit_reward(prompts: Sequence[Any], responses: Sequence[str], records: Any) -> list[float]:
    """alignkit's ``reward.function``: ``fn(prompts, responses, records) -> scores``."""
    return [_score(r) for r in responses]


def trl_reward(prompts: Sequence[Any], completions: Sequence[str], **kwargs: Any) -> list[float]:
    """TRL's reward function: ``fn(prompts, completions, **kwargs) -> scores``."""
    return [_score(c) for c in completions]
