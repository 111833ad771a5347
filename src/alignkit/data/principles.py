"""Principles files, seed questions, question deduplication and answer filters.

Principle-driven self-alignment (Sun et al. 2023; ALGORITHMS.md section 8) starts from a small
amount of human writing: a list of principles, a few exemplars whose answers first name the
principles that apply ("internal thoughts"), and question types with seed questions. This
module reads that writing and holds the pure text functions the recipe uses between stages:
near-duplicate removal of generated questions, splitting a principled answer into thoughts and
answer, and the checks that keep principle text and thoughts out of the engraving data.

The file format (documented in docs/self_align.md) is YAML::

    system_prompt: "Principles:\\n{principles}"   # optional; {principles} = the numbered list
    thoughts_prefix: "Thoughts:"                   # optional (default shown)
    answer_prefix: "Answer:"                       # optional (default shown)
    principles:    [{name, text}, ...]
    exemplars:     [{question, thoughts, answer, question_type?}, ...]
    question_types: [{name, description, seeds: [question, ...]}, ...]

It also reads the sandbox world's ``principles.yaml`` unchanged: there an exemplar's question is
``prompt``, a question type's name is ``category``, and seeds come from a separate JSONL file.
Everything here is plain Python (no torch), so it is unit-tested in milliseconds.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from alignkit.data.readers import DataError, read_jsonl_dicts

DEFAULT_THOUGHTS_PREFIX = "Thoughts:"
DEFAULT_ANSWER_PREFIX = "Answer:"
PRINCIPLES_PLACEHOLDER = "{principles}"

_TOP_KEYS = {
    "version",
    "system_prompt",
    "thoughts_prefix",
    "answer_prefix",
    "principles",
    "exemplars",
    "question_types",
}
_PRINCIPLE_KEYS = {"id", "name", "text"}
_EXEMPLAR_KEYS = {
    "question",
    "prompt",
    "thoughts",
    "internal_thoughts",
    "answer",
    "principled_answer",
    "question_type",
    "category",
}
_TYPE_KEYS = {"name", "category", "description", "seeds", "seed_questions"}


@dataclass(frozen=True)
class Principle:
    name: str
    text: str


@dataclass(frozen=True)
class Exemplar:
    question: str
    thoughts: str
    answer: str
    question_type: str | None = None


@dataclass(frozen=True)
class QuestionType:
    name: str
    description: str
    seeds: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrincipleSet:
    """Everything the principle-driven prompt is built from, after validation."""

    principles: tuple[Principle, ...]
    exemplars: tuple[Exemplar, ...]
    question_types: tuple[QuestionType, ...]
    system_prompt: str
    thoughts_prefix: str = DEFAULT_THOUGHTS_PREFIX
    answer_prefix: str = DEFAULT_ANSWER_PREFIX
    source: str = ""

    def principled_answer(self, ex: Exemplar) -> str:
        """An exemplar's answer as the model should write it: thoughts first, then the answer."""
        return f"{self.thoughts_prefix} {ex.thoughts}\n{self.answer_prefix} {ex.answer}"

    def split_answer(self, text: str) -> tuple[str | None, str]:
        """(thoughts, answer) of a generated principled answer; (None, text) without thoughts.

        Lenient about layout (small models drop the newline), strict about the order: thoughts
        must open the text. Thoughts with no answer marker give an empty answer, which the
        filters reject, rather than passing the thoughts off as an answer.
        """
        s = text.strip()
        if not s.startswith(self.thoughts_prefix):
            return None, s
        rest = s[len(self.thoughts_prefix) :]
        at = rest.find(self.answer_prefix)
        if at < 0:
            return rest.strip(), ""
        return rest[:at].strip(), rest[at + len(self.answer_prefix) :].strip()

    def type_named(self, name: str) -> QuestionType | None:
        return next((t for t in self.question_types if t.name == name), None)

    def with_seeds(self, seeds: Iterable[tuple[str, str | None]]) -> PrincipleSet:
        """Add seed questions ``(question, type)`` to the question types.

        A seed's type may name a type (``fact``) or repeat its description (the sandbox seed
        file does both); an unknown type becomes a new question type, so a seed file alone can
        define them. Seeds without a type go to ``general``.
        """
        by_key: dict[str, str] = {}
        for t in self.question_types:
            by_key[t.name] = t.name
            by_key.setdefault(t.description, t.name)
        added: dict[str, list[str]] = defaultdict(list)
        order: list[str] = [t.name for t in self.question_types]
        for question, key in seeds:
            name = by_key.get(key or "general", key or "general")
            if name not in order:
                order.append(name)
            added[name].append(question)
        types = []
        for name in order:
            old = self.type_named(name) or QuestionType(name, name)
            merged = tuple(dict.fromkeys([*old.seeds, *added.get(name, [])]))
            types.append(replace(old, seeds=merged))
        return replace(self, question_types=tuple(types))


