"""Multi-GPU plumbing that CPU tests can still pin down.

FSDP and DeepSpeed need GPUs, so these tests check what alignkit itself decides: that the
shipped accelerate configs go through accelerate's own launcher and plugins with the intended
settings, that :class:`Dist` hands accelerate the model and optimizer the way each engine
needs, drives DeepSpeed's accumulation boundary, and saves sharded models through
``accelerator.get_state_dict`` on the main process only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
import torch
from torch import nn

from alignkit.engine.distributed import Dist

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "accelerate"


def _launcher_env(name: str) -> dict[str, str]:
    """The environment ``accelerate launch --config_file <name>.yaml`` gives each process."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = ["--config_file", str(CONFIGS / f"{name}.yaml"), "-m", "alignkit", "sft"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = list(defaults.deepspeed_config)
        return prepare_deepspeed_cmd_env(args)[1]
    return prepare_multi_gpu_env(args)


def test_every_config_parses_with_accelerates_loader() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {
        n: load_config_from_file(str(CONFIGS / f"{n}.yaml")).distributed_type.name
        for n in ("ddp", "fsdp", "zero2", "zero3")
    }
    assert kinds == {
        "ddp": "MULTI_GPU",
        "fsdp": "FSDP",
        "zero2": "DEEPSPEED",
        "zero3": "DEEPSPEED",
    }
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == ["ddp", "fsdp", "zero2", "zero3"]


def test_fsdp_config_builds_the_intended_plugin() -> None:
    from accelerate.utils import FullyShardedDataParallelPlugin

    env = _launcher_env("fsdp")
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.cpu_ram_efficient_loading is False  # frozen models must load on every rank
    assert plugin.activation_checkpointing is False
    assert str(plugin.state_dict_type) == "StateDictType.SHARDED_STATE_DICT"


@pytest.mark.parametrize(("name", "stage", "gather16"), [("zero2", 2, False), ("zero3", 3, True)])
def test_deepspeed_configs_build_the_intended_plugin(name: str, stage: int, gather16: bool) -> None:
    from accelerate.utils import DeepSpeedPlugin

    with mock.patch.dict(os.environ, _launcher_env(name)):
        plugin = DeepSpeedPlugin()
    cfg = plugin.deepspeed_config
    assert plugin.zero_stage == stage
    assert cfg["gradient_accumulation_steps"] == 1  # alignkit accumulates and normalises
    assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is gather16
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "none"


# -- Dist against a recording accelerator ---------------------------------------------------


class FakeAccelerator:
    """Records what Dist asks of accelerate; ``engine`` picks the distributed type."""

    def __init__(self, engine: str, fsdp2: bool = False, main: bool = True, zero: int = 2) -> None:
        self.distributed_type = SimpleNamespace(name=engine)
        self.is_fsdp2 = fsdp2
        self.num_processes = 2
        self.process_index = 0 if main else 1
        self.is_main_process = main
        self.device = torch.device("cpu")
        self.mixed_precision = "bf16"
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._models: list[nn.Module] = []
        self.ds_config: dict[str, Any] = {"train_batch_size": "auto"}
        self.state = SimpleNamespace(
            deepspeed_plugin=SimpleNamespace(deepspeed_config=self.ds_config, zero_stage=zero)
        )

    def prepare(self, *objs: Any) -> Any:
        self.calls.append(("prepare", objs))
        self._models += [o for o in objs if isinstance(o, nn.Module)]
        return objs if len(objs) > 1 else objs[0]

    def prepare_model(self, model: nn.Module) -> nn.Module:
        self.calls.append(("prepare_model", (model,)))
        self._models.append(model)
        return model

    def unwrap_model(self, model: nn.Module) -> nn.Module:
        return model

    def get_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        self.calls.append(("get_state_dict", (model,)))
        return {k: v.clone() for k, v in model.state_dict().items()}

    def wait_for_everyone(self) -> None:
        self.calls.append(("barrier", ()))

    @contextlib.contextmanager
    def no_sync(self, model: nn.Module) -> Iterator[None]:
        self.calls.append(("no_sync", (model,)))
        yield


def _model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Linear(3, 2)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def test_ddp_prepares_the_model_only_and_keeps_the_optimizer() -> None:
    acc = FakeAccelerator("MULTI_GPU")
    model, opt = _model_and_optimizer()
    wrapped, opt2 = Dist(acc).prepare(model, opt, 4, 1.0)
    assert opt2 is opt and [c[0] for c in acc.calls] == ["prepare_model"]


