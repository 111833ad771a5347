"""Principle-driven self-alignment (Sun et al. 2023; ALGORITHMS.md section 8).

The base model aligns itself from a few lines of human writing (principles, exemplars with
internal thoughts, question types with seed questions), with no demonstrations and no
preference labels:

1. topic-guided red-teaming self-instruct: the model brainstorms topics per question type,
   then questions per (type, topic); exact and near duplicates are removed;
2. principle-driven answers: each question is answered under a system turn of principles and
   exemplars whose answers first name the principles that apply (temperature 0.5, top_p 0.95);
3. engraving: SFT of the base model on (question, answer) with the principles, exemplars and
   internal thoughts stripped, so the behaviour no longer needs the prompt;
4. optional verbose cloning: the engraved model answers under a verbose prompt and is
   fine-tuned on those answers without it (context distillation).

Read top to bottom. Every stage writes its dataset into the run folder (``stage1_topics``,
``stage1_questions``, ``stage2_answers``, ``stage3_engrave`` + ``stage3_rejected``,
``stage4_verbose``); a rerun reuses files that are up to date and remakes those whose inputs
changed (see :mod:`alignkit.recipes.stage_files`), so a person can filter a stage file and
rerun. The final model is published in the run folder itself.
"""

from __future__ import annotations

import gc
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignkit.config import ConfigError, ModelConfig
from alignkit.configs.self_align import SelfAlignConfig
from alignkit.data.principles import (
    AnswerFilter,
    PrincipleSet,
    QuestionType,
    deduplicate,
    dump_principles,
    leaked_principles,
    load_principles,
    normalize_text,
    parse_question,
    parse_topics,
    rank_exemplars,
    read_seed_questions,
)
from alignkit.data.readers import read_jsonl_dicts, write_jsonl
from alignkit.data.records import Message
from alignkit.data.tokenize import ChatFormatter
from alignkit.models.load import load_causal_lm
from alignkit.recipes.common import Timer, prepare_run_dir, set_seed, write_summary
from alignkit.recipes.synthetic import (
    Rows,
    StageLog,
    UserTurn,
    content_key,
    context_length,
    file_sha,
    fine_tune,
    merge_metrics,
    model_stamp,
    publish_model,
    render_prompt,
    sample,
)


def log(msg: str) -> None:
    print(f"[self-align] {msg}", flush=True)


def _examples(t: QuestionType, k: int) -> str:
    return "\n".join(f"- {s}" for s in t.seeds[:k]) or "- (none)"


# ============================================================ stage 1: red-teaming
def brainstorm_topics(
    model: Any, tok: Any, pset: PrincipleSet, cfg: SelfAlignConfig, stats: dict[str, Any]
) -> Rows:
    """Topics per question type, brainstormed by the model and deduplicated."""
    rt = cfg.red_team
    jobs: list[tuple[QuestionType, str, list[int]]] = []  # (type, stem, prompt ids)
    if rt.mode == "instruct":
        fmt = ChatFormatter(tok, cfg.chat_template)
        for t in pset.question_types:
            text = rt.topic_prompt.format(
                type=t.name,
                description=t.description,
                examples=_examples(t, rt.examples_in_prompt),
                n=rt.topics_per_type,
            )
            jobs += [
                (t, "", fmt.prompt_ids([{"role": "user", "content": text}]))
            ] * rt.topic_attempts
    else:
        turn = UserTurn(tok, cfg.chat_template)
        for t in pset.question_types:
            stems = list(dict.fromkeys(" ".join(s.split()[: rt.stem_words]) for s in t.seeds))
            if not stems:
                log(f"question type {t.name!r} has no seed questions; continue mode skips it")
                continue
            for i in range(rt.topic_attempts):
                stem = stems[i % len(stems)]
                jobs.append((t, stem, turn.ids(stem)))
    gens = sample(
        model,
        tok,
        [ids for *_, ids in jobs],
        rt.sampling,
        1,
        cfg.train.seed + 1000,
        "self-align:topics",
        cfg.train.progress,
    )
    found: dict[str, list[str]] = defaultdict(list)
    for (t, stem, _), (g,) in zip(jobs, gens, strict=True):
        if rt.mode == "instruct":
            candidates = parse_topics(g.text)
        else:
            rest = turn.finish(g)
            words = (rest or "").split()
            # a topic is the stem plus the words the model chose next, e.g. "How can I poison"
            candidates = (
                [f"{stem} {' '.join(words[: rt.topic_words])}"]
                if len(words) > rt.topic_words
                else []
            )
        for c in candidates:
            if normalize_text(c) not in {normalize_text(x) for x in found[t.name]}:
                found[t.name].append(c)
    rows = [
        {"question_type": t.name, "topic": topic}
        for t in pset.question_types
        for topic in found[t.name][: rt.topics_per_type]
    ]
    stats["topics"] = {
        t.name: min(len(found[t.name]), rt.topics_per_type) for t in pset.question_types
    }
    log(f"stage 1: {len(rows)} topics over {len(found)} question types")
    return rows


