"""Chain of thought: ask the model to reason step by step, then read the final answer out.

A model that writes intermediate results (``4 * 5 = 20. 20 + 7 = 27.``) conditions each step on
text it has already produced instead of doing the whole computation inside one forward pass;
on multi-step arithmetic this is the difference between computing and guessing. It helps only
a model that has seen step-by-step demonstrations (or is large enough to have picked the habit
up in pretraining); a tiny model asked to "think step by step" without such data just copies
the words. The response keeps the reasoning (graders such as the sandbox oracle read the last
``answer is N``); :func:`extract_answer` gives the final answer alone.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from alignkit.config import Section
from alignkit.data.records import Text

DEFAULT_COT_INSTRUCTION = "Think step by step, then give the final answer."

_ANSWER_IS = re.compile(r"answer is:?\s*([^\n]+?)\s*(?:[.!]\s|[.!]?$)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class CoTConfig(Section):
    instruction: str = Field(
        DEFAULT_COT_INSTRUCTION, description="Reasoning instruction added to the prompt."
    )
    placement: Literal["user", "system"] = Field(
        "user",
        description="Append the instruction to the last user turn, or put it in a system turn.",
    )


def cot_prompt(prompt: Text, config: CoTConfig | None = None) -> Text:
    """The prompt with the reasoning instruction (after the question, or as a system turn)."""
    config = config or CoTConfig()
    if config.placement == "user":
        if isinstance(prompt, str):
            return f"{prompt}\n{config.instruction}"
        msgs = [dict(m) for m in prompt]
        for m in reversed(msgs):
            if m["role"] == "user":
                m["content"] = f"{m['content']}\n{config.instruction}"
                return msgs
        return [*msgs, {"role": "user", "content": config.instruction}]
    msgs = (
        [{"role": "user", "content": prompt}]
        if isinstance(prompt, str)
        else [dict(m) for m in prompt]
    )
    if msgs and msgs[0]["role"] == "system":
        msgs[0]["content"] = f"{msgs[0]['content']}\n{config.instruction}"
        return msgs
    return [{"role": "system", "content": config.instruction}, *msgs]


def extract_answer(text: str) -> str | None:
    """The final answer of a reasoned response: what follows the last ``answer is``, else the
    last number, else None. ``4 * 5 = 20. 20 + 7 = 27. The answer is 27.`` → ``27``."""
    found = _ANSWER_IS.findall(text)
    if found:
        return str(found[-1]).strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None
