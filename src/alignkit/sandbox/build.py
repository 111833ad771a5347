"""Build a sandbox world folder: every dataset of the alignment pipeline, from one seed.

``build_world(out_dir, preset, seed)`` writes, in the formats of DESIGN.md "Data" (JSONL with
plain-string prompts: the user text; recipes apply the chat template):

=======================  ===============================================================
kb.jsonl                 ``{"id","title","text"}`` retrieval passages (the truth)
corpus.jsonl             ``{"text"}`` pretraining documents, each ending with ``<|end|>``
tokenizer/               byte-level BPE, transformers folder, with the sandbox chat template
sft.jsonl                ``prompt`` + ``completion`` (curated ideal answers, every category)
sft_helpful.jsonl        the rows of sft.jsonl in HELPFUL_CATEGORIES: a helpful-only
                         demonstration set that leaves the values to preference alignment
rankings.jsonl           ``prompt`` + ``responses`` (K) + ``ranking`` + ``annotator``
preferences.jsonl        ``prompt`` + ``chosen`` + ``rejected`` (best vs each other)
safety.jsonl             pairwise + ``chosen_safe`` / ``rejected_safe`` / ``safer``
unpaired.jsonl           ``prompt`` + ``completion`` + ``label`` (KTO)
rl_prompts.jsonl         ``prompt`` rows with the oracle's fields
eval.jsonl               held-out prompts, balanced per category
principles.yaml          principles, exemplars and question types for self-alignment
self_align_seeds.jsonl   seed prompts with their question type
world.json               the world itself (``GoldOracle.from_dir`` rebuilds the oracle)
manifest.json            files with sha256 and rows, counts, agreement stats, format version
=======================  ===============================================================

Every prompt row carries the oracle's extra fields (``id``, ``category``, ``gold`` ...). The
build is deterministic (same seed and preset, byte-identical files) and atomic: it writes to a
temporary folder beside ``out_dir`` and renames it into place only when everything is written,
so an interrupted build never leaves a half-written folder that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from alignkit.sandbox.annotators import AnnotatorPool, agreement_report
from alignkit.sandbox.corpus import (
    CHAT_TEMPLATE,
    PRINCIPLES,
    QUESTION_TYPES,
    SPECIAL_TOKENS,
    THOUGHTS,
    build_corpus,
    principled_answer,
    principles_prompt,
    train_tokenizer,
)
from alignkit.sandbox.oracle import GoldOracle, OracleScore, words
from alignkit.sandbox.presets import Preset, SandboxError, get_preset
from alignkit.sandbox.responses import (
    ANSWER_PREFIX,
    THOUGHTS_PREFIX,
    ideal_response,
    sample_distinct_responses,
)
from alignkit.sandbox.world import (
    CATEGORIES,
    HELPFUL_CATEGORIES,
    PromptFactory,
    World,
    stable_rng,
)

MANIFEST_FORMAT = "alignkit-sandbox"
MANIFEST_FORMAT_VERSION = 2  # 2: sft_helpful.jsonl
JSONL_FILES = (
    "kb.jsonl",
    "corpus.jsonl",
    "sft.jsonl",
    "sft_helpful.jsonl",
    "rankings.jsonl",
    "preferences.jsonl",
    "safety.jsonl",
    "unpaired.jsonl",
    "rl_prompts.jsonl",
    "eval.jsonl",
    "self_align_seeds.jsonl",
)


def build_world(out_dir: str | Path, preset: str = "tiny", seed: int = 0) -> dict[str, Any]:
    """Build the world folder ``out_dir`` and return a summary (counts, agreement, sizes).

    An existing sandbox world at ``out_dir`` is replaced; any other non-empty folder is left
    alone and reported, so a typo cannot wipe a user's data.
    """
    p = get_preset(preset)
    out = Path(out_dir)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    start = time.perf_counter()
    try:
        summary = _write_world(tmp, p, seed)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["out_dir"] = str(out)
    summary["build_seconds"] = round(time.perf_counter() - start, 2)
    return summary


def load_world(world_dir: str | Path, verify: bool = True) -> World:
    """The World of a built folder; with ``verify`` every file is checked against the manifest."""
    d = Path(world_dir)
    manifest = read_manifest(d)
    if verify:
        for rel, meta in manifest["files"].items():
            path = d / rel
            if not path.is_file():
                raise SandboxError(f"sandbox world {d} is incomplete: {rel} is missing")
            if _sha256(path) != meta["sha256"]:
                raise SandboxError(
                    f"sandbox world {d} is corrupt: {rel} does not match its manifest checksum "
                    "(rebuild it with `alignkit sandbox build`)"
                )
    path = d / "world.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SandboxError(f"sandbox world {d} is corrupt: cannot read world.json ({exc})") from exc
    return World.from_dict(data, str(path))


def read_manifest(world_dir: str | Path) -> dict[str, Any]:
    """The manifest of a world folder, or a SandboxError saying why it is not one."""
    d = Path(world_dir)
    path = d / "manifest.json"
    if not path.is_file():
        raise SandboxError(
            f"{d} is not a sandbox world: manifest.json is missing "
            "(build one with `alignkit sandbox build --out DIR`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SandboxError(
            f"sandbox world {d} is corrupt: manifest.json is unreadable ({exc})"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise SandboxError(f"{d} is not a sandbox world: manifest.json has another format")
    if manifest.get("format_version") != MANIFEST_FORMAT_VERSION:
        raise SandboxError(
            f"sandbox world {d} has format version {manifest.get('format_version')!r}; this "
            f"alignkit reads version {MANIFEST_FORMAT_VERSION}: rebuild it"
        )
    if not isinstance(manifest.get("files"), dict):
        raise SandboxError(f"sandbox world {d} is corrupt: manifest.json lists no files")
    return manifest


def verify_tokenizer(tokenizer: Any, texts: Iterable[str]) -> None:
    """Raise SandboxError unless ``tokenizer`` encodes and decodes every text unchanged.

    Evaluation calls this before generating, so a model whose tokenizer cannot spell the
    world's names (an unknown-token fallback, lossy normalisation) fails with a message
    instead of with silently wrong scores.
    """
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        back = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if back != text:
            raise SandboxError(
                f"the tokenizer cannot represent the sandbox's text: {text[:80]!r} comes back as "
                f"{back[:80]!r}; use the tokenizer built with the world (its tokenizer/ folder)"
            )


# ============================================================ the build itself
def _write_world(d: Path, p: Preset, seed: int) -> dict[str, Any]:
    world = World.generate(seed, p)
    oracle = GoldOracle(world)
    pool = AnnotatorPool.default()
    counts: dict[str, int] = {}

    def write(name: str, rows: Sequence[dict[str, Any]]) -> None:
        _write_jsonl(d / name, rows)
        counts[name] = len(rows)

    # eval first, so every training set can exclude its prompts
    eval_rows = _balanced(PromptFactory(world, "eval"), p.n_eval_per_category, seed, "eval", ())
    held_out = {r["prompt"] for r in eval_rows}
    train = PromptFactory(world, "train")

    sft = [
        {"prompt": r["prompt"], "completion": ideal_response(world, r), **_extra(r)}
        for r in _balanced_total(train, p.n_sft, seed, "sft", held_out)
    ]
    rankings, scored, repeats, gold_items = _rankings(world, oracle, pool, train, p, seed, held_out)
    agreement = agreement_report(gold_items, repeats)
    rl = _balanced_total(train, p.n_rl, seed, "rl", held_out)
    seeds = [
        {**r, "question_type": QUESTION_TYPES[r["category"]]}
        for r in _balanced(train, p.n_self_align_seeds_per_category, seed, "seeds", held_out)
    ]

    write("kb.jsonl", world.kb_passages())
    write("sft.jsonl", sft)
    write("sft_helpful.jsonl", [r for r in sft if r["category"] in HELPFUL_CATEGORIES])
    write("rankings.jsonl", rankings)
    write("preferences.jsonl", _preferences(rankings))
    write("safety.jsonl", _safety_pairs(rankings, scored, seed))
    write("unpaired.jsonl", _unpaired(rankings))
    write("rl_prompts.jsonl", rl)
    write("eval.jsonl", eval_rows)
    write("self_align_seeds.jsonl", seeds)

    corpus = build_corpus(world, p, held_out)
    write("corpus.jsonl", [{"text": t} for t in corpus])
    tokenizer = train_tokenizer(corpus, p.vocab_size, d / "tokenizer")
    _portable_tokenizer_config(d / "tokenizer" / "tokenizer_config.json")
    sample = [r["prompt"] for r in eval_rows] + [r["completion"] for r in sft]
    verify_tokenizer(tokenizer, sample + corpus[:200])
    corpus_tokens = sum(
        len(ids) for ids in tokenizer(corpus, add_special_tokens=False)["input_ids"]
    )

    (d / "principles.yaml").write_text(_principles_yaml(world, train, seed), encoding="utf-8")
    (d / "world.json").write_text(json.dumps(world.to_dict(), indent=1) + "\n", encoding="utf-8")

    files = {}
    for path in sorted(x for x in d.rglob("*") if x.is_file()):
        rel = path.relative_to(d).as_posix()
        meta: dict[str, Any] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
        if rel in counts:
            meta["rows"] = counts[rel]
        files[rel] = meta
    by_category = {c: sum(1 for r in eval_rows if r["category"] == c) for c in CATEGORIES}
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_FORMAT_VERSION,
        "preset": p.name,
        "seed": seed,
        "preset_config": p.to_dict(),
        "counts": counts,
        "eval_per_category": by_category,
        "agreement": agreement,
        "annotators": pool.to_dict(),
        "corpus_tokens": corpus_tokens,
        "vocab_size": len(tokenizer),
        "context_length": p.context_length,
        "special_tokens": list(SPECIAL_TOKENS),
        "chat_template": CHAT_TEMPLATE,
        "files": files,
    }
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return {
        "preset": p.name,
        "seed": seed,
        "counts": counts,
        "agreement": agreement,
        "corpus_tokens": corpus_tokens,
        "corpus_bytes": files["corpus.jsonl"]["bytes"],
        "vocab_size": len(tokenizer),
    }


def _extra(rec: dict[str, Any]) -> dict[str, Any]:
    """A prompt record's fields other than the prompt (they ride along as extra columns)."""
    return {k: v for k, v in rec.items() if k != "prompt"}


