"""Inference-time alignment on tiny random models: the token loop matches ``generate``, the CBF
filter never emits a disallowed token and falls back cleanly, guidance moves the output toward
the value, and the composed decoder (RAG + CBF + best-of-N) and ``alignkit generate`` write
what they claim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from alignkit.config import ModelConfig
from alignkit.data.tokenize import ChatFormatter
from alignkit.decoding.best_of_n import select_best_of_n
from alignkit.decoding.cbf import CBFConfig, CBFFilter, function_safety
from alignkit.decoding.guided import GuideConfig, RewardGuide
from alignkit.decoding.pipeline import Decoder
from alignkit.decoding.rag import RAGConfig, build_rag
from alignkit.decoding.stepwise import stepwise_generate
from alignkit.models.load import load_causal_lm
from alignkit.rollout.generate import SamplingConfig, generate
from alignkit.rollout.judges import FunctionJudge

PROMPTS = ["what is two plus two", "hello", "the sky is blue and the sun is", "sort the list"]


@pytest.fixture(scope="module")
def llama(tiny_llama: Path):
    return load_causal_lm(ModelConfig(path=str(tiny_llama)), for_training=False)


def ids_of(tok, prompts):
    fmt = ChatFormatter(tok)
    return [fmt.prompt_ids(p) for p in prompts]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_token_loop_reproduces_generate_greedy(tiny_models, arch: str) -> None:
    model, tok = load_causal_lm(ModelConfig(path=str(tiny_models[arch])), for_training=False)
    s = SamplingConfig(max_new_tokens=16, temperature=0.0, batch_size=3)
    ref = generate(model, tok, PROMPTS, s)
    mine = stepwise_generate(model, tok, ids_of(tok, PROMPTS), s, score_prompts=PROMPTS)
    for r, m in zip(ref, mine, strict=True):
        assert m[0].completion_ids == r[0].completion_ids
        assert m[0].text == r[0].text and m[0].finished == r[0].finished


def vowel_h(prompt: str, response: str) -> float:
    """Safety falls with each vowel 'a'/'e': a state-dependent h with a boundary to respect."""
    return 1.0 - 0.2 * sum(response.count(c) for c in "ae")


@pytest.mark.parametrize("alpha", [0.3, 0.6, 1.0])
def test_filter_never_emits_a_disallowed_token(llama, alpha: float) -> None:
    model, tok = llama
    calls: list[int] = []

    def h(prompts, texts):
        calls.append(len(texts))
        return [vowel_h(p, t) for p, t in zip(prompts, texts, strict=True)]

    f = CBFFilter(h, CBFConfig(alpha=alpha, top_k=8, max_candidates=64))
    s = SamplingConfig(max_new_tokens=20, temperature=1.0, batch_size=8)
    out = stepwise_generate(
        model, tok, ids_of(tok, PROMPTS), s, score_prompts=PROMPTS, num_samples=3, cbf=f, seed=1
    )
    steps = 0
    for prompt, row in zip(PROMPTS, out, strict=True):
        for d in row:
            trace = d.cbf
            assert trace is not None
            # Recompute h along the emitted tokens: every transition met the CBF condition.
            texts = [
                tok.decode(d.completion_ids[:k], skip_special_tokens=True).strip()
                for k in range(len(d.completion_ids) + 1)
            ]
            if trace.fallback is None:
                hs = [vowel_h(prompt, t) for t in texts]
                assert hs == trace.h[: len(hs)] or hs[:-1] == trace.h  # EOS repeats the last
                for a, b in zip(hs, hs[1:], strict=False):
                    assert b >= (1 - alpha) * a - 1e-12
                    steps += 1
            assert d.text.count("a") + d.text.count("e") <= 5 or alpha < 1.0
    assert steps > 20
    assert max(calls) > 8  # candidates of several rows went to h in one call


def test_fallback_refuses_or_stops_per_row_without_crashing(llama) -> None:
    model, tok = llama

    def h(prompts, texts):  # the first prompt is unsafe whatever is written
        return [-1.0 if p == PROMPTS[0] else 1.0 for p in prompts]

    s = SamplingConfig(max_new_tokens=8, temperature=1.0)
    for fallback in ("refuse", "stop"):
        cfg = CBFConfig(alpha=0.3, top_k=4, fallback=fallback, refusal="Sorry, I can't.")
        out = stepwise_generate(
            model,
            tok,
            ids_of(tok, PROMPTS[:2]),
            s,
            score_prompts=PROMPTS[:2],
            cbf=CBFFilter(h, cfg),
            seed=0,
        )
        bad, good = out[0][0], out[1][0]
        assert bad.cbf is not None and bad.cbf.fallback == fallback and bad.cbf.fallback_step == 0
        assert bad.finished and bad.completion_ids[-1] == tok.eos_token_id
        assert bad.text == ("Sorry, I can't." if fallback == "refuse" else "")
        assert good.cbf is not None and good.cbf.fallback is None and good.cbf.interventions == 0
        assert len(good.completion_ids) > 0


def test_reward_guidance_moves_toward_the_value(llama) -> None:
    model, tok = llama
    s = SamplingConfig(max_new_tokens=16, temperature=0.0)
    value = function_safety(lambda p, r: float(r.count("e")))
    counts = {}
    for w in (0.0, 5.0):
        guide = RewardGuide(value, GuideConfig(weight=w, top_k=20))
        out = stepwise_generate(
            model, tok, ids_of(tok, PROMPTS), s, score_prompts=PROMPTS, guide=guide
        )
        counts[w] = sum(d[0].text.count("e") for d in out)
        assert all(d[0].guide_values is not None for d in out)
    assert counts[5.0] > counts[0.0]


def test_rag_cbf_best_of_n_compose(llama, tmp_path: Path) -> None:
    model, tok = llama
    kb = tmp_path / "kb.jsonl"
    kb.write_text(
        json.dumps({"id": "s", "title": "sky", "text": "the sky is blue"})
        + "\n"
        + json.dumps({"id": "d", "title": "dog", "text": "a dog is here"})
        + "\n"
    )
    judge = FunctionJudge(lambda p, r, rec: [float(len(x)) for x in r])
    dec = Decoder(
        model,
        tok,
        sampling=SamplingConfig(max_new_tokens=10, temperature=1.0),
        cbf=CBFFilter(function_safety(vowel_h), CBFConfig(alpha=0.3, top_k=8)),
        rag=build_rag(kb, RAGConfig(k=1)),
        judge=judge,
        best_of=4,
    )
    res = dec.generate(["what colour is the sky", "where is the dog"], num_samples=2, seed=3)
    assert [r.passages[0].passage.id for r in res] == ["s", "d"]  # type: ignore[index]
    assert "[1] sky: the sky is blue" in str(res[0].policy_prompt)
    for r in res:
        assert len(r.samples) == 2
        for s in r.samples:
            b = s.best_of_n
            assert b is not None and b.n == 4 and len(b.scores) == 4
            assert b.scores[b.chosen] == max(b.scores) == float(len(s.text))
            assert s.cbf is not None and "interventions" in s.cbf
    # Scorers see the user's prompt, not the passages: re-judging gives the same choice.
    again = select_best_of_n(judge, [res[0].prompt], [[res[0].samples[0].text]])
    assert again[0].scores == [float(len(res[0].samples[0].text))]


def cli_app() -> typer.Typer:
    from alignkit.decoding.cli import register

    app = typer.Typer()
    register(app)
    return app


def test_generate_cli_samples_feed_the_feedback_importer(tiny_llama: Path, tmp_path: Path) -> None:
    from alignkit.feedback.importer import read_candidates

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(PROMPTS))
    )
    out = tmp_path / "out.jsonl"
    r = CliRunner().invoke(
        cli_app(),
        [
            "generate",
            "--model",
            str(tiny_llama),
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "--num-samples",
            "3",
            "--max-new-tokens",
            "8",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == [0, 1, 2, 3]
    assert all(len(row["responses"]) == 3 and len(row["diagnostics"]) == 3 for row in rows)
    items = read_candidates(out).items
    assert len(items) == 4 and items[0].metadata["id"] == 0


def test_generate_cli_with_a_cost_model_filter_and_judge(tiny_llama: Path, tmp_path: Path) -> None:
    from alignkit.models.heads import load_scalar_model
    from alignkit.models.load import save_hf_folder

    cm, tok = load_scalar_model(ModelConfig(path=str(tiny_llama)), kind="cost", for_training=False)
    with torch.no_grad():
        cm.head.weight.mul_(
            0
        )  # cost 0 everywhere → h = margin − 0; margin −1 blocks all, log 2 − 1/2 = 0.193147
    save_hf_folder(cm, tok, tmp_path / "cm")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hello"}) + "\n")
    out = tmp_path / "out.jsonl"
    args = [
        "generate",
        "--model",
        str(tiny_llama),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--safety-filter",
        "cbf",
        "--safety-model",
        str(tmp_path / "cm"),
        "--max-new-tokens",
        "6",
        "--best-of",
        "2",
        "--judge",
        str(tmp_path / "cm"),
    ]
    r = CliRunner().invoke(cli_app(), [*args, "--safety-margin", "-1"])
    assert r.exit_code == 0, r.output
    row = json.loads(out.read_text())
    assert row["diagnostics"]["cbf"]["fallback"] == "refuse"
    assert row["response"].startswith("I can't help with that")
    assert row["diagnostics"]["best_of_n"]["n"] == 2
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["cbf_fallbacks"] == 1 and summary["best_of_n_kl_bound"] == pytest.approx(
        0.193147, abs=1e-6
    )
    r = CliRunner().invoke(cli_app(), [*args, "--safety-margin", "1"])
    assert r.exit_code == 0, r.output
    row = json.loads(out.read_text())
    assert row["diagnostics"]["cbf"]["fallback"] is None
    # cost 0, margin 1 → the probability margin tanh(1/2)
    assert row["diagnostics"]["cbf"]["h"][0] == pytest.approx(0.462117, abs=1e-6)


def test_generate_cli_rejects_bad_combinations(tiny_llama: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hello"}) + "\n" + json.dumps({"nope": 1}) + "\n")
    base = [
        "generate",
        "--model",
        str(tiny_llama),
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "o.jsonl"),
    ]
    cases = [
        (["--best-of", "4"], "needs a judge"),
        (["--safety-filter", "cbf"], "needs --safety-model"),
        (["--best-of", "2", "--judge", "x", "--temperature", "0"], "temperature"),
        (["--alpha", "1.5"], "alpha"),
        ([], "p.jsonl:2"),
    ]
    for extra, msg in cases:
        r = CliRunner().invoke(cli_app(), [*base, *extra])
        assert r.exit_code == 2, (extra, r.output)
        assert msg in r.output, (extra, r.output)
