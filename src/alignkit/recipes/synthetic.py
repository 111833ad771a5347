"""Plumbing for recipes that train on data they generate: self-alignment, rejection sampling.

Sampling with a progress bar, prompt rendering, letting a base model write a user turn, and
resumable stage files. Such a recipe is a chain (questions → answers → filtered data → model)
and each stage writes one dataset a person can read and edit, so the chain must resume from
what is on disk and redo exactly what is out of date. A stage is keyed by what it was made from
(the content hash of its input file and its settings); ``stages.json`` in the run folder
records the key each file was written with:

* file present, key unchanged → reused, even if a person edited it (editing is the point);
* file present, key changed (an earlier file was edited, a setting changed) → made again;
* file present with no record → a file the user put there: reused and recorded.

Because a later stage's key includes the hash of the file before it, editing stage 2 makes
stage 3 and the model stale, and nothing earlier. Files are written atomically, so a crash
never leaves a half-written stage that would be taken as done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alignkit.config import ConfigError, DataConfig, ModelConfig, SFTConfig, TrainConfig
from alignkit.configs.self_align import GenerationSampling
from alignkit.data.readers import read_jsonl_dicts, write_jsonl
from alignkit.data.records import Message
from alignkit.data.tokenize import ChatFormatter
from alignkit.engine.loop import Progress
from alignkit.rollout.generate import Generation, SamplingConfig, generate

Rows = list[dict[str, Any]]

# The files that make a Hugging Face model folder loadable (weights, config, tokenizer).
MODEL_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "vocab.*",
    "merges.txt",
    "*.model",
)
STEM_MARK = "@@ALIGNKIT_STEM@@"


# ============================================================ sampling
def sample(
    model: Any,
    tok: Any,
    prompt_ids: Sequence[list[int]],
    sampling: GenerationSampling,
    n: int,
    seed: int,
    desc: str,
    progress: bool = True,
) -> list[list[Generation]]:
    """``n`` samples per prompt, in chunks so a progress bar with ETA can follow."""
    if not prompt_ids:
        return []
    cfg = SamplingConfig(
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        batch_size=sampling.batch_size,
        max_prompt_length=max(len(p) for p in prompt_ids),
    )
    chunk = max(1, (sampling.batch_size * 4) // n)
    bar = Progress(desc, len(prompt_ids), 0, progress)
    out: list[list[Generation]] = []
    try:
        for k, start in enumerate(range(0, len(prompt_ids), chunk)):
            ids = list(prompt_ids[start : start + chunk])
            out += generate(model, tok, [""] * len(ids), cfg, n, seed=seed + k, prompt_ids=ids)
            bar.update(start + len(ids), {})
    finally:
        bar.close()
    return out


def context_length(model: Any) -> int:
    c = model.config
    return int(getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", 4096))


def render_prompt(fmt: ChatFormatter, messages: list[Message]) -> list[int]:
    """Prompt ids; templates that reject a system turn get it folded into the first user turn."""
    from jinja2 import TemplateError

    try:
        return fmt.prompt_ids(messages)
    except TemplateError:
        if messages[0]["role"] != "system":
            raise
        system, first, *rest = messages
        merged = {"role": "user", "content": f"{system['content']}\n\n{first['content']}"}
        return fmt.prompt_ids([merged, *rest])


class UserTurn:
    """Lets a base model write a user turn: the ids that open one, and where it closes.

    The chat template renders a user turn around a marker; the text before the marker opens a
    turn, the text after it (e.g. ``<|assistant|>``) is what the model writes when the
    question is over.
    """

    def __init__(self, tok: Any, policy: str) -> None:
        self.tok = tok
        fmt = ChatFormatter(tok, policy)
        ids = fmt.render_ids([{"role": "user", "content": STEM_MARK}], add_generation_prompt=True)
        text = tok.decode(ids, skip_special_tokens=False)
        if STEM_MARK not in text:
            raise ConfigError(
                "red_team.mode=continue needs a chat template that renders the user's text "
                "verbatim; use red_team.mode=instruct"
            )
        self.opening, rest = text.split(STEM_MARK, 1)
        self.close = rest.strip() or str(tok.eos_token)
        self.specials = [s for s in tok.all_special_tokens if s and s not in self.close]

    def ids(self, stem: str) -> list[int]:
        return list(self.tok(self.opening + stem, add_special_tokens=False)["input_ids"])

    def finish(self, gen: Generation) -> str | None:
        """The rest of the user turn, or None when the model never closed it cleanly."""
        text = self.tok.decode(gen.completion_ids, skip_special_tokens=False)
        at = text.find(self.close)
        if at < 0 or any(s in text[:at] for s in self.specials):
            return None
        return text[:at]


# ============================================================ stage files
def content_key(*parts: Any) -> str:
    """A short, stable hash of JSON-serialisable parts (settings, upstream hashes)."""
    raw = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def model_stamp(path: str | Path) -> str:
    """Identity of a model folder's weights (name, size, mtime), cheap for multi-GB files."""
    p = Path(path)
    parts = [
        f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}"
        for f in sorted(p.glob("*.safetensors"))
    ]
    return f"{p.resolve()}|{';'.join(parts)}"


