"""Log-probs with the LM head applied only at target positions equal the full forward's."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close

from alignkit.data.tokenize import IGNORE_INDEX
from alignkit.models.logprobs import forward_logprobs, output_head, target_logprobs


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (3, 12), generator=g)
    attn = torch.ones_like(ids)
    attn[1, 9:] = 0  # right padding
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX  # prompt
    labels[attn == 0] = IGNORE_INDEX
    return ids, attn, labels


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_and_gradients_match_full_forward(
    llama: torch.nn.Module, temperature: float
) -> None:
    ids, attn, labels = _batch()
    inputs = {"input_ids": ids, "attention_mask": attn, "use_cache": False}
    full, full_mask = forward_logprobs(llama, ids, labels, attn, temperature=temperature)
    sub, sub_mask = target_logprobs(llama, inputs, labels, temperature)
    assert_close(sub, full)
    assert_close(sub_mask, full_mask)
    params = [p for p in llama.parameters() if p.requires_grad]
    g_full = torch.autograd.grad(full.sum(), params)
    g_sub = torch.autograd.grad(sub.sum(), params)
    for a, b in zip(g_sub, g_full, strict=True):
        assert_close(a, b)


def test_packed_rows_and_wrappers(llama: torch.nn.Module) -> None:
    """Packed rows (restarting position ids) and a DDP-like ``.module`` wrapper."""

    class Wrapper(torch.nn.Module):
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, **kw: object) -> object:
            return self.module(**kw)

    ids, _, labels = _batch()
    pos = torch.cat([torch.arange(5), torch.arange(7)]).expand(3, -1)
    labels[:, 5] = IGNORE_INDEX  # a packed example's first token is never a target
    wrapped = Wrapper(llama)
    assert output_head(wrapped) is llama.get_output_embeddings()
    inputs = {"input_ids": ids, "position_ids": pos, "use_cache": False}
    full, _ = forward_logprobs(llama, ids, labels, position_ids=pos)
    sub, _ = target_logprobs(wrapped, inputs, labels)
    assert_close(sub, full)
    # the hook is removed: a plain forward gives full logits again
    assert llama(input_ids=ids).logits.shape == (3, 12, 50)