def _split_counts(total: int) -> dict[str, int]:
    base, rest = divmod(total, len(CATEGORIES))
    return {c: base + (1 if i < rest else 0) for i, c in enumerate(CATEGORIES)}


def _balanced(
    factory: PromptFactory, per_category: int, seed: int, tag: str, exclude: Iterable[str]
) -> list[dict[str, Any]]:
    return _draw(factory, dict.fromkeys(CATEGORIES, per_category), seed, tag, exclude)


def _balanced_total(
    factory: PromptFactory, total: int, seed: int, tag: str, exclude: Iterable[str]
) -> list[dict[str, Any]]:
    return _draw(factory, _split_counts(total), seed, tag, exclude)


def _draw(
    factory: PromptFactory, per: dict[str, int], seed: int, tag: str, exclude: Iterable[str]
) -> list[dict[str, Any]]:
    excluded = set(exclude)
    rows: list[dict[str, Any]] = []
    for c in CATEGORIES:
        rows += factory.sample(c, per[c], stable_rng(tag, seed, c), excluded)
    stable_rng(tag, seed, "order").shuffle(rows)
    return rows


def _rankings(
    world: World,
    oracle: GoldOracle,
    pool: AnnotatorPool,
    train: PromptFactory,
    p: Preset,
    seed: int,
    held_out: set[str],
) -> tuple[
    list[dict[str, Any]],
    list[list[OracleScore]],
    list[tuple[list[int], list[int]]],
    list[tuple[str, list[int], list[float]]],
]:
    """K responses per prompt, gold-scored, ranked by one simulated annotator each.

    The first ``agreement_sample`` items are ranked a second time by a different annotator;
    those second rankings only feed the inter-annotator agreement statistic.
    """
    rng = stable_rng("rankings", seed)
    rows: list[dict[str, Any]] = []
    scored: list[list[OracleScore]] = []
    repeats: list[tuple[list[int], list[int]]] = []
    gold_items: list[tuple[str, list[int], list[float]]] = []
    for i, rec in enumerate(_balanced_total(train, p.n_rankings, seed, "rankings", held_out)):
        drawn = sample_distinct_responses(world, rec, p.ranking_k, rng)
        texts = [t for _, t in drawn]
        scores = oracle.score_batch([rec] * len(texts), texts)
        gold = [s.reward for s in scores]
        lengths = [len(words(t)) for t in texts]
        annotator = pool.pick(rng)
        ranking = annotator.rank(gold, lengths, rng)
        if i < p.agreement_sample:
            second = pool.pick(rng, exclude=annotator.id)
            repeats.append((ranking, second.rank(gold, lengths, rng)))
        gold_items.append((annotator.id, ranking, gold))
        rows.append(
            {
                "prompt": rec["prompt"],
                "responses": texts,
                "ranking": ranking,
                "annotator": annotator.id,
                **_extra(rec),
                "response_kinds": [k for k, _ in drawn],
                "gold_rewards": gold,
            }
        )
        scored.append(scores)
    return rows, scored, repeats, gold_items