def default_principles_path() -> Path:
    """The principles file shipped with alignkit (``alignkit/resources/principles.yaml``)."""
    return Path(str(resources.files("alignkit") / "resources" / "principles.yaml"))


def numbered(principles: Sequence[Principle], sep: str = "\n") -> str:
    return sep.join(f"{i}. {p.text}" for i, p in enumerate(principles, 1))


def load_principles(path: str | Path | None = None) -> PrincipleSet:
    """Read and validate a principles file (``None``: the packaged default set)."""
    p = Path(path) if path else default_principles_path()
    if not p.is_file():
        raise DataError(f"principles file {p} not found")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"{p}: invalid YAML: {e}") from None
    return parse_principles(doc, str(p))


def parse_principles(doc: Any, source: str = "principles") -> PrincipleSet:
    """Validate a parsed principles document; errors name the file, entry and field."""
    if not isinstance(doc, dict):
        raise DataError(f"{source}: the top level must be a mapping with a 'principles' list")
    _only(doc, _TOP_KEYS, source)
    raw = doc.get("principles")
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{source}: 'principles' must be a non-empty list of {{name, text}}")
    principles = []
    for i, item in enumerate(raw):
        where = f"{source}: principles[{i}]"
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a mapping with 'name' and 'text'")
        _only(item, _PRINCIPLE_KEYS, where)
        principles.append(
            Principle(str(item.get("name") or f"principle {i + 1}"), _req(item, "text", where))
        )
    exemplars = []
    for i, item in enumerate(_list(doc, "exemplars", source)):
        where = f"{source}: exemplars[{i}]"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a mapping with question, thoughts and answer")
        _only(item, _EXEMPLAR_KEYS, where)
        exemplars.append(
            Exemplar(
                question=_req(item, ("question", "prompt"), where),
                thoughts=_req(item, ("thoughts", "internal_thoughts"), where),
                answer=_req(item, "answer", where),
                question_type=_opt(item, ("question_type", "category")),
            )
        )
    types = []
    for i, item in enumerate(_list(doc, "question_types", source)):
        where = f"{source}: question_types[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected a mapping with name, description and seeds")
        _only(item, _TYPE_KEYS, where)
        name = _req(item, ("name", "category"), where)
        seeds = item.get("seeds", item.get("seed_questions")) or []
        if not isinstance(seeds, list) or not all(isinstance(s, str) and s.strip() for s in seeds):
            raise DataError(f"{where}: 'seeds' must be a list of non-empty question strings")
        types.append(QuestionType(name, str(item.get("description") or name), tuple(seeds)))
    names = [t.name for t in types]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{source}: question type {dup!r} is defined twice")
    thoughts_prefix = str(doc.get("thoughts_prefix") or DEFAULT_THOUGHTS_PREFIX)
    answer_prefix = str(doc.get("answer_prefix") or DEFAULT_ANSWER_PREFIX)
    if thoughts_prefix == answer_prefix:
        raise DataError(f"{source}: thoughts_prefix and answer_prefix must differ")
    system = doc.get("system_prompt") or "Principles: " + PRINCIPLES_PLACEHOLDER
    if not isinstance(system, str):
        raise DataError(f"{source}: 'system_prompt' must be a string")
    if PRINCIPLES_PLACEHOLDER in system:
        sep = "\n" if "\n" in system else " "
        system = system.replace(PRINCIPLES_PLACEHOLDER, numbered(principles, sep))
    return PrincipleSet(
        tuple(principles),
        tuple(exemplars),
        tuple(types),
        system,
        thoughts_prefix,
        answer_prefix,
        source,
    )


def read_seed_questions(path: str | Path) -> list[tuple[str, str | None]]:
    """``(question, type)`` rows of a seed file (JSONL/JSON/...: ``prompt`` or ``question``,
    and ``category``, ``question_type`` or ``type``; the sandbox's file has both)."""
    out = []
    for i, row in enumerate(read_jsonl_dicts(path), 1):
        q = row.get("prompt", row.get("question", row.get("instruction")))
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"{path}:{i}: a seed needs a non-empty 'prompt' (or 'question') string")
        key = row.get("category", row.get("question_type", row.get("type")))
        out.append((q.strip(), str(key) if key is not None else None))
    if not out:
        raise DataError(f"{path}: no seed questions found")
    return out


