"""SFT end to end on tiny random models of three architectures (STYLE.md habit 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_close
from safetensors.torch import load_file
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.config import SFTConfig, load_config
from alignkit.engine.tracking import read_metrics
from alignkit.recipes.sft import run_sft

runner = CliRunner()


def cfg_for(model: Path, data: Path, out: Path, *extra: str) -> SFTConfig:
    base = [
        f"model.path={model}",
        f"data.path={data}",
        f"train.output_dir={out}",
        "train.lr=5e-3",
        "train.batch_size=8",
        "train.max_steps=12",
        "train.progress=false",
        "data.max_length=64",
    ]
    return load_config(SFTConfig, None, base + list(extra))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_sft_learns_saves_and_reloads(tiny_models, sft_file, tmp_path, arch) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = run_sft(
        cfg_for(
            tiny_models[arch], sft_file, tmp_path / "out", "train.lr=1e-2", "train.max_steps=20"
        )
    )
    rows = read_metrics(out / "metrics.jsonl")
    assert rows[-1]["loss"] < rows[0]["loss"] * 0.7, "loss must fall"
    before, after = weights(tiny_models[arch]), weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    for f in ("config.yaml", "summary.json", "metrics.jsonl", "config.json"):
        assert (out / f).exists(), f
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").glob(".tmp*"))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "what is 2 plus 3"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    gen = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > ids["input_ids"].shape[1]


def test_lora_trains_adapters_only_and_saves_merged(tiny_llama, sft_file, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    out = run_sft(
        cfg_for(
            tiny_llama, sft_file, tmp_path / "lora", "model.lora.enabled=true", "model.lora.r=4"
        )
    )
    assert (out / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(out))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    diff = [
        n
        for (n, p), (_, q) in zip(merged.named_parameters(), base.named_parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert diff and all("proj" in n for n in diff), "only adapted linear layers change"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trainable_params"] < sum(p.numel() for p in base.parameters()) / 2


def test_freeze_first_layers_and_embeddings(tiny_llama, sft_file, tmp_path) -> None:
    out = run_sft(
        cfg_for(
            tiny_llama,
            sft_file,
            tmp_path / "fz",
            "model.freeze.first_n_layers=1",
            "model.freeze.embeddings=true",
        )
    )
    before, after = weights(tiny_llama), weights(out)
    frozen = [k for k in before if k.startswith("model.layers.0.") or "embed_tokens" in k]
    trained = [k for k in before if k.startswith("model.layers.1.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_accumulation_invariance(tiny_llama, sft_file, tmp_path) -> None:
    """Batch 1 × accumulation 4 equals batch 4 × accumulation 1 (token-normalised)."""
    a = run_sft(
        cfg_for(
            tiny_llama,
            sft_file,
            tmp_path / "a",
            "train.batch_size=1",
            "train.grad_accum=4",
            "train.max_steps=5",
        )
    )
    b = run_sft(
        cfg_for(
            tiny_llama,
            sft_file,
            tmp_path / "b",
            "train.batch_size=4",
            "train.grad_accum=1",
            "train.max_steps=5",
        )
    )
    la = [r["loss"] for r in read_metrics(a / "metrics.jsonl")]
    lb = [r["loss"] for r in read_metrics(b / "metrics.jsonl")]
    assert len(la) == len(lb) == 5
    assert_close(la, lb)
    # Weights too: the 1e-5 bound, applied absolutely. Summation order differs between
    # the two layouts (fp32 noise ~1e-7 in gradients); Adam divides by sqrt(v)+eps, which turns
    # that noise on near-zero gradients into update differences of a few 1e-6 at lr 5e-3.
    wa, wb = weights(a), weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-5)


def test_packed_training_matches_padded(tiny_llama, sft_file, tmp_path) -> None:
    a = run_sft(cfg_for(tiny_llama, sft_file, tmp_path / "pad", "train.max_steps=4"))
    b = run_sft(
        cfg_for(tiny_llama, sft_file, tmp_path / "pack", "train.max_steps=4", "data.packing=true")
    )
    assert_close(
        [r["loss"] for r in read_metrics(a / "metrics.jsonl")],
        [r["loss"] for r in read_metrics(b / "metrics.jsonl")],
    )


def test_resume_after_crash_gives_identical_weights(
    tiny_llama, sft_file, tmp_path, monkeypatch
) -> None:
    full = run_sft(
        cfg_for(
            tiny_llama, sft_file, tmp_path / "full", "train.max_steps=6", "model.lora.dropout=0.0"
        )
    )

    from alignkit.engine import loop

    original = loop.Trainer.train_step

    def crash_at_5(self, *a, **k):
        if self.step == 4:
            raise KeyboardInterrupt("simulated crash")
        return original(self, *a, **k)

    crashed_dir = tmp_path / "crashed"
    monkeypatch.setattr(loop.Trainer, "train_step", crash_at_5)
    with pytest.raises(KeyboardInterrupt):
        run_sft(
            cfg_for(tiny_llama, sft_file, crashed_dir, "train.max_steps=6", "train.save_every=3")
        )
    ckpts = sorted((crashed_dir / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["step-00000003"]
    assert not (crashed_dir / "model.safetensors").exists(), "no final model from a crashed run"
    monkeypatch.setattr(loop.Trainer, "train_step", original)
    resumed = run_sft(
        cfg_for(tiny_llama, sft_file, crashed_dir, "train.max_steps=6", "train.save_every=3")
    )
    wf, wr = weights(full), weights(resumed)
    for k in wf:
        torch.testing.assert_close(wf[k], wr[k], rtol=1e-6, atol=1e-7)
    steps = [r["step"] for r in read_metrics(resumed / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6], "metrics log has no duplicated or missing steps"


def test_sequential_stages(tiny_llama, sft_file, tmp_path) -> None:
    from tiny import write_jsonl

    domain = write_jsonl(
        tmp_path / "domain.jsonl",
        [{"prompt": "name a city", "completion": "the capital city"}] * 16,
    )
    cfg = load_config(
        SFTConfig,
        None,
        [
            f"model.path={tiny_llama}",
            f"train.output_dir={tmp_path / 'staged'}",
            "train.progress=false",
            "train.lr=5e-3",
            f"stages=[{{name: general, data: {{path: {sft_file}}}, max_steps: 6}}, "
            f"{{name: domain, data: {{path: {domain}}}, max_steps: 4, lr: 0.001}}]",
        ],
    )
    out = run_sft(cfg)
    g, d = out / "stage-0-general", out / "stage-1-domain"
    assert (g / "model.safetensors").exists() and (d / "model.safetensors").exists()
    # Stage 2 starts from stage 1's weights: its first loss on stage-1-like data is already low.
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["stage"] for r in rows].count("general") == 6 and [r["stage"] for r in rows].count(
        "domain"
    ) == 4
    assert rows[6]["lr"] <= 0.001
    wd, wo = weights(d), weights(out)
    assert all(torch.equal(wd[k], wo[k]) for k in wd)
    # Rerun: finished stages are skipped, not retrained.
    again = run_sft(cfg)
    assert len(read_metrics(again / "metrics.jsonl")) == 10


def test_cli_sft_and_help(tiny_llama, sft_file, tmp_path) -> None:
    res = runner.invoke(app, ["sft", "--help"])
    assert res.exit_code == 0 and "train.lr" in res.output and "model.lora.r" in res.output
    res = runner.invoke(
        app,
        [
            "sft",
            f"model.path={tiny_llama}",
            f"data.path={sft_file}",
            f"train.output_dir={tmp_path / 'o'}",
            "train.max_steps=2",
            "train.progress=false",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["data.path=/nope.jsonl"], "not found"),
        (["train.lr=-1"], "train.lr"),
        (["model.path=/nope"], "/nope not found"),
        (["data.max_length=3"], "max_length"),
    ],
)
def test_cli_bad_input_gives_one_clear_message(
    tiny_llama, sft_file, tmp_path, args, message
) -> None:
    base = [
        f"model.path={tiny_llama}",
        f"data.path={sft_file}",
        f"train.output_dir={tmp_path / 'bad'}",
    ]
    res = runner.invoke(app, ["sft", *base, *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_malformed_line_stops_before_training(tiny_llama, tmp_path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    res = runner.invoke(
        app,
        ["sft", f"model.path={tiny_llama}", f"data.path={f}", f"train.output_dir={tmp_path / 'x'}"],
    )
    assert res.exit_code == 2 and "d.jsonl:2" in res.output
    assert not (tmp_path / "x" / "metrics.jsonl").exists()


def test_check_data_reports_masks(tiny_llama, sft_file, tmp_path) -> None:
    res = runner.invoke(
        app,
        ["check-data", "--model", str(tiny_llama), "--data", str(sft_file), "--max-length", "20"],
    )
    assert res.exit_code == 0, res.output
    assert "empty assistant mask: 0" in res.output and "records: 64" in res.output
    assert "truncated: 64" in res.output and "length p50" in res.output
    bad_template = tmp_path / "t.jinja"
    bad_template.write_text(
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"
    )
    from alignkit.data.check import check_dataset

    report = check_dataset(str(tiny_llama), str(sft_file), 64, str(bad_template))
    assert report["empty_mask_share"] == 1.0


def test_tokenizer_without_pad_uses_eos(tiny_llama, tmp_path) -> None:
    from transformers import AutoTokenizer

    from alignkit.models.load import ModelError, ensure_pad_token

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    tok.pad_token = None
    ensure_pad_token(tok)
    assert tok.pad_token_id == tok.eos_token_id
    tok.eos_token = None
    tok.pad_token = None
    with pytest.raises(ModelError, match="neither a pad nor an EOS"):
        ensure_pad_token(tok)


def test_pickle_weights_need_explicit_flag(tiny_llama, tmp_path) -> None:
    import shutil

    from transformers import AutoModelForCausalLM

    from alignkit.config import ModelConfig
    from alignkit.models.load import ModelError, load_causal_lm

    d = tmp_path / "pkl"
    shutil.copytree(tiny_llama, d)
    model = AutoModelForCausalLM.from_pretrained(str(d))
    (d / "model.safetensors").unlink()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    with pytest.raises(ModelError, match="allow_pickle"):
        load_causal_lm(ModelConfig(path=str(d)))
    m, _ = load_causal_lm(ModelConfig(path=str(d), allow_pickle=True))
    assert m is not None


def test_tensorboard_sink_when_asked(tiny_llama, sft_file, tmp_path) -> None:
    pytest.importorskip(
        "tensorboard", reason="tensorboard not installed (pip install 'alignkit[tensorboard]')"
    )
    out = run_sft(
        cfg_for(
            tiny_llama,
            sft_file,
            tmp_path / "tb",
            "train.max_steps=2",
            "train.report_to=[jsonl,tensorboard]",
        )
    )
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(read_metrics(out / "metrics.jsonl")) == 2
