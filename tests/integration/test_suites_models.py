"""Evaluation suites end to end on the tiny random models (and ../shared/data): choice
log-probs at the right token positions, and every suite run from a model folder."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import assert_close

from alignkit.evaluation.suites import MCItem, choice_logprobs, run_suite


def hashed_score(prompts: list, responses: list) -> list[float]:
    """A deterministic, content-dependent pointwise judge."""
    return [random.Random(f"{p}|{r}").gauss(0, 1) for p, r in zip(prompts, responses, strict=True)]


@pytest.mark.parametrize("chat_template", ["auto", "none"])
def test_choice_logprobs_match_a_plain_forward(tiny_llama: Path, chat_template: str) -> None:
    """Each choice is scored at the right positions: parity with log-softmax of the logits of
    one unpadded forward, indexed by hand, while the batch pads choices of other lengths."""
    import torch

    from alignkit.config import ModelConfig
    from alignkit.evaluation.suites import choice_token_ids
    from alignkit.models.load import load_causal_lm

    model, tok = load_causal_lm(ModelConfig(path=str(tiny_llama)), for_training=False)
    prompt = "what is two plus three"
    item = MCItem(prompt, ("five", "the answer is six", "no"), frozenset({0}))
    lps = choice_logprobs(model, tok, [item], chat_template=chat_template)[0]
    for choice, lp in zip(item.choices, lps, strict=True):
        ctx, cont = choice_token_ids(tok, prompt, choice, chat_template)
        if chat_template == "auto":  # the question is a user turn; the answer follows the cue
            assert ctx[-1] == tok.convert_tokens_to_ids("<|assistant|>")
        else:
            assert tok.decode(ctx + cont).endswith(f"Answer: {choice}")
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ctx + cont])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        by_hand = sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))
        assert_close(lp, by_hand)


# --------------------------------------------------------------------------------------------
# Suites end to end on tiny random models
# --------------------------------------------------------------------------------------------


def test_suites_end_to_end(tiny_models: dict[str, Path], shared_data: Path, tmp_path: Path) -> None:
    llama, gpt2 = tiny_models["llama"], tiny_models["gpt2"]
    out = tmp_path / "suites"
    xs = run_suite(
        "xstest", llama, shared_data / "xstest" / "xstest_prompts.csv", out,
        limit=3, max_new_tokens=8,
    )  # fmt: skip
    assert (xs["n_safe"], xs["n_unsafe"]) == (3, 3)
    assert 0 <= xs["over_refusal_rate"] <= 1 and 0 <= xs["unsafe_compliance_rate"] <= 1
    rows = [json.loads(x) for x in (out / "xstest_examples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"response", "refusal"} <= set(rows[0])

    tqa = run_suite("truthfulqa", llama, shared_data / "truthfulqa" / "mc_task.json", out, limit=2)
    assert tqa["n"] == 2 and 0 <= tqa["mc1"] <= 1 and 0 < tqa["mc2"] < 1
    bbq = run_suite("bbq", llama, shared_data / "bbq" / "Religion.jsonl", out, limit=4)
    assert bbq["n"] == 4 and bbq["accuracy_ambig"] is not None
    assert json.loads((out / "bbq.json").read_text())["accuracy"] == bbq["accuracy"]

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"what is {i} plus {i}"}) + "\n" for i in range(4)))  # fmt: skip
    wr = run_suite(
        "winrate", llama, prompts, out, reference=gpt2, judge=lambda p, r: [len(x) for x in r],
        max_new_tokens=6,
    )  # fmt: skip
    assert wr["n"] == 4 and 0 <= wr["win_rate"] <= 1 and wr["first_position_rate"] == 0.5
    same = run_suite("winrate", llama, prompts, None, reference=llama, judge=hashed_score,
                     max_new_tokens=6)  # fmt: skip
    assert same["win_rate"] == 0.5  # greedy decoding: the same model gives the same answers
    with pytest.raises(ValueError, match="unknown suite 'nope'"):
        run_suite("nope", llama, prompts)
