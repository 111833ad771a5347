"""Tokenisation with chat templates and loss masks.

The one rule that makes masks right for every model: render the conversation with the model's
own chat template twice, once up to the generation prompt of an assistant turn and once
including that turn; the tokens in between are the assistant's, and only they carry loss. This
needs no per-model marker strings (which silently break when a template changes) and it checks
the template's prefix property instead of assuming it.

Every example is checked: the loss mask must not be empty and every answer must end with EOS
(otherwise the model never learns to stop). Records that are too long follow the declared
truncation policy and are counted in :class:`TokenizeStats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.data.readers import DataError
from alignkit.data.records import Demonstration, LMText, Message, Text

IGNORE_INDEX = -100

# Used for chat data when the tokenizer has no template of its own (documented in README).
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}### System:\n{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### User:\n{{ m['content'] }}\n\n"
    "{% else %}### Assistant:\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


@dataclass
class Example:
    """A tokenised example: ids and a parallel 0/1 loss mask (1 = the token is trained on)."""

    input_ids: list[int]
    loss_mask: list[int]
    prompt_len: int = 0  # tokens before the first trained token (for generation/eval)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_trained(self) -> int:
        return sum(self.loss_mask)


@dataclass
class TokenizeStats:
    """What happened to the records; printed and written into the run summary."""

    records: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_prompt_too_long: int = 0
    eos_appended: int = 0
    lengths: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "lengths"}
        d.update(length_percentiles(self.lengths))
        return d


def length_percentiles(lengths: Sequence[int]) -> dict[str, float]:
    if not lengths:
        return {}
    s = sorted(lengths)

    def pct(q: float) -> float:
        return float(s[min(len(s) - 1, int(round(q * (len(s) - 1))))])

    return {"len_p50": pct(0.5), "len_p90": pct(0.9), "len_p99": pct(0.99), "len_max": float(s[-1])}


class ChatFormatter:
    """Renders prompts/conversations to token ids with a chosen template policy.

    ``policy`` is the config's ``data.chat_template``: ``auto``, ``none``, ``default``, a Jinja
    string, or a path to a ``.jinja`` file.
    """

    def __init__(self, tokenizer: Any, policy: str = "auto") -> None:
        self.tok = tokenizer
        self.template: str | None
        if policy == "none":
            self.template = None
        elif policy == "auto":
            self.template = getattr(tokenizer, "chat_template", None) or None
            self._auto_default = self.template is None
        elif policy == "default":
            self.template = DEFAULT_CHAT_TEMPLATE
        elif policy.endswith(".jinja") and Path(policy).is_file():
            self.template = Path(policy).read_text()
        elif "{%" in policy or "{{" in policy:
            self.template = policy
        else:
            raise DataError(
                f"data.chat_template: {policy!r} is not auto, none, default, a Jinja template, "
                "or an existing .jinja file"
            )
        self.policy = policy
        if tokenizer.eos_token_id is None:
            raise DataError(
                "the tokenizer has no EOS token; set tokenizer.eos_token (e.g. in "
                "tokenizer_config.json) so answers can end"
            )
        self.eos_id: int = tokenizer.eos_token_id

    # -- rendering -------------------------------------------------------------------------

    def _template_for_chat(self) -> str:
        if self.template is not None:
            return self.template
        if self.policy == "auto":
            return DEFAULT_CHAT_TEMPLATE
        raise DataError(
            "data.chat_template is 'none' but the data holds chat messages; use 'auto' or 'default'"
        )

    def render_ids(self, messages: list[Message], add_generation_prompt: bool) -> list[int]:
        out = self.tok.apply_chat_template(
            messages,
            chat_template=self._template_for_chat(),
            add_generation_prompt=add_generation_prompt,
            tokenize=True,
            return_dict=False,
        )
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)

    def uses_chat(self, prompt: Text) -> bool:
        """Plain-string prompts use the template when one is active (policy auto/explicit)."""
        if isinstance(prompt, list):
            return True
        return self.template is not None

    def prompt_ids(self, prompt: Text) -> list[int]:
        """Token ids of a prompt ready for generation (with the assistant cue when chatting)."""
        if self.uses_chat(prompt):
            return self.render_ids(as_messages(prompt), add_generation_prompt=True)
        ids = self.tok(prompt, add_special_tokens=True)["input_ids"]
        return list(ids)

    def prompt_completion(self, prompt: Text, completion: Text) -> tuple[list[int], int]:
        """(ids of prompt + completion + EOS, length of the prompt part)."""
        if self.uses_chat(prompt):
            msgs = as_messages(prompt)
            p_ids = self.render_ids(msgs, add_generation_prompt=True)
            full = self.render_ids(msgs + completion_messages(completion), False)
            if full[: len(p_ids)] != p_ids:
                raise DataError(
                    "the chat template renders the prompt differently with and without the "
                    "assistant turn, so the answer's tokens cannot be located; use a template "
                    "with a generation prompt (data.chat_template=default) or chat_template=none"
                )
            return full, len(p_ids)
        assert isinstance(completion, str)
        p_ids = list(self.tok(prompt, add_special_tokens=True)["input_ids"])
        c_ids = list(self.tok(completion, add_special_tokens=False)["input_ids"])
        return p_ids + c_ids + [self.eos_id], len(p_ids)

    def conversation(self, messages: list[Message]) -> tuple[list[int], list[int]]:
        """(ids, loss mask) of a whole conversation; every assistant turn is trained on."""
        full = self.render_ids(messages, add_generation_prompt=False)
        mask = [0] * len(full)
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            start = len(self.render_ids(messages[:i], add_generation_prompt=True))
            end_ids = self.render_ids(messages[: i + 1], add_generation_prompt=False)
            if full[: len(end_ids)] != end_ids or start > len(end_ids):
                raise DataError(
                    "the chat template does not render conversations incrementally (each turn "
                    "extending the previous rendering), so assistant masks cannot be computed; "
                    "set data.chat_template=default or provide a template that does"
                )
            for t in range(start, len(end_ids)):
                mask[t] = 1
        return full, mask


def as_messages(prompt: Text) -> list[Message]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def completion_messages(completion: Text) -> list[Message]:
    return (
        [{"role": "assistant", "content": completion}]
        if isinstance(completion, str)
        else list(completion)
    )


def _ensure_eos(ids: list[int], mask: list[int], eos_id: int, stats: TokenizeStats) -> None:
    """Every trained span must end with EOS; templates without one get it appended."""
    last = max((i for i, m in enumerate(mask) if m), default=-1)
    # Only the final answer is appended to; templates that end turns with their own marker
    # (e.g. <|im_end|>) keep it, since that marker is what generation stops on.
    if last >= 0 and ids[last] != eos_id and last == len(ids) - 1:
        ids.append(eos_id)
        mask.append(1)
        stats.eos_appended += 1


def tokenize_demonstration(
    fmt: ChatFormatter,
    record: Demonstration,
    max_length: int,
    truncation: str,
    completion_only: bool,
    stats: TokenizeStats,
    where: str = "",
) -> Example | None:
    """Tokenise one SFT record; None when the truncation policy drops it (counted in stats)."""
    stats.records += 1
    if record.messages is not None:
        ids, mask = fmt.conversation(record.messages)
        prompt_len = next((i for i, m in enumerate(mask) if m), len(ids))
    else:
        assert record.prompt is not None and record.completion is not None
        ids, prompt_len = fmt.prompt_completion(record.prompt, record.completion)
        mask = [0] * prompt_len + [1] * (len(ids) - prompt_len)
    _ensure_eos(ids, mask, fmt.eos_id, stats)
    if sum(mask) == 0:
        raise DataError(
            f"{where}: the assistant/completion mask is empty after rendering the chat template "
            "(the template may not mark assistant turns); check it with `alignkit check-data`"
        )
    if prompt_len >= max_length:
        stats.dropped_prompt_too_long += 1
        return None
    if len(ids) > max_length:
        if truncation == "error":
            raise DataError(
                f"{where}: {len(ids)} tokens > data.max_length={max_length}; raise max_length "
                "or set data.truncation to right or drop"
            )
        if truncation == "drop":
            stats.dropped_too_long += 1
            return None
        ids, mask = ids[:max_length], mask[:max_length]
        stats.truncated += 1
    if not completion_only:
        mask = [1] * len(ids)
    stats.kept += 1
    stats.lengths.append(len(ids))
    return Example(input_ids=ids, loss_mask=mask, prompt_len=prompt_len)


def tokenize_demonstrations(
    tokenizer: Any,
    records: Sequence[Demonstration],
    max_length: int,
    truncation: str = "right",
    chat_template: str = "auto",
    completion_only: bool = True,
    source: str = "data",
) -> tuple[list[Example], TokenizeStats]:
    fmt = ChatFormatter(tokenizer, chat_template)
    stats = TokenizeStats()
    out: list[Example] = []
    for i, rec in enumerate(records):
        ex = tokenize_demonstration(
            fmt,
            rec,
            max_length,
            truncation,
            completion_only,
            stats,
            where=f"{source}: record {i + 1}",
        )
        if ex is not None:
            out.append(ex)
    if not out:
        raise DataError(
            f"{source}: every record was dropped (prompt longer than data.max_length="
            f"{max_length}: {stats.dropped_prompt_too_long}, too long: {stats.dropped_too_long}); "
            "raise data.max_length"
        )
    return out, stats


def tokenize_lm(
    tokenizer: Any, records: Sequence[LMText], max_length: int
) -> tuple[list[Example], TokenizeStats]:
    """Language-modeling text: documents are joined with EOS and cut into max_length chunks
    (the standard pretraining layout: no padding, every token trained)."""
    stats = TokenizeStats(records=len(records))
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id
    stream: list[int] = []
    for rec in records:
        ids = list(tokenizer(rec.text, add_special_tokens=False)["input_ids"])
        if bos is not None:
            stream.append(bos)
        stream.extend(ids)
        # Documents that already end with EOS (chat transcripts do) get no second one.
        if eos is not None and (not ids or ids[-1] != eos):
            stream.append(eos)
    out = [
        Example(
            input_ids=stream[i : i + max_length], loss_mask=[1] * len(stream[i : i + max_length])
        )
        for i in range(0, len(stream), max_length)
        if len(stream[i : i + max_length]) >= 2
    ]
    stats.kept = len(out)
    stats.lengths = [len(e) for e in out]
    return out, stats
