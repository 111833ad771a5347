"""Retrieval-augmented generation: ground answers in a JSONL knowledge base.

A small model states facts it half remembers and invents facts about names it has never seen.
Putting the relevant passages in the prompt, with an instruction to answer from them and to
say so when they do not hold the answer, turns recall into reading (fact accuracy rises) and
gives the model a reason to abstain (hallucination falls). It cuts hallucination, not harm:
retrieval does nothing for a harmful request (ALGORITHMS.md §10).

Retrievers: BM25 through ``bm25s`` (a maintained, numpy-only implementation of Lucene's
BM25), and an optional dense retriever that embeds text with a causal LM's mean-pooled last
hidden states (no separate embedding model needed; weaker than a trained embedder).
Knowledge-base rows are ``{"id", "title", "text"}``; the title is indexed with the text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from pydantic import Field

from alignkit.config import Section
from alignkit.data.readers import DataError
from alignkit.data.records import Text
from alignkit.decoding.prefix import last_user_text

DEFAULT_INSTRUCTION = (
    "Answer the question using only the passages below. If they do not contain the answer, "
    "say that you don't know."
)
DEFAULT_TEMPLATE = "{instruction}\n\n{passages}\n\nQuestion: {question}"


class RAGConfig(Section):
    k: int = Field(3, ge=1, description="Passages retrieved per prompt.")
    retriever: Literal["bm25", "dense"] = Field(
        "bm25",
        description="bm25 (lexical, bm25s) or dense (the policy's mean-pooled hidden states).",
    )
    min_score: float = Field(
        0.0, description="Drop passages scoring at or below this (BM25 0 = no shared word)."
    )
    instruction: str = Field(
        DEFAULT_INSTRUCTION, description="Instruction put before the passages."
    )
    template: str = Field(
        DEFAULT_TEMPLATE,
        description="User turn with retrieval: {instruction}, {passages} and {question} are filled in.",
    )


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str

    @property
    def indexed(self) -> str:
        return f"{self.title}. {self.text}" if self.title else self.text


@dataclass(frozen=True)
class Retrieved:
    passage: Passage
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.passage.id,
            "title": self.passage.title,
            "text": self.passage.text,
            "score": round(self.score, 6),
        }


class Retriever(Protocol):
    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Retrieved]]: ...


def read_knowledge_base(path: str | Path) -> list[Passage]:
    """Passages of a JSONL knowledge base; a bad row is reported as file:line:field."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"knowledge base {p} not found")
    out: list[Passage] = []
    seen: set[str] = set()
    with p.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{p}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object")
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{where}:text: missing or empty (a passage needs text)")
            pid = str(row.get("id", f"line{line_no}"))
            if pid in seen:
                raise DataError(f"{where}:id: duplicate id {pid!r}")
            seen.add(pid)
            title = row.get("title", "")
            if not isinstance(title, str):
                raise DataError(f"{where}:title: expected a string")
            out.append(Passage(pid, title, text))
    if not out:
        raise DataError(f"{p}: the knowledge base has no passages")
    return out


class BM25Retriever:
    """Lucene BM25 over the passages (bm25s), English stop words removed."""

    def __init__(self, passages: Sequence[Passage], k1: float = 1.5, b: float = 0.75) -> None:
        import bm25s

        self._bm25s = bm25s
        self.passages = list(passages)
        self.index = bm25s.BM25(k1=k1, b=b)
        tokens = bm25s.tokenize(
            [p.indexed for p in self.passages], stopwords="en", show_progress=False
        )
        self.index.index(tokens, show_progress=False)

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Retrieved]]:
        if not queries:
            return []
        k = min(k, len(self.passages))
        tokens = self._bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
        # A query of stop words only has no tokens; bm25s then scores everything 0.
        docs, scores = self.index.retrieve(tokens, k=k, show_progress=False)
        return [
            [Retrieved(self.passages[int(d)], float(s)) for d, s in zip(drow, srow, strict=True)]
            for drow, srow in zip(docs, scores, strict=True)
        ]


class DenseRetriever:
    """Cosine similarity of mean-pooled last hidden states of a causal LM (e.g. the policy)."""

    def __init__(
        self,
        passages: Sequence[Passage],
        model: torch.nn.Module,
        tokenizer: Any,
        batch_size: int = 32,
    ) -> None:
        self.passages = list(passages)
        self.model = model
        self.tok = tokenizer
        self.batch_size = batch_size
        self.matrix = self.embed([p.indexed for p in self.passages])

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised mean of the last hidden layer over each text's tokens ``[N, H]``."""
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            enc = self.tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            hidden = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            last = hidden.hidden_states[-1].float()
            m = mask.unsqueeze(-1).float()
            pooled = (last * m).sum(1) / m.sum(1).clamp(min=1.0)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 1)

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Retrieved]]:
        if not queries:
            return []
        sims = self.embed(queries) @ self.matrix.T
        top = sims.topk(min(k, len(self.passages)), dim=-1)
        return [
            [Retrieved(self.passages[int(i)], float(s)) for i, s in zip(irow, srow, strict=True)]
            for irow, srow in zip(top.indices, top.values, strict=True)
        ]


def format_passages(passages: Sequence[Retrieved]) -> str:
    return "\n".join(
        f"[{n}] {r.passage.title}: {r.passage.text}"
        if r.passage.title
        else f"[{n}] {r.passage.text}"
        for n, r in enumerate(passages, start=1)
    )


def augment_prompt(prompt: Text, passages: Sequence[Retrieved], config: RAGConfig) -> Text:
    """The prompt with the passages and the instruction in its (last) user turn.

    With no passage left after ``min_score`` the instruction still goes in, with a line that
    says nothing was found: the model is asked to abstain exactly when evidence is missing.
    """
    body = format_passages(passages) if passages else "(no relevant passage found)"
    question = last_user_text(prompt)
    content = config.template.format(
        instruction=config.instruction, passages=body, question=question
    )
    if isinstance(prompt, str):
        return content
    msgs = [dict(m) for m in prompt]
    for m in reversed(msgs):
        if m["role"] == "user":
            m["content"] = content
            break
    else:
        msgs.append({"role": "user", "content": content})
    return msgs


class RAG:
    """Retrieve for each prompt and build the grounded prompts."""

    def __init__(self, retriever: Retriever, config: RAGConfig | None = None) -> None:
        self.retriever = retriever
        self.config = config or RAGConfig()

    def __call__(self, prompts: Sequence[Text]) -> tuple[list[Text], list[list[Retrieved]]]:
        found = self.retriever.retrieve([last_user_text(p) for p in prompts], self.config.k)
        kept = [[r for r in rs if r.score > self.config.min_score] for rs in found]
        return [
            augment_prompt(p, rs, self.config) for p, rs in zip(prompts, kept, strict=True)
        ], kept


def build_rag(
    knowledge_base: str | Path,
    config: RAGConfig | None = None,
    model: torch.nn.Module | None = None,
    tokenizer: Any = None,
) -> RAG:
    """A :class:`RAG` over a JSONL knowledge base (the dense retriever needs a model)."""
    config = config or RAGConfig()
    passages = read_knowledge_base(knowledge_base)
    retriever: Retriever
    if config.retriever == "dense":
        if model is None or tokenizer is None:
            raise ValueError("the dense retriever embeds with a model: pass model and tokenizer")
        retriever = DenseRetriever(passages, model, tokenizer)
    else:
        retriever = BM25Retriever(passages)
    return RAG(retriever, config)