@pytest.mark.parametrize(("engine", "fsdp2"), [("DEEPSPEED", False), ("FSDP", True)])
def test_fsdp2_and_deepspeed_get_model_and_optimizer_together(engine: str, fsdp2: bool) -> None:
    acc = FakeAccelerator(engine, fsdp2=fsdp2)
    model, opt = _model_and_optimizer()
    Dist(acc).prepare(model, opt, micro_batch_size=4, max_grad_norm=0.5)
    assert acc.calls == [("prepare", (model, opt))]
    if engine == "DEEPSPEED":  # alignkit's accumulation and clipping are the source of truth
        assert acc.ds_config == {
            "train_micro_batch_size_per_gpu": 4,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": 0.5,
        }


def test_fsdp1_prepares_model_first_and_refuses_replaced_parameters() -> None:
    acc = FakeAccelerator("FSDP")
    model, opt = _model_and_optimizer()
    Dist(acc).prepare(model, opt, 4, 1.0)
    assert acc.calls == [("prepare", (model,)), ("prepare", (opt,))]
    # use_orig_params=false: FSDP1 swaps in flat parameters the optimizer does not hold.
    acc = FakeAccelerator("FSDP")
    acc.prepare = lambda *objs: nn.Linear(3, 2) if isinstance(objs[0], nn.Module) else objs[0]  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="fsdp_use_orig_params"):
        Dist(acc).prepare(*_model_and_optimizer(), 4, 1.0)


class FakeEngine:
    def __init__(self) -> None:
        self.events: list[str] = []

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        self.events.append(f"boundary={is_boundary}")

    def backward(self, loss: torch.Tensor, **_: Any) -> None:
        self.events.append("backward")

    def step(self) -> None:
        self.events.append("step")

    def get_global_grad_norm(self) -> float:
        return 2.5


def test_deepspeed_steps_only_at_the_accumulation_boundary() -> None:
    """DeepSpeed steps inside backward; Dist must mark all but the last micro-batch as
    accumulation, per engine (PPO's critic has its own engine)."""
    dist = Dist(FakeAccelerator("DEEPSPEED"))
    engine = FakeEngine()
    for i in range(3):
        with dist.no_sync(engine, skip=i < 2):  # type: ignore[arg-type]
            dist.backward(torch.tensor(1.0), engine)  # type: ignore[arg-type]
    assert engine.events == [
        "boundary=False",
        "backward",
        "boundary=False",
        "backward",
        "boundary=True",
        "backward",
        "step",
    ]
    assert dist.clip_grad_norm(engine, 1.0) == 2.5  # type: ignore[arg-type]


def test_sharded_save_gathers_with_get_state_dict_and_writes_on_main_only(
    tmp_path: Path,
) -> None:
    from tiny import make_model, make_tokenizer

    src = make_model("llama", tmp_path / "src", make_tokenizer(tmp_path / "tok"))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(src))
    for main, out in ((True, tmp_path / "main"), (False, tmp_path / "other")):
        acc = FakeAccelerator("FSDP", fsdp2=True, main=main)
        dist = Dist(acc)
        wrapped, _ = dist.prepare(model, torch.optim.AdamW(model.parameters()), 2, 1.0)
        with mock.patch("alignkit.models.load.save_hf_folder") as save:
            dist.save_pretrained(wrapped, None, out)
        assert [c[0] for c in acc.calls][-2:] == ["get_state_dict", "barrier"]
        assert save.called is main  # every process gathers; only the main one writes
        if main:
            assert save.call_args.kwargs["state_dict"].keys() == model.state_dict().keys()
    acc = FakeAccelerator("MULTI_GPU")
    with mock.patch("alignkit.models.load.save_hf_folder") as save:
        Dist(acc).save_pretrained(model, None, tmp_path / "ddp")
    assert "get_state_dict" not in [c[0] for c in acc.calls]  # whole model: saved as is
    assert save.call_args.kwargs["state_dict"] is None


def test_save_hf_folder_from_a_gathered_state_dict_merges_lora_like_the_model(
    tmp_path: Path,
) -> None:
    """The sharded path rebuilds the LoRA model from the gathered weights to merge it; the
    result must equal merging the model in memory."""
    from safetensors.torch import load_file
    from tiny import make_model, make_tokenizer

    from alignkit.config import LoraConfig
    from alignkit.models.load import apply_lora, load_tokenizer, save_hf_folder

    tok_dir = make_tokenizer(tmp_path / "tok")
    src = make_model("llama", tmp_path / "src", tok_dir)
    from transformers import AutoModelForCausalLM

    model = apply_lora(
        AutoModelForCausalLM.from_pretrained(str(src)), LoraConfig(enabled=True, r=4)
    )
    with torch.no_grad():  # a trained adapter: B is zero at initialisation
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    tok = load_tokenizer(str(tok_dir))
    a = save_hf_folder(model, tok, tmp_path / "direct")
    b = save_hf_folder(model, tok, tmp_path / "gathered", state_dict=model.state_dict())
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    base = load_file(str(src / "model.safetensors"))
    assert not torch.equal(
        wa["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"]
    )
    assert (b / "adapter" / "adapter_model.safetensors").is_file()
