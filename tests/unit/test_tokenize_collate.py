from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_close

from alignkit.data.collate import batch_plan, collate_packed, collate_padded, pack_rows
from alignkit.data.readers import DataError
from alignkit.data.records import Demonstration
from alignkit.data.tokenize import IGNORE_INDEX, Example, tokenize_demonstrations
from alignkit.models.load import load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_tokenizer: Path):
    return load_tokenizer(str(tiny_tokenizer))


def test_completion_mask_covers_answer_and_eos(tok) -> None:
    [ex], stats = tokenize_demonstrations(
        tok, [Demonstration(prompt="what is two", completion="two")], 64
    )
    trained = [t for t, m in zip(ex.input_ids, ex.loss_mask, strict=True) if m]
    assert tok.decode(trained) == "two<|end|>"
    assert tok.decode(ex.input_ids[: ex.prompt_len]) == "<|user|>what is two<|assistant|>"
    assert stats.kept == 1


def test_conversation_masks_every_assistant_turn(tok) -> None:
    msgs = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "see you"},
    ]
    [ex], _ = tokenize_demonstrations(tok, [Demonstration(messages=msgs)], 128)
    trained = tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask, strict=True) if m])
    assert trained == "hello<|end|>see you<|end|>"


def test_plain_concatenation_appends_eos(tok) -> None:
    [ex], _ = tokenize_demonstrations(
        tok, [Demonstration(prompt="what is two ", completion="two")], 64, chat_template="none"
    )
    assert ex.input_ids[-1] == tok.eos_token_id and ex.loss_mask[-1] == 1
    assert (
        tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask, strict=True) if m])
        == "two<|end|>"
    )


def test_template_without_assistant_marking_gives_clear_error(tok) -> None:
    # A template that never renders assistant turns: nothing would be learned, silently.
    bad = "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}"
    with pytest.raises(DataError, match="mask is empty"):
        tokenize_demonstrations(
            tok, [Demonstration(prompt="hi", completion="there")], 64, chat_template=bad
        )


def test_truncation_policies(tok) -> None:
    rec = Demonstration(prompt="hi", completion="one two three four five six seven eight nine ten")
    [ex], stats = tokenize_demonstrations(tok, [rec], 12, truncation="right")
    assert len(ex) == 12 and stats.truncated == 1
    with pytest.raises(DataError, match="every record was dropped"):
        tokenize_demonstrations(tok, [rec], 12, truncation="drop")
    with pytest.raises(DataError, match="data.max_length=12"):
        tokenize_demonstrations(tok, [rec], 12, truncation="error")
    long_prompt = Demonstration(prompt="one two three four five six seven eight", completion="x")
    with pytest.raises(DataError, match="prompt longer than data.max_length"):
        tokenize_demonstrations(tok, [long_prompt], 4)
    exs, stats = tokenize_demonstrations(tok, [long_prompt, rec], 12)
    assert stats.dropped_prompt_too_long == 1 and len(exs) == 1


def test_packing_positions_and_boundary_labels() -> None:
    a = Example(input_ids=[11, 12, 13], loss_mask=[1, 1, 1])
    b = Example(input_ids=[21, 22], loss_mask=[1, 1])
    batch = collate_packed([a, b], pad_id=0, max_length=8)
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert batch.labels.tolist() == [[IGNORE_INDEX, 12, 13, IGNORE_INDEX, 22]]
    assert batch.attention_mask is None and batch.num_real_tokens == 5


def test_pack_rows_respects_max_length() -> None:
    rows = pack_rows([5, 4, 3, 3, 1], max_length=8)
    lengths = [5, 4, 3, 3, 1]
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert all(sum(lengths[i] for i in r) <= 8 for r in rows) and len(rows) == 2


def test_batch_plan_is_deterministic_and_complete() -> None:
    p1, p2 = batch_plan(10, 3, seed=1, epoch=0), batch_plan(10, 3, seed=1, epoch=0)
    assert p1 == p2 and sorted(i for mb in p1 for i in mb) == list(range(10))
    assert batch_plan(10, 3, seed=1, epoch=1) != p1


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_packed_loss_equals_token_weighted_unpacked_loss(tiny_models, tok, arch) -> None:
    """ALGORITHMS §1: the packed loss equals the token-weighted mean of the unpacked losses, and
    attention does not cross examples (else the second example's logits would change)."""
    from transformers import AutoModelForCausalLM

    from alignkit.losses.sft import sft_loss

    model = AutoModelForCausalLM.from_pretrained(str(tiny_models[arch])).eval()
    recs = [
        Demonstration(prompt="what is two plus three", completion="the answer is five"),
        Demonstration(prompt="hello", completion="hello world please"),
        Demonstration(prompt="sort the list", completion="one two three four"),
    ]
    exs, _ = tokenize_demonstrations(tok, recs, 64, completion_only=False)
    packed = collate_packed(exs, tok.pad_token_id, max_length=256)
    assert packed.input_ids.shape[0] == 1
    with torch.no_grad():
        loss_packed = sft_loss(model(**packed.model_inputs()).logits, packed.labels)
        sums, counts = 0.0, 0
        for e in exs:
            b = collate_padded([e], tok.pad_token_id)
            n = b.num_targets
            sums += float(sft_loss(model(**b.model_inputs()).logits, b.labels)) * n
            counts += n
    assert packed.num_targets == counts
    assert_close(float(loss_packed), sums / counts, rtol=1e-6)
