"""Typed records: the in-memory form of every dataset alignkit reads or writes.

A prompt or a response is either a plain string or a list of chat messages
(``[{"role": ..., "content": ...}]``), exactly as in TRL's dataset conventions. Readers
(``data/readers.py``) turn file rows into these records and report malformed rows with
file, line and field; everything downstream can rely on the invariants checked here.

Records are frozen dataclasses rather than pydantic models: datasets hold tens of thousands
of them and construction cost matters; validation happens once, in the readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

Message = dict[str, str]
"""One chat message: ``{"role": "user" | "assistant" | "system", "content": str}``."""

Text = Union[str, list[Message]]
"""A prompt or completion: a plain string or a list of chat messages."""

ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class LMText:
    """Language-modeling text (pretraining): loss on every token."""

    text: str


@dataclass(frozen=True)
class Demonstration:
    """An SFT example: a prompt and its ideal completion, or a whole conversation.

    Exactly one of (``messages``) or (``prompt`` and ``completion``) is set. With ``messages``
    the loss covers every assistant turn; with prompt/completion only the completion.
    """

    prompt: Text | None = None
    completion: Text | None = None
    messages: list[Message] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """A pairwise preference: ``chosen`` is better than ``rejected`` for ``prompt``.

    Safety fields (all optional) follow DESIGN.md: ``chosen_safe`` / ``rejected_safe`` are the
    per-response safety labels, ``safer`` is 0 when ``chosen`` is the safer one, 1 when
    ``rejected`` is. ``margin`` is an optional preference strength (Llama-2 style margin loss).
    """

    prompt: Text
    chosen: Text
    rejected: Text
    margin: float | None = None
    chosen_safe: bool | None = None
    rejected_safe: bool | None = None
    safer: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ranking:
    """K responses to one prompt ranked best first: ``ranking[0]`` indexes the best response."""

    prompt: Text
    responses: list[Text]
    ranking: list[int]
    annotator: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def pairs(self) -> list[tuple[int, int]]:
        """All C(K, 2) (winner, loser) index pairs implied by the ranking."""
        order = self.ranking
        return [(order[i], order[j]) for i in range(len(order)) for j in range(i + 1, len(order))]

    def to_comparisons(self) -> list[Comparison]:
        return [
            Comparison(
                prompt=self.prompt,
                chosen=self.responses[w],
                rejected=self.responses[l_],
                extra=dict(self.extra),
            )
            for w, l_ in self.pairs()
        ]


@dataclass(frozen=True)
class Unpaired:
    """A single response labelled desirable (``label=True``) or undesirable (KTO data)."""

    prompt: Text
    completion: Text
    label: bool
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptOnly:
    """A prompt for RL rollouts or evaluation; ``extra`` fields are passed to reward functions."""

    prompt: Text
    extra: dict[str, Any] = field(default_factory=dict)


Record = Union[LMText, Demonstration, Comparison, Ranking, Unpaired, PromptOnly]


def is_messages(value: Any) -> bool:
    """True when ``value`` looks like a list of chat messages."""
    return (
        isinstance(value, list)
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
        and len(value) > 0
    )


def as_text(value: Text) -> str:
    """Plain-text view of a string or message list (for judges and logs, not for training)."""
    if isinstance(value, str):
        return value
    return "\n".join(f"{m['role']}: {m['content']}" for m in value)


def last_user_content(prompt: Text) -> str:
    """The text of the last user turn of a prompt (the whole string for plain prompts)."""
    if isinstance(prompt, str):
        return prompt
    for m in reversed(prompt):
        if m["role"] == "user":
            return m["content"]
    return prompt[-1]["content"]


def response_text(response: Text) -> str:
    """The text of a response: the string itself or the concatenated assistant contents."""
    if isinstance(response, str):
        return response
    return "".join(m["content"] for m in response if m["role"] == "assistant")
