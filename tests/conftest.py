"""Test-wide settings: nothing is downloaded, everything is seeded."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public data sets in ../shared/data; tests that need them skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found at {SHARED_DATA}: public data sets unavailable")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer with pad/bos/eos and a chat template, trained locally."""
    from tiny import make_tokenizer

    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> dict[str, Path]:
    """Randomly initialised 2-layer Llama, Qwen2 and GPT-2 checkpoint folders."""
    from tiny import make_model

    root = tmp_path_factory.mktemp("models")
    return {a: make_model(a, root / a, tiny_tokenizer) for a in ("llama", "qwen2", "gpt2")}


@pytest.fixture(scope="session")
def tiny_llama(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["llama"]


@pytest.fixture()
def sft_file(tmp_path: Path) -> Path:
    from tiny import sft_rows, write_jsonl

    return write_jsonl(tmp_path / "sft.jsonl", sft_rows())