def write_questions(
    model: Any,
    tok: Any,
    pset: PrincipleSet,
    topics: Rows,
    cfg: SelfAlignConfig,
    stats: dict[str, Any],
) -> Rows:
    """Questions per (type, topic), plus the seeds; filtered and deduplicated."""
    rt = cfg.red_team
    jobs: list[tuple[dict[str, Any], list[int]]] = []
    fmt = ChatFormatter(tok, cfg.chat_template)
    turn = UserTurn(tok, cfg.chat_template) if rt.mode == "continue" else None
    for row in topics:
        t = pset.type_named(row["question_type"]) or QuestionType(
            row["question_type"], row["question_type"]
        )
        if turn is not None:
            ids = turn.ids(row["topic"])
        else:
            text = rt.question_prompt.format(
                type=t.name,
                description=t.description,
                topic=row["topic"],
                examples=_examples(t, rt.examples_in_prompt),
            )
            ids = fmt.prompt_ids([{"role": "user", "content": text}])
        jobs += [(row, ids)] * rt.questions_per_topic
    gens = sample(
        model,
        tok,
        [ids for _, ids in jobs],
        rt.sampling,
        1,
        cfg.train.seed + 2000,
        "self-align:questions",
        cfg.train.progress,
    )
    candidates: list[dict[str, Any]] = []
    if rt.include_seeds:
        for t in pset.question_types:
            candidates += [
                {"prompt": s, "question_type": t.name, "topic": None, "source": "seed"}
                for s in t.seeds
            ]
    drops: Counter[str] = Counter()
    excluded = {normalize_text(q) for f in rt.exclude for q, _ in read_seed_questions(f)}
    for (row, _), (g,) in zip(jobs, gens, strict=True):
        if turn is not None:
            rest = turn.finish(g)
            q = f"{row['topic']}{rest}".strip() if rest is not None else ""
        else:
            q = parse_question(g.text)
        words = len(q.split())
        if not q:
            drops["unparsed"] += 1
        elif words < rt.min_words or words > rt.max_words:
            drops["length"] += 1
        elif leaked_principles(q, pset, cfg.filters.leak_ngram):
            drops["leak"] += 1
        elif normalize_text(q) in excluded:
            drops["excluded"] += 1
        else:
            candidates.append({"prompt": q, **row, "source": "generated"})
    dedup = deduplicate([c["prompt"] for c in candidates], rt.near_duplicate_threshold)
    kept = _interleave([candidates[i] for i in dedup.kept], rt.max_questions)
    stats["questions"] = {
        "sampled": len(jobs),
        "dropped": dict(drops),
        "exact_duplicates": dedup.exact,
        "near_duplicates": dedup.near,
        "kept": len(kept),
        "by_type": dict(Counter(r["question_type"] for r in kept)),
    }
    log(
        f"stage 1: {len(kept)} questions kept of {len(candidates)} "
        f"({dedup.exact} exact and {dedup.near} near duplicates removed, dropped {dict(drops)})"
    )
    return kept