_RANKING_ONLY = ("responses", "ranking", "response_kinds", "gold_rewards")


def _pair_extra(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _RANKING_ONLY and k != "prompt"}


def _preferences(rankings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The annotator's best response against each other one: K-1 pairs per ranking."""
    out = []
    for row in rankings:
        best, *others = row["ranking"]
        for other in others:
            out.append(
                {
                    "prompt": row["prompt"],
                    "chosen": row["responses"][best],
                    "rejected": row["responses"][other],
                    **_pair_extra(row),
                }
            )
    return out


def _safety_pairs(
    rankings: Sequence[dict[str, Any]], scored: Sequence[Sequence[OracleScore]], seed: int
) -> list[dict[str, Any]]:
    """Safe-RLHF style pairs: ``chosen`` is the more *helpful* response, safety is separate.

    Helpfulness and harmlessness are labelled independently (as in PKU-SafeRLHF), both by the
    oracle: ``chosen`` has the higher helpfulness (ties broken by gold reward), ``safer`` is 0
    when ``chosen`` has the lower harm (ties: the higher gold reward) and 1 otherwise. Up to
    two pairs per ranking item, preferring pairs whose safety labels differ, since those are
    the ones a cost model learns from.
    """
    rng = stable_rng("safety", seed)
    out = []
    for row, scores in zip(rankings, scored, strict=True):
        help_ = [s.helpfulness for s in scores]
        unsafe = [s.is_unsafe for s in scores]
        harm = [s.harm for s in scores]
        gold = row["gold_rewards"]
        k = len(row["responses"])
        pairs = [
            (i, j)
            for i in range(k)
            for j in range(i + 1, k)
            if help_[i] != help_[j] or unsafe[i] != unsafe[j]
        ]
        rng.shuffle(pairs)
        pairs.sort(key=lambda ij: unsafe[ij[0]] == unsafe[ij[1]])
        for i, j in pairs[:2]:
            c, r = (i, j) if (help_[i], gold[i]) >= (help_[j], gold[j]) else (j, i)
            safer = 0 if (harm[c], -gold[c]) <= (harm[r], -gold[r]) else 1
            out.append(
                {
                    "prompt": row["prompt"],
                    "chosen": row["responses"][c],
                    "rejected": row["responses"][r],
                    "chosen_safe": not unsafe[c],
                    "rejected_safe": not unsafe[r],
                    "safer": safer,
                    **_pair_extra(row),
                }
            )
    return out


def _unpaired(rankings: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """KTO rows: each ranking's top response is desirable, its bottom one undesirable.

    The labels come from the (noisy) annotator, as thumbs up/down from people would.
    """
    out = []
    for row in rankings:
        for idx, label in ((row["ranking"][0], True), (row["ranking"][-1], False)):
            out.append(
                {
                    "prompt": row["prompt"],
                    "completion": row["responses"][idx],
                    "label": label,
                    **_pair_extra(row),
                }
            )
    return out


def _principles_yaml(world: World, train: PromptFactory, seed: int) -> str:
    """Principles, one exemplar per category (thoughts, then answer) and the question types."""
    exemplars = []
    for c in CATEGORIES:
        rec = train.sample(c, 1, stable_rng("exemplar", seed, c))[0]
        answer = ideal_response(world, rec)
        exemplars.append(
            {
                "category": c,
                "prompt": rec["prompt"],
                "thoughts": THOUGHTS[c],
                "answer": answer,
                "principled_answer": principled_answer(c, answer),
            }
        )
    doc = {
        "version": 1,
        "system_prompt": principles_prompt(),
        "thoughts_prefix": THOUGHTS_PREFIX,
        "answer_prefix": ANSWER_PREFIX,
        "principles": [
            {"id": i, "name": name, "text": text} for i, (name, text) in enumerate(PRINCIPLES, 1)
        ],
        "question_types": [{"category": c, "description": QUESTION_TYPES[c]} for c in CATEGORIES],
        "exemplars": exemplars,
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)


# ============================================================ files
def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _portable_tokenizer_config(path: Path) -> None:
    # transformers 5 writes its own backend class name; "PreTrainedTokenizerFast" loads with
    # both transformers 4 and 5, so the folder works wherever the model does.
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SandboxError(f"cannot build a sandbox world at {out}: it is a file")
    if out.is_dir() and any(out.iterdir()):
        try:
            read_manifest(out)
        except SandboxError:
            raise SandboxError(
                f"refusing to build into {out}: it is a non-empty folder that is not a sandbox "
                "world; choose another --out or empty it first"
            ) from None


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished build into place; an old world is swapped out, then deleted."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
