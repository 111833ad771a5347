"""vLLM rollouts for real: needs the ``vllm`` package and a CUDA GPU, skipped (with the reason)
elsewhere. tests/unit/test_rollout_backends.py covers the adapter's contract on any machine.

What is checked: the engine samples from the weights the trainer pushes (greedy decoding
after a push equals transformers greedy decoding of the same weights), its log-probs agree
with the trainer's recomputation, and ``alignkit grpo rollout.backend=vllm`` runs end to end
and logs the engine/trainer mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignkit.rollout.vllm_backend import vllm_unavailable_reason

REASON = vllm_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"vLLM test skipped: {REASON}")


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama whose head size (64) vLLM's attention kernels accept."""
    from tiny import make_tokenizer
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("vllm")
    tok_dir = make_tokenizer(root / "tok")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(str(root / "model"), safe_serialization=True)
    tok.save_pretrained(str(root / "model"))
    return root / "model"


def test_engine_follows_pushed_weights_and_matches_trainer_logprobs(vllm_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    from alignkit.configs.rl import VLLMSettings
    from alignkit.models.load import load_tokenizer
    from alignkit.recipes.online_rl import build_rollout, logprobs_of
    from alignkit.rollout.backends import logprob_mismatch
    from alignkit.rollout.generate import SamplingConfig, generate
    from alignkit.rollout.vllm_backend import VLLMBackend

    tok = load_tokenizer(str(vllm_model))
    settings = VLLMSettings(gpu_memory_utilization=0.25, enforce_eager=True)
    backend = VLLMBackend.create(str(vllm_model), tok, "auto", settings, 128)
    policy = AutoModelForCausalLM.from_pretrained(str(vllm_model), dtype=torch.bfloat16).cuda()
    with torch.no_grad():  # a different policy from the checkpoint the engine loaded
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    backend.update_weights(policy)
    prompts = ["what is one plus one", "name a color", "hello there", "count to three"]
    greedy = SamplingConfig(max_new_tokens=12, temperature=0.0)
    engine = backend.generate(policy, prompts, greedy, 1, seed=0)
    hf = generate(policy, tok, prompts, greedy, 1)
    same = sum(e[0].completion_ids == h[0].completion_ids for e, h in zip(engine, hf, strict=True))
    assert same >= 3, "greedy decoding must follow the pushed weights"

    sampled = backend.generate(policy, prompts, SamplingConfig(max_new_tokens=12), 4, seed=1)
    roll = build_rollout(sampled, prompts, [{} for _ in prompts], tok.pad_token_id)
    trainer_lp, _ = logprobs_of(policy, roll, 8, 1.0, torch.device("cuda"))
    gap = logprob_mismatch([g.logprobs for row in sampled for g in row], trainer_lp, roll.mask)
    print("engine/trainer log-prob gap:", gap)
    assert gap["rollout/logprob_diff_mean"] < 0.05  # bf16 kernels differ; stale weights do not


def test_grpo_runs_with_vllm_rollouts(vllm_model: Path, tmp_path: Path) -> None:
    from tiny import write_jsonl

    from alignkit.config import load_config
    from alignkit.configs.rl import GRPOConfig
    from alignkit.engine.tracking import read_metrics
    from alignkit.recipes.online_rl import run_rl

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in ["hi", "name a color"]])
    cfg = load_config(
        GRPOConfig,
        None,
        [
            f"model.path={vllm_model}",
            f"data.path={prompts}",
            f"train.output_dir={tmp_path / 'run'}",
            "reward.function=rewards_for_tests:count_e",
            "rollout.backend=vllm",
            "rollout.vllm.gpu_memory_utilization=0.25",
            "rollout.vllm.enforce_eager=true",
            "rollout.prompts_per_step=2",
            "rollout.num_generations=4",
            "rollout.max_new_tokens=8",
            "algo.minibatch_size=8",
            "train.max_steps=2",
            "train.progress=false",
        ],
    )
    out = run_rl(cfg)
    assert json.loads((out / "summary.json").read_text())["rollout_backend"] == "vllm"
    rows = read_metrics(out / "metrics.jsonl")
    assert all("rollout/logprob_diff_mean" in r for r in rows)
    assert rows[-1]["rollout/logprob_diff_mean"] < 0.05
