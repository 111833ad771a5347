"""Batched, cached scoring of (prompt, partial response) pairs: what the CBF filter's safety
function h and reward-guided decoding's value V are evaluated through.

Both filters score every candidate continuation x ⊕ t of every row at every step, so the same
text comes back often: the chosen token's continuation is next step's current state, best-of-N
draws share prefixes, greedy rows with equal prompts walk the same path. Scoring the *decoded
text* (not token ids) lets the scorer use its own tokenizer, and caching by text makes a repeat
free. Calls are chunked so one step's candidates for the whole batch go through the model in a
few forwards rather than one per candidate.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from alignkit.data.records import Text

PrefixFn = Callable[[Sequence[Text], Sequence[str]], Sequence[float]]
"""A batched scorer: ``fn(prompts, responses) -> one float per pair``."""


def prompt_key(prompt: Text) -> str:
    """A hashable identity of a prompt (chat-message lists are serialised canonically)."""
    if isinstance(prompt, str):
        return prompt
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


class CachedPrefixScorer:
    """Evaluate ``fn`` on (prompt, text) pairs in chunks of ``batch_size``, caching by text.

    ``calls`` counts pairs actually sent to ``fn`` and ``hits`` the pairs answered from the
    cache, so a run can report how much the cache saved. The cache is cleared whole when it
    passes ``max_entries`` (a bound on memory for a long-running server), never partially, so a
    value is never stale: ``fn`` is assumed deterministic.
    """

    def __init__(self, fn: PrefixFn, batch_size: int = 256, max_entries: int = 500_000) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.fn = fn
        self.batch_size = batch_size
        self.max_entries = max_entries
        self._cache: dict[tuple[str, str], float] = {}
        self.calls = 0
        self.hits = 0

    def __call__(self, prompts: Sequence[Text], texts: Sequence[str]) -> list[float]:
        if len(prompts) != len(texts):
            raise ValueError(f"{len(prompts)} prompts but {len(texts)} texts")
        keys = [(prompt_key(p), t) for p, t in zip(prompts, texts, strict=True)]
        missing: dict[tuple[str, str], int] = {}
        for i, k in enumerate(keys):
            if k not in self._cache and k not in missing:
                missing[k] = i
        self.hits += len(keys) - len(missing)
        if len(self._cache) + len(missing) > self.max_entries:
            self._cache.clear()
        todo = list(missing.items())
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            values = list(self.fn([prompts[i] for _, i in chunk], [texts[i] for _, i in chunk]))
            if len(values) != len(chunk):
                raise ValueError(
                    f"the scoring function returned {len(values)} values for {len(chunk)} texts"
                )
            self.calls += len(chunk)
            for (k, _), v in zip(chunk, values, strict=True):
                self._cache[k] = float(v)
        return [self._cache[k] for k in keys]

    def clear(self) -> None:
        self._cache.clear()


def prompt_text(prompt: Text) -> str:
    """The text of a prompt: the string, or its messages' contents one per line."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in prompt)


def last_user_text(prompt: Text) -> str:
    """The question being asked: the string, or the last user message's content."""
    if isinstance(prompt, str):
        return prompt
    for m in reversed(prompt):
        if m["role"] == "user":
            return m["content"]
    return prompt_text(prompt)


def as_cached(fn: PrefixFn | CachedPrefixScorer, batch_size: int = 256) -> CachedPrefixScorer:
    """Wrap a plain scorer in a cache (a cached one is returned as is)."""
    return fn if isinstance(fn, CachedPrefixScorer) else CachedPrefixScorer(fn, batch_size)