def dump_principles(pset: PrincipleSet) -> str:
    """The resolved principles, exemplars and seeds this run used, as YAML (for the record)."""
    doc = {
        "system_prompt": pset.system_prompt,
        "thoughts_prefix": pset.thoughts_prefix,
        "answer_prefix": pset.answer_prefix,
        "principles": [{"name": p.name, "text": p.text} for p in pset.principles],
        "exemplars": [
            {
                "question": e.question,
                "thoughts": e.thoughts,
                "answer": e.answer,
                "question_type": e.question_type,
            }
            for e in pset.exemplars
        ],
        "question_types": [
            {"name": t.name, "description": t.description, "seeds": list(t.seeds)}
            for t in pset.question_types
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)


def _list(doc: dict[str, Any], key: str, source: str) -> list[Any]:
    value = doc.get(key) or []
    if not isinstance(value, list):
        raise DataError(f"{source}: '{key}' must be a list")
    return value


def _only(item: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise DataError(
            f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(allowed))}"
        )


def _req(item: dict[str, Any], keys: str | tuple[str, ...], where: str) -> str:
    keys = (keys,) if isinstance(keys, str) else keys
    value = _opt(item, keys)
    if not value:
        raise DataError(f"{where}: field '{keys[0]}' is missing or empty")
    return value


