from __future__ import annotations

import pytest
import torch
from helpers import assert_close

from alignkit.data.collate import collate_padded
from alignkit.data.records import Demonstration
from alignkit.data.tokenize import tokenize_demonstrations
from alignkit.models.load import load_tokenizer
from alignkit.models.logprobs import forward_logprobs, gather_logprobs, sequence_logprobs


def test_gather_matches_log_softmax_by_hand() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[1, 2, 3, -100], [4, -100, 5, 6]])
    logp, mask = gather_logprobs(logits, labels)
    ref = torch.log_softmax(logits, -1)
    assert_close(logp[0, 0], ref[0, 0, 2])
    assert_close(logp[1, 2], ref[1, 2, 6])
    assert mask.tolist() == [[1, 1, 0], [0, 1, 1]] and float(logp[0, 2]) == 0.0
    assert_close(sequence_logprobs(logp, mask, "mean")[1], (ref[1, 1, 5] + ref[1, 2, 6]) / 2)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_parity_with_hugging_face_loss(tiny_models, tiny_tokenizer, arch) -> None:
    """Our per-token log-probs reproduce the plain HF forward's mean cross-entropy."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(str(tiny_tokenizer))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_models[arch])).eval()
    exs, _ = tokenize_demonstrations(
        tok, [Demonstration(prompt="what is one plus one", completion="the answer is two")], 64
    )
    b = collate_padded(exs, tok.pad_token_id)
    with torch.no_grad():
        hf = model(**b.model_inputs(), labels=b.labels).loss
        logp, mask = forward_logprobs(model, b.input_ids, b.labels, b.attention_mask)
    assert_close(float(-(logp.sum() / mask.sum())), float(hf), rtol=1e-6)
