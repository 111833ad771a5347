"""vLLM as the rollout engine of online RL (``rollout.backend=vllm``, ``alignkit[vllm]``).

Why: sampling dominates an RL iteration, and vLLM's paged KV cache and continuous batching
sample several times faster than transformers ``generate``. How it fits:

* **colocated**: the engine lives in the training process, on the same GPU, holding
  ``rollout.vllm.gpu_memory_utilization`` of it (V1 multiprocessing off, so its model is
  reachable in-process);
* **same tokens**: prompts are rendered by the same :class:`ChatFormatter` as the HF path and
  sent as token ids, so the trainer scores exactly what the engine saw;
* **weights pushed**: after every policy update :meth:`VLLMBackend.update_weights` loads the
  policy's tensors into the engine's model (a LoRA layer as W + BA·s) and drops the engine's
  prefix cache, whose keys/values belong to the old weights;
* **log-probs recomputed**: the engine's per-token log-probs are kept on each generation
  (``processed`` log-probs, i.e. after temperature, where the vLLM version supports it) only
  to log the mismatch with the trainer's recomputation; training never uses them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from alignkit.data.records import Text
from alignkit.data.tokenize import ChatFormatter
from alignkit.models.load import is_peft
from alignkit.rollout.generate import Generation, SamplingConfig

log = logging.getLogger("alignkit")

# Where the engine's torch model sits, across vLLM versions (V0 engine, V1 in-process core).
_MODEL_PATHS = (
    "llm_engine.model_executor.driver_worker.worker.model_runner.model",
    "llm_engine.model_executor.driver_worker.model_runner.model",
    "llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner.model",
    "llm_engine.engine_core.engine_core.model_executor.driver_worker.model_runner.model",
)


def vllm_unavailable_reason() -> str | None:
    """Why vLLM cannot run here (None when it can): it needs the package and a CUDA GPU."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install 'alignkit[vllm]')"
    if not torch.cuda.is_available():
        return "vllm needs a CUDA GPU and none is visible"
    return None


@dataclass
class EngineGeneration(Generation):
    """A generation plus the engine's log-prob of each sampled token (for the mismatch log)."""

    logprobs: list[float] = field(default_factory=list)


class VLLMBackend:
    name = "vllm"

    def __init__(
        self, llm: Any, sampling_params_cls: Any, tokenizer: Any, chat_template: str
    ) -> None:
        self.llm = llm
        self.sampling_params_cls = sampling_params_cls
        self.tokenizer = tokenizer
        self.fmt = ChatFormatter(tokenizer, chat_template)
        self.weight_pushes = 0

    @classmethod
    def create(
        cls, model_path: str, tokenizer: Any, chat_template: str, settings: Any, max_len: int
    ) -> VLLMBackend:
        # In-process engine core: the weight push below needs the engine's model object.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM, SamplingParams

        kwargs: dict[str, Any] = {
            "model": model_path,
            "tokenizer": model_path,
            "dtype": "auto",
            "gpu_memory_utilization": settings.gpu_memory_utilization,
            "enforce_eager": settings.enforce_eager,
            "max_model_len": settings.max_model_len or max_len,
            "enable_prefix_caching": True,
        }
        try:  # log-probs after temperature, comparable with the trainer's (vLLM >= 0.10.2)
            llm = LLM(**kwargs, logprobs_mode="processed_logprobs")
        except TypeError:
            log.warning(
                "this vLLM reports raw log-probs (before temperature); the logged engine/trainer "
                "mismatch is meaningful only at rollout.temperature=1"
            )
            llm = LLM(**kwargs)
        return cls(llm, SamplingParams, tokenizer, chat_template)

    # -- weights --------------------------------------------------------------------------

    def engine_model(self) -> Any:
        for path in _MODEL_PATHS:
            obj: Any = self.llm
            for part in path.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    break
            if obj is not None and hasattr(obj, "load_weights"):
                return obj
        raise RuntimeError(
            "cannot reach the vLLM engine's model to push weights (tried "
            + ", ".join(_MODEL_PATHS)
            + "); this vLLM version lays its engine out differently: use rollout.backend=hf"
        )

    def update_weights(self, policy: nn.Module) -> None:
        """Load the policy's current weights into the engine (HF names; vLLM maps them)."""
        target = self.engine_model()
        with _hf_named_weights(policy) as weights:
            target.load_weights(weights)
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset):
            reset()  # cached keys/values were computed with the old weights
        self.weight_pushes += 1

    # -- sampling ---------------------------------------------------------------------------

    def generate(
        self,
        policy: nn.Module,
        prompts: Sequence[Text],
        sampling: SamplingConfig,
        num_samples: int,
        seed: int | None,
    ) -> list[list[Generation]]:
        encoded = [self.fmt.prompt_ids(p)[-sampling.max_prompt_length :] for p in prompts]
        greedy = sampling.temperature == 0.0
        params = self.sampling_params_cls(
            n=num_samples,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=-1 if greedy or sampling.top_k == 0 else sampling.top_k,
            max_tokens=sampling.max_new_tokens,
            seed=seed,
            logprobs=0,  # the sampled token's log-prob only
        )
        outs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=False
        )
        eos = self.tokenizer.eos_token_id
        result: list[list[Generation]] = []
        for ids, out in zip(encoded, outs, strict=True):
            row: list[Generation] = []
            for c in out.outputs:
                comp = list(c.token_ids)
                finished = c.finish_reason == "stop"
                if finished and (not comp or comp[-1] != eos):
                    comp.append(eos)  # as on the HF path: the policy must learn to stop
                text = self.tokenizer.decode(comp, skip_special_tokens=True).strip()
                row.append(EngineGeneration(ids, comp, text, finished, _sampled_logprobs(c, comp)))
            result.append(row)
        return result


def _sampled_logprobs(completion: Any, token_ids: list[int]) -> list[float]:
    """The log-prob of each sampled token from vLLM's per-position {token: Logprob} dicts."""
    if not completion.logprobs:
        return []
    out = []
    for tok, entry in zip(token_ids, completion.logprobs, strict=False):
        lp = entry[tok]
        out.append(float(getattr(lp, "logprob", lp)))
    return out


@contextlib.contextmanager
def _hf_named_weights(policy: nn.Module) -> Iterator[Iterator[tuple[str, torch.Tensor]]]:
    """(name, tensor) pairs in the base model's Hugging Face names. A LoRA layer is sent as
    W + ΔW (peft's ``get_delta_weight``), computed beside the model rather than by merging
    and unmerging it in place, which would leave rounding drift in W after every push."""
    if not is_peft(policy):
        yield ((n, t.detach()) for n, t in policy.state_dict().items())
        return
    modules = dict(policy.named_modules())
    pairs = []
    with torch.no_grad():
        for name, t in policy.state_dict().items():
            if "lora_" in name:
                continue
            if name.endswith(".base_layer.weight"):
                layer = modules[name.removesuffix(".base_layer.weight")]
                for adapter in layer.active_adapters:  # type: ignore[union-attr]
                    if adapter in layer.lora_A:  # type: ignore[operator]
                        t = t + layer.get_delta_weight(adapter).to(t.dtype)  # type: ignore[operator]
            clean = name.removeprefix("base_model.model.").replace(".base_layer", "")
            pairs.append((clean, t.detach()))
    yield iter(pairs)


__all__ = ["EngineGeneration", "VLLMBackend", "vllm_unavailable_reason"]