def _opt(item: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for k in keys:
        v = item.get(k)
        if v is not None and str(v).strip():
            return str(v).strip()
    return None


# ============================================================ question deduplication
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize_text(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed: the exact-duplicate key."""
    return " ".join(text.lower().translate(_PUNCT).split())


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: Sequence[str], b: Sequence[str]) -> float:
    """ROUGE-L F1 of two token lists (longest common subsequence over both lengths)."""
    if not a or not b:
        return 0.0
    lcs = _lcs(a, b)
    return 2.0 * lcs / (len(a) + len(b))


@dataclass
class DedupResult:
    kept: list[int]  # indices into the input, in input order
    exact: int = 0  # dropped: same normalised text as a kept question
    near: int = 0  # dropped: ROUGE-L to a kept question >= threshold


def deduplicate(texts: Sequence[str], threshold: float | None = 0.7) -> DedupResult:
    """Keep each text unless it repeats (normalised) or nearly repeats a text kept before it.

    Near duplicates use ROUGE-L F1 over words with Self-Instruct's threshold (0.7); ``None``
    or a value above 1 keeps exact-duplicate removal only. Candidates are pruned with an
    inverted index: the LCS is at most the multiset overlap of the two word lists, so ROUGE-L
    is computed only where 2·overlap/(m+n) could reach the threshold.
    """
    result = DedupResult(kept=[])
    seen: set[str] = set()
    kept_tokens: list[list[str]] = []
    postings: dict[str, list[int]] = defaultdict(list)  # "word#k" -> kept positions
    for i, t in enumerate(texts):
        key = normalize_text(t)
        if not key or key in seen:
            result.exact += 1
            continue
        toks = key.split()
        occ = _occurrences(toks)
        if threshold is not None and threshold <= 1.0:
            overlap: Counter[int] = Counter()
            for o in occ:
                for j in postings.get(o, ()):
                    overlap[j] += 1
            if any(
                2.0 * ov / (len(toks) + len(kept_tokens[j])) >= threshold
                and rouge_l(toks, kept_tokens[j]) >= threshold
                for j, ov in overlap.items()
            ):
                result.near += 1
                continue
        seen.add(key)
        for o in occ:
            postings[o].append(len(kept_tokens))
        kept_tokens.append(toks)
        result.kept.append(i)
    return result


def _occurrences(tokens: Sequence[str]) -> list[str]:
    """``a b a`` → ``a#0 b#0 a#1``: set intersection of these is the multiset overlap."""
    count: Counter[str] = Counter()
    out = []
    for t in tokens:
        out.append(f"{t}#{count[t]}")
        count[t] += 1
    return out


def rank_exemplars(
    exemplars: Sequence[Exemplar], question: str, question_type: str | None, match_type: bool
) -> list[int]:
    """Exemplar indices, most useful first: same question type (when ``match_type``), then
    word overlap (Jaccard) with the question, then file order.

    When the context only fits a few exemplars (a 256-token sandbox model fits one), the one
    closest to the question shows the principles that are likely to apply to it.
    """
    q = set(normalize_text(question).split())

    def rank(i: int) -> tuple[int, float, int]:
        ex = exemplars[i]
        words = set(normalize_text(ex.question).split())
        jac = len(q & words) / max(1, len(q | words))
        same = match_type and question_type is not None and ex.question_type == question_type
        return (0 if same else 1, -jac, i)

    return sorted(range(len(exemplars)), key=rank)


# ============================================================ parsing generated text
_BULLET = re.compile(
    r"^\s*(?:(?:[-*•]+|\d+\s*[.):]|(?:topic|question)\s*\d*\s*:)\s*)+", re.IGNORECASE
)


def parse_topics(text: str, max_words: int = 8) -> list[str]:
    """Topics from a brainstormed list: one per line, bullets and numbering removed."""
    out = []
    for line in text.splitlines():
        t = _BULLET.sub("", line).strip().strip("\"'").rstrip(".").strip()
        if t and len(t.split()) <= max_words:
            out.append(t)
    return out


def parse_question(text: str) -> str:
    """The first non-empty line of a reply, without bullets or a ``Question:`` label."""
    for line in text.splitlines():
        q = _BULLET.sub("", line).strip().strip("\"'").strip()
        if q:
            return q
    return ""


# ============================================================ answer filters
_PRINCIPLE_REF = re.compile(r"\bprinciples?\b[\s:#]*\d", re.IGNORECASE)


def leaked_principles(text: str, pset: PrincipleSet, ngram: int = 8) -> str | None:
    """Why ``text`` still carries the principle prompt, or None when it is clean.

    Engraving must teach the behaviour, not the scaffolding: an answer that names a principle
    ("principle 3 applies"), keeps a thoughts/answer marker, quotes an exemplar's thoughts, or
    copies a principle (its whole text, or ``ngram`` consecutive words of a longer one) would
    teach the model to recite its prompt.
    """
    for marker in (pset.thoughts_prefix, pset.answer_prefix):
        if marker in text:
            return f"marker {marker!r}"
    if _PRINCIPLE_REF.search(text):
        return "principle reference"
    norm = f" {normalize_text(text)} "
    for p in pset.principles:
        words = normalize_text(p.text).split()
        if not words:
            continue
        grams = (
            [words]
            if len(words) <= ngram
            else [words[i : i + ngram] for i in range(len(words) - ngram + 1)]
        )
        if any(f" {' '.join(g)} " in norm for g in grams):
            return f"principle text ({p.name})"
    for ex in pset.exemplars:
        thought = normalize_text(ex.thoughts)
        if thought and f" {thought} " in norm:
            return "exemplar thoughts"
    return None


def repeated_ngram(text: str, n: int = 3, max_repeats: int = 3) -> bool:
    """True when some word n-gram occurs ``max_repeats`` times or more (a generation loop)."""
    words = normalize_text(text).split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(grams) and max(grams.values()) >= max_repeats


@dataclass(frozen=True)
class AnswerFilter:
    """The checks between principle-driven answering and engraving (see docs/self_align.md)."""

    require_thoughts: bool = True
    drop_unfinished: bool = True
    min_words: int = 1
    max_words: int | None = None
    max_ngram_repeats: int = 3
    leak_ngram: int = 8

    def problems(
        self, pset: PrincipleSet, thoughts: str | None, answer: str, finished: bool = True
    ) -> list[str]:
        """Every reason to drop this answer (empty = keep it)."""
        out = []
        words = len(answer.split())
        if not answer.strip():
            out.append("empty")
        elif words < self.min_words:
            out.append("too_short")
        if self.max_words is not None and words > self.max_words:
            out.append("too_long")
        if self.require_thoughts and thoughts is None:
            out.append("no_thoughts")
        if self.drop_unfinished and not finished:
            out.append("unfinished")
        if self.max_ngram_repeats and repeated_ngram(answer, 3, self.max_ngram_repeats):
            out.append("degenerate")
        leak = leaked_principles(answer, pset, self.leak_ngram)
        if leak:
            out.append(f"leak: {leak}")
        return out


__all__ = [
    "AnswerFilter",
    "DedupResult",
    "Exemplar",
    "Principle",
    "PrincipleSet",
    "QuestionType",
    "deduplicate",
    "default_principles_path",
    "dump_principles",
    "leaked_principles",
    "load_principles",
    "normalize_text",
    "parse_principles",
    "parse_question",
    "parse_topics",
    "read_seed_questions",
    "repeated_ngram",
    "rank_exemplars",
    "rouge_l",
]