class StageLog:
    """The ``stages.json`` record of which stage file was made from what."""

    def __init__(self, root: Path, log: Callable[[str], None] = print) -> None:
        self.root = root
        self.path = root / "stages.json"
        self.log = log
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                self.entries = {}

    def _save(self) -> None:
        tmp = self.path.with_name(".stages.json.tmp")
        tmp.write_text(json.dumps(self.entries, indent=1))
        tmp.replace(self.path)

    def record(self, name: str, key: str, complete: bool = True, **info: Any) -> None:
        self.entries[name] = {
            "key": key,
            "complete": complete,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **info,
        }
        self._save()

    def rows(self, name: str, file: Path, key: str, make: Callable[[], Rows]) -> Rows:
        """The rows of stage ``name``: read from ``file`` when up to date, else ``make()``."""
        entry = self.entries.get(name)
        if file.is_file():
            if entry is None or (entry.get("key") == key and entry.get("complete")):
                rows = read_jsonl_dicts(file) if file.stat().st_size else []
                origin = "resumed from" if entry else "user-provided"
                self.log(f"[{name}] {origin} {file} ({len(rows)} rows)")
                if entry is None:
                    self.record(name, key, rows=len(rows), file=file.name, provided=True)
                return rows
            self.log(f"[{name}] {file.name} is out of date (its inputs changed); making it again")
        rows = make()
        write_jsonl(file, rows)
        self.record(name, key, rows=len(rows), file=file.name)
        return rows

    def model(self, name: str, folder: Path, key: str, train: Callable[[], Path]) -> Path:
        """A trained model folder, retrained only when its key changed.

        An unfinished run with the same key resumes from its checkpoints (the SFT recipe does
        that itself); a folder trained from other data is removed first, so its checkpoints
        are never resumed into the new run.
        """
        entry = self.entries.get(name)
        fresh = entry is not None and entry.get("key") == key and entry.get("complete")
        if fresh and (folder / "summary.json").is_file():
            self.log(f"[{name}] up to date: {folder}")
            return folder
        if entry is not None and entry.get("key") != key and folder.exists():
            self.log(f"[{name}] its data or settings changed: training {folder} again")
            shutil.rmtree(folder)
        self.record(name, key, complete=False, folder=folder.name)
        out = train()
        self.record(name, key, complete=True, folder=folder.name)
        return out


def publish_model(src: Path, dst: Path) -> list[str]:
    """Make ``dst`` a loadable model folder holding ``src``'s model and tokenizer files.

    Files are hard-linked where the filesystem allows (no second copy of large weights), else
    copied; each lands under a temporary name first and is renamed into place.
    """
    names: list[str] = []
    for pattern in MODEL_FILE_PATTERNS:
        for f in sorted(src.glob(pattern)):
            if not f.is_file() or f.name in names:
                continue
            tmp = dst / f".{f.name}.publish-tmp"
            if tmp.exists():
                tmp.unlink()
            try:
                os.link(f, tmp)
            except OSError:
                shutil.copy2(f, tmp)
            tmp.replace(dst / f.name)
            names.append(f.name)
    return names


def merge_metrics(root: Path, runs: dict[str, Path]) -> None:
    """One ``metrics.jsonl`` in the run folder, each row tagged with the sub-run it came from."""
    lines = []
    for tag, folder in runs.items():
        f = folder / "metrics.jsonl"
        if f.is_file():
            for line in f.read_text().splitlines():
                if line.strip():
                    lines.append(json.dumps({"stage": tag, **json.loads(line)}))
    tmp = root / ".metrics.jsonl.tmp"
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(root / "metrics.jsonl")


def fine_tune(
    model: ModelConfig,
    data_path: Path,
    out_dir: Path,
    train: TrainConfig,
    max_length: int,
    chat_template: str,
    packing: bool = False,
    lr: float | None = None,
) -> Path:
    """SFT on a generated (prompt, completion) file by calling ``run_sft``: the one SFT loop,
    so engraving and expert iteration get its masking, accumulation and checkpoints."""
    from alignkit.recipes.sft import run_sft

    updates: dict[str, Any] = {"output_dir": str(out_dir)}
    if lr is not None:
        updates["lr"] = lr
    cfg = SFTConfig(
        model=ModelConfig.model_validate(model.model_dump()),
        data=DataConfig(
            path=str(data_path),
            max_length=max_length,
            chat_template=chat_template,
            packing=packing,
            completion_only_loss=True,
        ),
        train=train.model_copy(update=updates),
    )
    return run_sft(cfg)
