"""``alignkit plan``'s arithmetic: exact parameter counts from config.json alone, and each
memory item against its documented formula on a shape with round numbers (hand-checkable).
tests/integration/test_planner_memory.py compares whole plans with measured training steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from alignkit.planner import (
    GiB,
    ModelShape,
    PlanError,
    PlanInput,
    models_for,
    parse_size,
    plan_memory,
    read_config,
    shape_from_config,
)
from alignkit.planner_cli import register

# A round shape: h 1000, I 3000, 10 layers, 10 heads of 100 (kv 5), V 10 000, untied.
ROUND = ModelShape("llama", 10_000, 1000, 10, 10, 5, 100, 3000)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_parameter_counts_from_config_json_are_exact(
    tiny_models: dict[str, Path], arch: str
) -> None:
    """Causal LM, LoRA adapters (all-linear) and the scalar-head reward/value model, each equal
    to what transformers / peft / alignkit instantiate from the same folder."""
    from transformers import AutoModelForCausalLM

    from alignkit.config import LoraConfig, ModelConfig
    from alignkit.models.heads import load_scalar_model
    from alignkit.models.load import apply_lora

    folder = tiny_models[arch]
    shape = shape_from_config(read_config(folder / "config.json"))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert shape.params == sum(p.numel() for p in model.parameters())
    lora = apply_lora(model, LoraConfig(enabled=True, r=4))
    assert shape.lora_params(4) == sum(p.numel() for p in lora.parameters() if p.requires_grad)
    scalar, _ = load_scalar_model(ModelConfig(path=str(folder)), kind="value", for_training=True)
    assert shape.scalar_params == sum(p.numel() for p in scalar.parameters())


def test_llama3_8b_counts_its_published_size(tmp_path: Path) -> None:
    cfg = {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert shape_from_config(read_config(tmp_path)).params == 8_030_261_248


def test_round_shape_items_follow_the_formulas() -> None:
    p = ROUND.params
    # embed + head 2·V·h, per layer q/o 2·10⁶ + k/v 10⁶ + MLP 9·10⁶ + norms 2000, final norm
    assert p == 2 * 10_000 * 1000 + 10 * (3_000_000 + 9_000_000 + 2000) + 1000
    plan = plan_memory(ROUND, PlanInput("sft", batch_size=2, seq_len=100, dtype="bf16"))
    items = {i.name: i.bytes for i in plan.items}
    assert items["policy: weights"] == 2 * p
    assert items["policy: gradients"] == 2 * p
    assert items["policy: optimizer state"] == 12 * p  # m, v and an fp32 master
    assert "optimizer step temporaries" not in items  # fused AdamW updates in place
    a_layer = 5 * 1000 + (3 * 10 + 2 * 5) * 100 + 10 + 2 + 4 * 3000
    assert items["activations"] == 200 * (10 * a_layer + 3 * 1000) * 2
    assert items["logits (loss)"] == 200 * 10_000 * 14
    assert plan.peak == 14 * p + 2 * p + items["activations"] + items["logits (loss)"]


def test_fsdp_step_holds_a_foreach_temporary_of_the_shard() -> None:
    p = ROUND.params
    inp = PlanInput("sft", batch_size=1, seq_len=10, zero=3, fsdp=True, gpus=4)
    plan = plan_memory(ROUND, inp)
    items = {i.name: i.bytes for i in plan.items}
    assert items["optimizer step temporaries"] == p  # P/4 parameters × 4 bytes
    step = p // 2 + p  # sharded gradients + the temporary: more than a 10-token micro-batch
    assert plan.phase_total("step") == step > plan.phase_total("train")
    assert plan.peak == plan.phase_total("persistent") + step
    with pytest.raises(PlanError, match="--fsdp"):
        plan_memory(ROUND, PlanInput("sft", zero=2, fsdp=True))


def test_zero_stages_shard_optimizer_then_gradients_then_weights() -> None:
    base = dict(recipe="sft", gpus=4, dtype="bf16", batch_size=1, seq_len=10)
    got = {}
    for z in range(4):
        items = {i.name: i.bytes for i in plan_memory(ROUND, PlanInput(zero=z, **base)).items}
        got[z] = (
            items["policy: optimizer state"],
            items["policy: gradients"],
            items["policy: weights"],
        )
    p = ROUND.params
    assert got[0] == (12 * p, 2 * p, 2 * p)
    assert got[1] == (3 * p, 2 * p, 2 * p)
    assert got[2] == (3 * p, p // 2, 2 * p)
    assert got[3] == (3 * p, p // 2, p // 2)
    z3 = {i.name: i.bytes for i in plan_memory(ROUND, PlanInput(zero=3, **base)).items}
    assert z3["policy: gathered layers"] == 2 * ROUND.layer_params * 2


def test_recipes_hold_the_models_they_need() -> None:
    names = lambda r, lora=False: [n for n, _, _ in models_for(r, lora)]  # noqa: E731
    assert names("sft") == ["policy"]
    assert names("dpo") == ["policy"]  # reference log-probs are precomputed by default
    assert [n for n, _, _ in models_for("dpo", False, "live")] == ["policy", "reference"]
    assert names("grpo") == ["policy", "reference", "reward model"]
    assert names("grpo", lora=True) == ["policy", "reward model"]  # base = reference
    assert names("ppo") == ["policy", "reference", "reward model", "critic"]
    assert names("safe-rlhf") == [
        "policy",
        "reference",
        "reward model",
        "critic",
        "cost model",
        "cost critic",
    ]
    assert [n for n, _, _ in models_for("grpo", False, reward_model=False)] == [
        "policy",
        "reference",
    ]
    with pytest.raises(PlanError, match="one of sft"):
        models_for("rlhf", False)


def test_lora_and_checkpointing_shrink_what_they_should() -> None:
    full = plan_memory(ROUND, PlanInput("grpo", batch_size=4, seq_len=512))
    lora = plan_memory(ROUND, PlanInput("grpo", batch_size=4, seq_len=512, lora=True, lora_r=8))
    items = {i.name: i.bytes for i in lora.items}
    adapters = ROUND.lora_params(8)
    assert items["policy: LoRA adapters: optimizer state"] == 8 * adapters  # fp32, no master
    assert items["policy: base weights (frozen)"] == 2 * ROUND.params
    assert "reference: weights (frozen)" not in items and lora.peak < full.peak
    gc = plan_memory(
        ROUND, PlanInput("sft", batch_size=4, seq_len=512, gradient_checkpointing=True)
    )
    items = {i.name: i.bytes for i in gc.items}
    assert items["activations"] == 4 * 512 * (10 + 3) * 1000 * 2
    kv = {i.name: i.bytes for i in full.items}["KV cache (generation)"]
    assert kv == 4 * 512 * 10 * 2 * 5 * 100 * 2


def test_prompt_tokens_have_no_logits_in_sft_and_dpo_only() -> None:
    for recipe, shrinks in (("sft", True), ("dpo", True), ("grpo", False)):
        flat = {"shared_prompt": False}  # DPO: one padded row per response
        whole = {
            i.name: i.bytes
            for i in plan_memory(ROUND, PlanInput(recipe, seq_len=1000, **flat)).items
        }
        short = PlanInput(recipe, seq_len=1000, prompt_len=600, **flat)
        items = {i.name: i.bytes for i in plan_memory(ROUND, short).items}
        rows = 2 if recipe == "dpo" else 1
        expected = rows * (400 if shrinks else 1000) * 10_000 * 14
        assert items["logits (loss)"] == expected, recipe
        assert items["activations"] == whole["activations"]  # every token still runs the blocks


def test_dpo_counts_chosen_and_rejected_rows() -> None:
    sft = {i.name: i.bytes for i in plan_memory(ROUND, PlanInput("sft", batch_size=2)).items}
    dpo = {i.name: i.bytes for i in plan_memory(ROUND, PlanInput("dpo", batch_size=1)).items}
    assert dpo["activations"] == sft["activations"]


def test_dpo_shared_prompt_runs_the_prompt_once() -> None:
    def acts(shared: bool) -> int:
        inp = PlanInput("dpo", seq_len=1000, prompt_len=600, shared_prompt=shared)
        return {i.name: i.bytes for i in plan_memory(ROUND, inp).items}["activations"]

    # 2 rows × 1000 tokens padded; one row of 600 + 2 × 400 tokens shared.
    assert acts(True) * 2000 == acts(False) * 1400


def test_parse_size() -> None:
    assert parse_size("80GiB") == 80 * GiB == parse_size("80G") == parse_size("80 GB")
    assert parse_size("40960MiB") == 40 * GiB
    with pytest.raises(PlanError):
        parse_size("lots")


def _cli(*args: str) -> tuple[int, str]:
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `plan` a sub-command
    res = CliRunner().invoke(app, ["plan", *args], terminal_width=200)
    return res.exit_code, res.output


def test_cli_verdicts_name_the_largest_item(tiny_llama: Path, tmp_path: Path) -> None:
    code, out = _cli(
        "--model", str(tiny_llama), "--recipe", "ppo", "--batch-size", "2", "--seq-len", "64"
    )
    assert code == 0 and "fits" in out and "critic: optimizer state" in out
    cfg = json.loads((tiny_llama / "config.json").read_text())
    cfg.pop("head_dim", None)  # the tiny model's explicit head size would override hidden/heads
    cfg.update(  # Llama-3-70B
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=128256,
    )
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    code, out = _cli("--model", str(tmp_path), "--recipe", "sft", "--gpu-memory", "80GiB")
    assert code == 0 and "does not fit" in out
    assert "largest item: policy: optimizer state" in out and "--zero 1" in out
    code, out = _cli(
        "--model", str(tmp_path), "--recipe", "sft", "--json", "--zero", "3", "--gpus", "64"
    )
    data = json.loads(out)
    assert data["fits"] is True and data["params"] > 70e9
    assert {i["name"] for i in data["items"]} >= {"policy: weights", "activations"}


def test_cli_errors_name_the_option(tiny_llama: Path, tmp_path: Path) -> None:
    code, out = _cli("--model", str(tmp_path), "--recipe", "sft")
    assert code == 2 and "no config.json" in out
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "mystery-lm", "hidden_size": 64})
    )
    code, out = _cli("--model", str(tmp_path), "--recipe", "sft")
    assert code == 2 and "num_hidden_layers" in out
    for bad, message in (
        (["--zero", "5"], "--zero 5"),
        (["--dtype", "int8"], "--dtype"),
        (["--recipe", "rlhf"], "--recipe 'rlhf'"),
    ):
        args = ["--model", str(tiny_llama), "--recipe", "sft", *bad]
        code, out = _cli(*args)
        assert code == 2 and message in out, out


def test_plan_reads_no_weights(tiny_llama: Path, tmp_path: Path) -> None:
    """config.json alone is enough: a folder without weights plans the same."""
    only = tmp_path / "only"
    only.mkdir()
    (only / "config.json").write_text((tiny_llama / "config.json").read_text())
    a = plan_memory(shape_from_config(read_config(only)), PlanInput("dpo"))
    b = plan_memory(shape_from_config(read_config(tiny_llama)), PlanInput("dpo"))
    assert a.peak == b.peak > 0
