"""`alignkit eval --suite sandbox` through decoding-time aids (retrieval, CBF, CoT)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.decoding.pipeline import DecodingConfig
from alignkit.evaluation.sandbox_eval import evaluate_model
from alignkit.sandbox.build import build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_world(out, preset="micro", seed=0)
    return out


def test_retrieval_reaches_the_responses_and_is_cached_apart(
    tiny_llama: Path, world: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    kb = world / "kb.jsonl"
    decoding = DecodingConfig(model=str(model), rag=str(kb), retrieval={"k": 2})
    plain = evaluate_model(model, world, out_dir=tmp_path / "plain", limit=6, max_new_tokens=8)
    rag = evaluate_model(
        model, world, out_dir=tmp_path / "rag", limit=6, max_new_tokens=8, decoding=decoding
    )
    assert "decoding" not in plain and rag["decoding"] == {"rag": str(kb), "rag_k": 2}
    caches = sorted((model / "eval").glob("responses-*.jsonl"))
    assert len(caches) == 2  # the retrieval run did not reuse the plain responses
    rows = [json.loads(x) for c in caches for x in c.read_text().splitlines()]
    assert any("passages" in r for r in rows) and any("passages" not in r for r in rows)


def test_cli_names_the_bad_option(tiny_llama: Path, world: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(tiny_llama),
            "--world",
            str(world),
            "--rag-k",
            "0",
            "--rag",
            str(world / "kb.jsonl"),
        ],
    )
    assert res.exit_code == 2 and "--rag-k" in res.output
    res = runner.invoke(app, ["eval", "--model", str(tiny_llama), "--suite", "xstest", "--cot"])
    assert res.exit_code == 2 and "--suite sandbox only" in res.output
