"""Token-normalised SFT loss (ALGORITHMS.md §1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from helpers import assert_close

from alignkit.losses.sft import IGNORE_INDEX, count_loss_tokens, sft_loss, sft_loss_from_logps


def test_uniform_logits_give_log_vocab() -> None:
    logits = torch.zeros(1, 4, 8)
    labels = torch.tensor([[IGNORE_INDEX, 1, 2, 3]])
    assert_close(sft_loss(logits, labels), math.log(8))


def test_shift_and_hand_value() -> None:
    # Position t predicts label t+1. Logits make token 0 have probability 3/4 at position 0.
    logits = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[IGNORE_INDEX, 0]])
    assert_close(sft_loss(logits, labels), -math.log(0.75))
    # Unshifted labels aligned with the logits.
    aligned = torch.tensor([[0, IGNORE_INDEX]])
    assert_close(sft_loss(logits, aligned, shift=False), -math.log(0.75))


def test_explicit_normaliser() -> None:
    logits = torch.zeros(1, 3, 2)
    labels = torch.tensor([[IGNORE_INDEX, 0, 1]])
    assert count_loss_tokens(labels) == 2
    assert_close(sft_loss(logits, labels, num_tokens=8), 2 * math.log(2) / 8)


def test_from_logps_hand_value() -> None:
    logps = torch.tensor([[-1.0, -2.0, float("-inf")]])
    mask = torch.tensor([[1, 1, 0]])
    assert_close(sft_loss_from_logps(logps, mask), 1.5)
    assert_close(sft_loss_from_logps(logps, mask, num_tokens=4), 0.75)


def test_all_masked_batch_is_zero_not_nan() -> None:
    labels = torch.full((2, 3), IGNORE_INDEX)
    assert_close(sft_loss(torch.randn(2, 3, 5), labels), 0.0)


def random_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 6, 7, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 7, (4, 6), generator=gen)
    lengths = torch.tensor([6, 2, 4, 3])  # completion-only labels of different lengths
    labels[torch.arange(6).unsqueeze(0) >= lengths.unsqueeze(1)] = IGNORE_INDEX
    labels[:, 0] = IGNORE_INDEX
    return logits, labels


def test_gradient_accumulation_with_global_normaliser_is_exact() -> None:
    logits, labels = random_batch(0)
    full = sft_loss(logits, labels)
    n = count_loss_tokens(labels[:1]) + count_loss_tokens(labels[1:])
    accumulated = sft_loss(logits[:1], labels[:1], n) + sft_loss(logits[1:], labels[1:], n)
    assert_close(accumulated, full)
    # Averaging per-micro-batch means instead over-weights the micro-batch with fewer tokens.
    naive = (sft_loss(logits[:1], labels[:1]) + sft_loss(logits[1:], labels[1:])) / 2
    assert abs(float(naive) - float(full)) > 1e-3


def test_matches_cross_entropy_mean_and_logps_variant() -> None:
    logits, labels = random_batch(1)
    shifted_logits, shifted_labels = logits[:, :-1], labels[:, 1:]
    reference = F.cross_entropy(
        shifted_logits.reshape(-1, 7), shifted_labels.reshape(-1), ignore_index=IGNORE_INDEX
    )
    assert_close(sft_loss(logits, labels), reference)
    mask = shifted_labels != IGNORE_INDEX
    logps = (
        torch.log_softmax(shifted_logits, -1)
        .gather(-1, shifted_labels.clamp(min=0).unsqueeze(-1))
        .squeeze(-1)
    )
    assert_close(sft_loss_from_logps(logps, mask), reference)


def test_packed_loss_is_token_weighted_mean_of_unpacked_losses() -> None:
    # §1: pack examples of lengths [3, 2]; the label at the boundary (position id 0) is −100.
    # A model whose attention does not cross examples gives the same per-position logits packed
    # or not, so the packed logits are the two examples' logits side by side.
    gen = torch.Generator().manual_seed(2)
    logits_a = torch.randn(1, 3, 5, generator=gen, dtype=torch.float64)
    logits_b = torch.randn(1, 2, 5, generator=gen, dtype=torch.float64)
    ids_a, ids_b = torch.tensor([[1, 2, 3]]), torch.tensor([[4, 0]])
    loss_a, loss_b = sft_loss(logits_a, ids_a), sft_loss(logits_b, ids_b)  # 2 and 1 targets
    packed_labels = torch.cat([ids_a, ids_b], dim=1)
    packed_labels[0, 3] = IGNORE_INDEX
    packed = sft_loss(torch.cat([logits_a, logits_b], dim=1), packed_labels)
    assert_close(packed, (2 * loss_a + 1 * loss_b) / 3, rtol=0.0, atol=1e-6)
    # Without the boundary label the last token of A would be trained to predict B's first token.
    leaky = torch.cat([ids_a, ids_b], dim=1)
    assert (
        abs(float(sft_loss(torch.cat([logits_a, logits_b], dim=1), leaky)) - float(packed)) > 1e-3
    )


def test_bf16_logits_are_upcast() -> None:
    logits, labels = random_batch(3)
    assert sft_loss(logits.to(torch.bfloat16), labels).dtype == torch.float32