def _interleave(rows: Rows, limit: int | None) -> Rows:
    """Round-robin over question types, so a cap keeps every type represented."""
    by_type: dict[str, Rows] = defaultdict(list)
    for r in rows:
        by_type[r["question_type"]].append(r)
    out: Rows = []
    queues = list(by_type.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out[:limit] if limit else out


# ============================================================ stage 2: principled answers
def principle_messages(
    pset: PrincipleSet, exemplar_ids: Sequence[int], question: str
) -> list[Message]:
    """System turn of principles, exemplar turns (thoughts, then answer), then the question."""
    msgs: list[Message] = [{"role": "system", "content": pset.system_prompt}]
    for i in exemplar_ids:
        ex = pset.exemplars[i]
        msgs += [
            {"role": "user", "content": ex.question},
            {"role": "assistant", "content": pset.principled_answer(ex)},
        ]
    msgs.append({"role": "user", "content": question})
    return msgs


def principled_answers(
    model: Any,
    tok: Any,
    pset: PrincipleSet,
    questions: Rows,
    cfg: SelfAlignConfig,
    stats: dict[str, Any],
) -> Rows:
    """One answer per question, written under the principles with the closest exemplars."""
    ans = cfg.answers
    fmt = ChatFormatter(tok, cfg.chat_template)
    budget = ans.max_prompt_length or context_length(model) - ans.sampling.max_new_tokens
    if budget < 1:
        raise ConfigError(
            f"answers.sampling.max_new_tokens={ans.sampling.max_new_tokens} leaves no room for "
            f"the prompt in the model's context of {context_length(model)} tokens"
        )
    prompts, kept, used = [], [], []
    for q in questions:
        order = rank_exemplars(
            pset.exemplars, q["prompt"], q.get("question_type"), ans.match_question_type
        )
        k = min(ans.exemplars_per_prompt, len(order))
        ids = render_prompt(fmt, principle_messages(pset, order[:k], q["prompt"]))
        while len(ids) > budget and k > 0:  # drop exemplars until the prompt fits
            k -= 1
            ids = render_prompt(fmt, principle_messages(pset, order[:k], q["prompt"]))
        if len(ids) <= budget:
            prompts.append(ids)
            kept.append(q)
            used.append(order[:k])
    if not prompts:
        alone = len(render_prompt(fmt, principle_messages(pset, [], "")))
        raise ConfigError(
            f"no answer prompt fits in {budget} tokens (the principles alone take {alone}); "
            "shorten system_prompt, or lower answers.sampling.max_new_tokens"
        )
    gens = sample(
        model,
        tok,
        prompts,
        ans.sampling,
        1,
        cfg.train.seed + 3000,
        "self-align:answers",
        cfg.train.progress,
    )
    rows = []
    for q, ex_ids, (g,) in zip(kept, used, gens, strict=True):
        thoughts, answer = pset.split_answer(g.text)
        rows.append(
            {
                **q,
                "exemplars": list(ex_ids),
                "response": g.text,
                "thoughts": thoughts,
                "answer": answer,
                "finished": g.finished,
            }
        )
    with_thoughts = sum(r["thoughts"] is not None for r in rows)
    stats["answers"] = {
        "prompt_too_long": len(questions) - len(kept),
        "answered": len(rows),
        "with_thoughts": with_thoughts,
        "mean_exemplars": round(sum(map(len, used)) / max(1, len(used)), 3),
    }
    log(f"stage 2: {len(rows)} answers, {with_thoughts} opened with internal thoughts")
    return rows


# ============================================================ stage 3: engraving data
def engraving_data(
    pset: PrincipleSet, answers: Rows, flt: AnswerFilter, rejected_file: Path, stats: dict[str, Any]
) -> Rows:
    """(question, answer) pairs with principles, exemplars and thoughts stripped; the rest
    goes to ``stage3_rejected.jsonl`` with the reasons."""
    kept, rejected = [], []
    reasons: Counter[str] = Counter()
    for r in answers:
        # split the raw response again: it is the field a person edits between runs
        if isinstance(r.get("response"), str):
            thoughts, answer = pset.split_answer(r["response"])
        else:
            thoughts, answer = r.get("thoughts"), str(r.get("answer") or "")
        problems = flt.problems(pset, thoughts, answer, bool(r.get("finished", True)))
        if problems:
            reasons.update(p.split(":")[0] for p in problems)
            rejected.append({**r, "reasons": problems})
            continue
        kept.append(
            {
                "prompt": r["prompt"],
                "completion": answer,
                "question_type": r.get("question_type"),
                "topic": r.get("topic"),
            }
        )
    write_jsonl(rejected_file, rejected)
    stats["engrave_data"] = {"kept": len(kept), "rejected": len(rejected), "reasons": dict(reasons)}
    log(
        f"stage 3: {len(kept)} (question, answer) pairs kept, {len(rejected)} rejected {dict(reasons)}"
    )
    return kept


# ============================================================ stage 4: verbose cloning
def verbose_answers(
    model_dir: Path,
    pset: PrincipleSet,
    questions: Rows,
    cfg: SelfAlignConfig,
    stats: dict[str, Any],
) -> Rows:
    """The engraved model's answers under the verbose prompt (to be distilled without it)."""
    model, tok = load_causal_lm(ModelConfig(path=str(model_dir)), for_training=False)
    fmt = ChatFormatter(tok, cfg.chat_template)
    qs = questions[: cfg.verbose.questions] if cfg.verbose.questions else questions
    msgs = [
        [
            {"role": "system", "content": cfg.verbose.prompt},
            {"role": "user", "content": q["prompt"]},
        ]
        for q in qs
    ]
    gens = sample(
        model,
        tok,
        [render_prompt(fmt, m) for m in msgs],
        cfg.verbose.sampling,
        1,
        cfg.train.seed + 4000,
        "self-align:verbose",
        cfg.train.progress,
    )
    f = cfg.filters
    flt = AnswerFilter(
        False, f.drop_unfinished, f.min_words, None, f.max_ngram_repeats, f.leak_ngram
    )
    rows = [
        {"prompt": q["prompt"], "completion": g.text, "question_type": q.get("question_type")}
        for q, (g,) in zip(qs, gens, strict=True)
        if not flt.problems(pset, None, g.text, g.finished)
    ]
    stats["verbose"] = {"answered": len(qs), "kept": len(rows)}
    log(f"stage 4: {len(rows)} verbose answers kept of {len(qs)}")
    return rows


# ============================================================ the recipe
def load_principle_set(cfg: SelfAlignConfig) -> PrincipleSet:
    pset = load_principles(cfg.principles or None)
    if cfg.seeds:
        pset = pset.with_seeds(read_seed_questions(cfg.seeds))
    if not any(t.seeds for t in pset.question_types) and cfg.red_team.mode != "instruct":
        raise ConfigError(
            "red_team.mode=continue needs seed questions: set seeds= or add them to the principles file"
        )
    if not pset.question_types:
        raise ConfigError(f"{pset.source} defines no question types and no seeds= file was given")
    return pset


class _Run:
    """One run's shared state: config, folder, principles, stage record, and the base model
    (loaded once, and only when a generating stage has to run)."""

    def __init__(self, cfg: SelfAlignConfig, out: Path, pset: PrincipleSet) -> None:
        self.cfg, self.out, self.pset = cfg, out, pset
        self.stages = StageLog(out, log)
        self.stats: dict[str, Any] = {}
        self._base: tuple[Any, Any] | None = None
        self.origin = content_key(model_stamp(cfg.model.path), cfg.chat_template, cfg.train.seed)
        self.prompt_key = (
            pset.system_prompt,
            pset.thoughts_prefix,
            pset.answer_prefix,
            [e.__dict__ for e in pset.exemplars],
        )

    def base(self) -> tuple[Any, Any]:
        if self._base is None:
            self._base = load_causal_lm(self.cfg.model, for_training=False)
        return self._base

    def release(self) -> None:
        self._base = None  # free the generating copy before SFT loads its own
        gc.collect()

    def file(self, name: str) -> Path:
        return self.out / f"{name}.jsonl"


def make_data(run: _Run) -> Rows | None:
    """Stages 1–3; returns the engraving rows, or None when ``stop_after`` ends the run here."""
    cfg, pset, stages, stats = run.cfg, run.pset, run.stages, run.stats
    types = [(t.name, t.description, t.seeds) for t in pset.question_types]
    rt = cfg.red_team.model_dump()
    f_topics, f_questions = run.file("stage1_topics"), run.file("stage1_questions")
    f_answers = run.file("stage2_answers")
    topics = stages.rows(
        "topics",
        f_topics,
        content_key(run.origin, types, rt),
        lambda: brainstorm_topics(*run.base(), pset, cfg, stats),
    )
    questions = stages.rows(
        "questions",
        f_questions,
        content_key(
            run.origin,
            types,
            rt,
            file_sha(f_topics),
            [file_sha(Path(f)) for f in cfg.red_team.exclude],
            cfg.filters.leak_ngram,
        ),
        lambda: write_questions(*run.base(), pset, topics, cfg, stats),
    )
    if not questions:
        raise ConfigError(f"stage 1 kept no questions ({f_questions}); see the log, red_team.*")
    if cfg.stop_after == "questions":
        return None
    answers = stages.rows(
        "answers",
        f_answers,
        content_key(run.origin, run.prompt_key, cfg.answers.model_dump(), file_sha(f_questions)),
        lambda: principled_answers(*run.base(), pset, questions, cfg, stats),
    )
    if cfg.stop_after == "answers":
        return None
    f = cfg.filters
    flt = AnswerFilter(
        f.require_thoughts,
        f.drop_unfinished,
        f.min_words,
        f.max_words,
        f.max_ngram_repeats,
        f.leak_ngram,
    )
    principles = [p.text for p in pset.principles]
    rows = stages.rows(
        "engrave_data",
        run.file("stage3_engrave"),
        content_key(run.prompt_key, f.model_dump(), principles, file_sha(f_answers)),
        lambda: engraving_data(pset, answers, flt, run.file("stage3_rejected"), stats),
    )
    if not rows:
        raise ConfigError(
            f"no answer survived the filters ({run.file('stage3_rejected')} lists why); check "
            "stage2_answers.jsonl, or relax filters.* (e.g. filters.require_thoughts=false)"
        )
    return None if cfg.stop_after == "engrave_data" else rows


def train_models(run: _Run) -> tuple[Path, dict[str, Path]]:
    """Stage 3's engraving and the optional stage 4; returns (final model, sub-runs)."""
    cfg, stages = run.cfg, run.stages
    f_engrave, f_verbose = run.file("stage3_engrave"), run.file("stage4_verbose")
    train_key = (
        cfg.model.model_dump(),
        cfg.train.model_dump(exclude={"output_dir"}),
        cfg.max_length,
        cfg.packing,
    )

    def sft(model: ModelConfig, data: Path, folder: Path, lr: float | None = None) -> Path:
        return fine_tune(
            model, data, folder, cfg.train, cfg.max_length, cfg.chat_template, cfg.packing, lr
        )

    engraved = stages.model(
        "engrave",
        run.out / "engrave",
        content_key(run.origin, train_key, file_sha(f_engrave)),
        lambda: sft(cfg.model, f_engrave, run.out / "engrave"),
    )
    runs = {"engrave": engraved}
    if not cfg.verbose.enabled or cfg.stop_after == "engrave":
        return engraved, runs
    questions = run.file("stage1_questions")
    rows = stages.rows(
        "verbose_data",
        f_verbose,
        content_key(model_stamp(engraved), cfg.verbose.model_dump(), file_sha(questions)),
        lambda: verbose_answers(engraved, run.pset, read_jsonl_dicts(questions), cfg, run.stats),
    )
    if not rows:
        raise ConfigError(f"verbose cloning kept no answer ({f_verbose}); check verbose.*")
    start = cfg.model.model_copy(update={"path": str(engraved)})
    runs["verbose"] = stages.model(
        "verbose",
        run.out / "verbose",
        content_key(model_stamp(engraved), train_key, cfg.verbose.lr, file_sha(f_verbose)),
        lambda: sft(start, f_verbose, run.out / "verbose", cfg.verbose.lr),
    )
    return runs["verbose"], runs


def run_self_align(cfg: SelfAlignConfig) -> Path:
    """Run (or resume) the stages; returns the run folder, which holds the final model."""
    timer = Timer()
    if not cfg.model.path:
        raise ConfigError("model.path is empty; point it at the base model folder (--model BASE)")
    set_seed(cfg.train.seed)
    out = prepare_run_dir(cfg.train.output_dir, cfg)
    pset = load_principle_set(cfg)
    (out / "principles_used.yaml").write_text(dump_principles(pset), encoding="utf-8")
    run = _Run(cfg, out, pset)
    final: Path | None = None
    if make_data(run) is not None:
        run.release()
        final, runs = train_models(run)
        publish_model(final, out)
        merge_metrics(out, runs)
    counts = {
        f.stem: sum(1 for line in f.open(encoding="utf-8") if line.strip())
        for f in sorted(out.glob("stage*.jsonl"))
    }
    write_summary(
        out,
        {
            "recipe": "self-align",
            "principles": cfg.principles or "alignkit default",
            "rows": counts,
            "stages_run": run.stats,
            "final_model": str(final) if final else None,
            "stopped_after": None if final else cfg.stop_after,
            "wall_time_s": round(timer.seconds, 2),
        },
    )
    log(
        f"done in {timer.seconds:.1f}s: "
        + (f"final model in {out}" if final else f"stopped after {cfg.stop_after}")
    )
    return out


__all__ = [
    "brainstorm_topics",
    "engraving_data",
    "make_data",
    "principle_messages",
    "principled_answers",
    "run_self_align",
    "train_models",
    "write_questions",
]
