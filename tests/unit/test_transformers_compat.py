"""Calls whose names transformers is changing go through one helper that uses the current name
(no FutureWarning today) and still works on releases that only know the old one."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

from alignkit.config import ModelConfig
from alignkit.decoding.stepwise import cache_kwarg
from alignkit.models.load import enable_activation_checkpointing, load_causal_lm


def test_activation_checkpointing_and_kv_cache_use_the_current_names(tiny_llama: Path) -> None:
    model, _ = load_causal_lm(ModelConfig(path=str(tiny_llama)), for_training=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        enable_activation_checkpointing(model)
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    name = cache_kwarg(model)
    assert name in inspect.signature(model.forward).parameters
