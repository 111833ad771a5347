"""Rollout backends: the vLLM adapter's contract, checked against a recording fake engine.

The real engine needs a CUDA GPU (tests/integration/test_vllm.py runs it where one exists);
here a fake ``LLM`` with vLLM's output layout pins what the adapter must do: send the same
prompt tokens as the HF path, turn outputs into Generations with EOS handling like HF, keep
the engine's sampled-token log-probs, push merged (LoRA) weights under base-model names and
drop the prefix cache after a push, and fall back to HF where vLLM cannot run.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from helpers import assert_close

from alignkit.data.tokenize import ChatFormatter
from alignkit.rollout.backends import HFBackend, logprob_mismatch, make_backend
from alignkit.rollout.generate import SamplingConfig
from alignkit.rollout.vllm_backend import EngineGeneration, VLLMBackend


class FakeParams:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class FakeEngineModel:
    def __init__(self) -> None:
        self.loaded: dict[str, torch.Tensor] = {}

    def load_weights(self, weights: Any) -> None:
        self.loaded = {n: t.clone() for n, t in weights}


class FakeLLM:
    """vLLM's LLM as the adapter uses it: generate(prompts, params) -> RequestOutputs."""

    def __init__(self, eos: int) -> None:
        self.eos = eos
        self.requests: list[Any] = []
        self.resets = 0
        self.model = FakeEngineModel()
        runner = SimpleNamespace(model=self.model)
        worker = SimpleNamespace(model_runner=runner)
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(worker=worker))
        )

    def reset_prefix_cache(self) -> None:
        self.resets += 1

    def generate(self, prompts: list[dict], params: FakeParams, use_tqdm: bool) -> list[Any]:
        self.requests.append((prompts, params))
        outs = []
        for k, _ in enumerate(prompts):
            comps = []
            for j in range(params.n):
                # sample j of prompt k: stops with EOS when j is even, runs out otherwise
                ids = [5 + k, 6 + j] + ([self.eos] if j % 2 == 0 else [7])
                lps = [{t: SimpleNamespace(logprob=-0.1 * (i + 1))} for i, t in enumerate(ids)]
                reason = "stop" if j % 2 == 0 else "length"
                comps.append(SimpleNamespace(token_ids=ids, finish_reason=reason, logprobs=lps))
            outs.append(SimpleNamespace(outputs=comps))
        return outs


def test_vllm_adapter_turns_engine_outputs_into_generations(tiny_llama: Path) -> None:
    from alignkit.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    llm = FakeLLM(tok.eos_token_id)
    backend = VLLMBackend(llm, FakeParams, tok, "auto")
    sampling = SamplingConfig(max_new_tokens=3, temperature=0.7, top_k=0, max_prompt_length=4)
    gens = backend.generate(None, ["what is one plus one", "hello"], sampling, 2, seed=11)  # type: ignore[arg-type]
    prompts, params = llm.requests[0]
    expected = [
        ChatFormatter(tok, "auto").prompt_ids(p)[-4:] for p in ["what is one plus one", "hello"]
    ]
    assert [p["prompt_token_ids"] for p in prompts] == expected  # same tokens as the HF path
    assert (params.n, params.temperature, params.top_k, params.max_tokens, params.seed) == (
        2,
        0.7,
        -1,
        3,
        11,
    )
    assert params.logprobs == 0
    g = gens[1][0]
    assert isinstance(g, EngineGeneration) and g.prompt_ids == expected[1]
    assert g.completion_ids == [6, 6, tok.eos_token_id] and g.finished
    assert not gens[1][1].finished and gens[1][1].completion_ids == [6, 7, 7]
    assert_close(g.logprobs, [-0.1, -0.2, -0.3])


def test_weight_push_merges_lora_and_resets_the_prefix_cache(tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM

    from alignkit.config import LoraConfig
    from alignkit.models.load import apply_lora, load_tokenizer

    tok = load_tokenizer(str(tiny_llama))
    llm = FakeLLM(tok.eos_token_id)
    backend = VLLMBackend(llm, FakeParams, tok, "auto")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    plain_names = set(base.state_dict())
    policy = apply_lora(base, LoraConfig(enabled=True, r=2))
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.fill_(0.05)
    before = {n: p.clone() for n, p in policy.named_parameters()}
    backend.update_weights(policy)
    assert set(llm.model.loaded) == plain_names  # base-model names, no lora_* tensors
    name = "model.layers.0.self_attn.q_proj.weight"
    merged = policy.base_model.model.model.layers[0].self_attn.q_proj
    delta = (merged.lora_B["default"].weight @ merged.lora_A["default"].weight) * merged.scaling[
        "default"
    ]
    torch.testing.assert_close(llm.model.loaded[name], merged.base_layer.weight + delta)
    for n, p in policy.named_parameters():  # the policy itself is untouched (no merge drift)
        assert torch.equal(p, before[n]), n
    assert llm.resets == 1 and backend.weight_pushes == 1


def test_logprob_mismatch_reads_the_sampled_tokens_of_the_shifted_grid() -> None:
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    trainer = torch.tensor([[9.0, -1.0, -2.0, 9.0], [9.0, 9.0, -0.5, -0.25]])
    gap = logprob_mismatch([[-1.1, -2.0], [-0.5, -0.5]], trainer, mask)
    assert_close(gap["rollout/logprob_diff_mean"], (0.1 + 0.0 + 0.0 + 0.25) / 4)
    assert_close(gap["rollout/logprob_diff_max"], 0.25)
    assert_close(gap["rollout/seq_k1_engine_vs_trainer"], (-0.1 + -0.25) / 2)
    assert logprob_mismatch([[], []], trainer, mask) == {}  # HF: nothing to compare


def test_vllm_falls_back_to_hf_where_it_cannot_run(
    tiny_llama: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from alignkit.rollout import vllm_backend

    monkeypatch.setattr(vllm_backend, "vllm_unavailable_reason", lambda: "no GPU here")
    with caplog.at_level("WARNING", logger="alignkit"):
        backend = make_backend("vllm", str(tiny_llama), object(), "auto", None, 64)
    assert isinstance(backend, HFBackend) and backend.name == "hf"
    assert "no GPU here" in caplog.text and "falling back" in caplog.text
