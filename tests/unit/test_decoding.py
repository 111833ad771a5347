"""Pure parts of inference-time alignment: the CBF filter path on hand values (§7), best-of-N
selection and KL (§10), guidance, the text cache, retrieval, chain-of-thought helpers."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from helpers import assert_close

from alignkit.data.readers import DataError
from alignkit.decoding.best_of_n import BestOfN, argmax_first, select_best_of_n
from alignkit.decoding.cbf import CBFConfig, CBFFilter, cost_model_safety, load_safety
from alignkit.decoding.cot import CoTConfig, cot_prompt, extract_answer
from alignkit.decoding.guided import guided_distribution
from alignkit.decoding.prefix import CachedPrefixScorer
from alignkit.decoding.rag import (
    BM25Retriever,
    RAGConfig,
    Retrieved,
    augment_prompt,
    read_knowledge_base,
)
from alignkit.decoding.server import _cut_at_stop
from alignkit.rollout.judges import FunctionJudge

# -- CBF: the §7 hand example through CBFFilter.filter ------------------------------------------

H_TABLE = {"": 0.4, "a": 0.5, "b": 0.2, "c": 0.3}


def table_h(prompts, texts):
    return [H_TABLE[t] for t in texts]


def run_filter(alpha: float, top_k: int = 3, h=table_h):
    f = CBFFilter(h, CBFConfig(alpha=alpha, top_k=top_k))
    ids = torch.tensor([[0, 1, 2]])
    probs = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    return f, f.filter(["p"], [0.4], ids, probs, lambda r, toks: ["abc"[t] for t in toks])[0]


def test_cbf_hand_values_through_the_filter() -> None:
    # h(x) 0.4, α 0.3 → threshold 0.28: candidate b (h 0.2) is removed, a and c pass.
    _, proj = run_filter(0.3)
    assert proj.allowed == [True, False, True]
    assert proj.h_next == [0.5, 0.2, 0.3]
    assert proj.interventions == 1
    # Q = [0.5, 0, 0.2] / 0.7 = [5/7, 0, 2/7] = [0.7143, 0, 0.2857]
    exact = [Fraction(5, 7), Fraction(0), Fraction(2, 7)]
    assert_close(proj.probs, [float(q) for q in exact])
    assert_close(proj.probs, [0.714286, 0.0, 0.285714])


def test_alpha_one_is_the_blacklist() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        hs = (torch.rand(12, generator=gen) * 2 - 1).tolist()
        h_now = float(torch.rand(1, generator=gen)) * 2 - 1
        table = {chr(97 + i): v for i, v in enumerate(hs)}
        f = CBFFilter(
            lambda p, t, table=table: [table[x] for x in t], CBFConfig(alpha=1.0, top_k=12)
        )
        ids = torch.arange(12).unsqueeze(0)
        probs = torch.softmax(torch.rand(1, 12, generator=gen, dtype=torch.float64), -1)
        proj = f.filter(["p"], [h_now], ids, probs, lambda r, toks: [chr(97 + t) for t in toks])[0]
        assert proj.allowed == [v >= 0 for v in hs]  # h(x ⊕ t) ≥ 0, whatever h(x) is


def test_accepts_until_top_k_allowed_and_evaluates_no_further() -> None:
    seen: list[str] = []

    def h(prompts, texts):
        seen.extend(texts)
        return [H_TABLE[t] for t in texts]

    _, proj = run_filter(0.3, top_k=1, h=h)
    assert proj.token_ids == [0] and proj.allowed == [True]
    assert seen == ["a"]  # b and c, below the first allowed candidate, are never scored
    assert_close(proj.probs, [1.0])


def test_nucleus_rule_stops_once_the_nucleus_is_covered() -> None:
    seen: list[str] = []

    def h(table):
        def fn(prompts, texts):
            seen.extend(texts)
            return [table[t] for t in texts]

        return fn

    ids = torch.tensor([[0, 1, 2]])
    probs = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    decode = lambda r, toks: ["abc"[t] for t in toks]  # noqa: E731
    # a (P 0.5) covers a 0.5 nucleus and is allowed: nothing else is scored.
    f = CBFFilter(h(H_TABLE), CBFConfig(alpha=0.3, top_k=3, top_p=0.5))
    proj = f.filter(["p"], [0.4], ids, probs, decode)[0]
    assert seen == ["a"] and proj.token_ids == [0]
    assert_close(proj.probs, [1.0])
    # a disallowed: past the nucleus the next top_k − allowed candidates go in one call.
    seen.clear()
    f = CBFFilter(h({"a": 0.0, "b": 0.2, "c": 0.3}), CBFConfig(alpha=0.3, top_k=3, top_p=0.5))
    proj = f.filter(["p"], [0.4], ids, probs, decode)[0]
    assert seen == ["a", "b", "c"] and proj.allowed == [False, False, True]
    assert_close(proj.probs, [0.0, 0.0, 1.0])


def test_nothing_allowed_is_flagged_not_divided_by_zero() -> None:
    f = CBFFilter(lambda p, t: [-1.0] * len(t), CBFConfig(alpha=0.3, top_k=2, max_candidates=3))
    ids = torch.tensor([[0, 1, 2], [0, 1, 2]])
    probs = torch.tensor([[0.5, 0.3, 0.2]] * 2, dtype=torch.float64)
    projs = f.filter(["p", "q"], [0.5, 0.5], ids, probs, lambda r, toks: ["abc"[t] for t in toks])
    for proj in projs:
        assert proj.nothing_allowed
        assert proj.interventions == 3  # examined up to max_candidates
        assert torch.all(proj.probs == 0) and not torch.isnan(proj.probs).any()


def test_config_rejects_bad_alpha_and_candidates() -> None:
    with pytest.raises(ValueError, match="alpha"):
        CBFConfig(alpha=0.0)
    with pytest.raises(ValueError, match="max_candidates"):
        CBFConfig(top_k=30, max_candidates=10)


def test_cost_model_h_forms() -> None:
    class Costs:
        def score(self, prompts, responses):
            return [-2.0, 0.0, 3.0]

    three = (["p"] * 3, ["a", "b", "c"])
    # P(safe) − P(unsafe) = 2σ(−c) − 1 = tanh(−c/2): tanh(1), 0, tanh(−1.5)
    assert_close(cost_model_safety(Costs())(*three), [0.7615942, 0.0, -0.9051483])
    assert_close(cost_model_safety(Costs(), margin=1.0, form="linear")(*three), [3.0, 1.0, -2.0])
    with pytest.raises(ValueError, match="form"):
        cost_model_safety(Costs(), form="log")


def test_load_safety_rejects_nonsense(tmp_path: Path) -> None:
    from alignkit.config import ConfigError

    with pytest.raises(ConfigError, match="module:function"):
        load_safety(str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="cannot import"):
        load_safety("no_such_module_xyz:fn")


# -- the text cache -----------------------------------------------------------------------------


def test_cache_scores_each_text_once_in_batches() -> None:
    batches: list[int] = []

    def fn(prompts, texts):
        batches.append(len(texts))
        return [float(len(t)) for t in texts]

    c = CachedPrefixScorer(fn, batch_size=2)
    assert c(["p"] * 4, ["a", "bb", "a", "ccc"]) == [1.0, 2.0, 1.0, 3.0]
    assert batches == [2, 1] and c.calls == 3 and c.hits == 1
    assert c(["p", "q"], ["bb", "bb"]) == [2.0, 2.0]  # a different prompt is a different key
    assert c.calls == 4


# -- best-of-N ----------------------------------------------------------------------------------


def test_best_of_n_kl_hand_values() -> None:
    # ALGORITHMS.md quotes five decimals, so compare at 5e-6 absolute.
    assert_close(BestOfN(0, [0.0] * 4).kl_bound, 0.63629, rtol=0, atol=5e-6)
    assert_close(BestOfN(0, [0.0] * 16).kl_bound, 1.83509, rtol=0, atol=5e-6)
    assert BestOfN(0, [1.0]).kl_bound == 0.0


def test_best_of_n_picks_the_argmax_per_prompt() -> None:
    judge = FunctionJudge(
        lambda p, r, rec: [float(len(x)) + rec_i["bonus"] for x, rec_i in zip(r, rec, strict=True)]
    )
    picks = select_best_of_n(
        judge,
        ["p1", "p2"],
        [["aa", "a", "aaaa", "aaa"], ["bbb", "b", "bbb"]],
        [{"bonus": 0.0}, {"bonus": 1.0}],
    )
    assert [p.chosen for p in picks] == [2, 0]  # ties go to the earliest draw
    assert picks[0].scores == [2.0, 1.0, 4.0, 3.0]
    assert picks[1].scores == [4.0, 2.0, 4.0]
    assert argmax_first([0.1, 0.7, 0.7]) == 1
    with pytest.raises(ValueError):
        argmax_first([])


# -- reward guidance ----------------------------------------------------------------------------


def test_guided_distribution_hand_values() -> None:
    # [0.5, 0.3e, 0.2e²] / (0.5 + 0.3e + 0.2e²) = [0.179001, 0.291944, 0.529055]
    q = guided_distribution(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.0, 1.0, 2.0]), 1.0)
    assert_close(q, [0.1790010, 0.2919445, 0.5290545])
    same = guided_distribution(torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.0, 1.0, 2.0]), 0.0)
    assert_close(same, [0.5, 0.3, 0.2])
    kept_out = guided_distribution(
        torch.tensor([0.5, 0.0, 0.5]), torch.tensor([0.0, 100.0, 0.0]), 1.0
    )
    assert_close(kept_out, [0.5, 0.0, 0.5])  # a filtered token stays filtered


# -- retrieval ----------------------------------------------------------------------------------

KB = [
    {"id": "c1", "title": "Naktin", "text": "Naktin is in Seguland. Naktin is known for soup."},
    {"id": "c2", "title": "Zenin", "text": "Zenin is in Risamar. Zenin is known for apples."},
    {"id": "p1", "title": "Tavi", "text": "Tavi is a baker. Tavi lives in Naktin."},
]


def write_kb(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bm25_finds_the_passage_and_prompt_is_grounded(tmp_path: Path) -> None:
    passages = read_knowledge_base(write_kb(tmp_path / "kb.jsonl", KB))
    found = BM25Retriever(passages).retrieve(
        ["Which country is Zenin in?", "What does Tavi do?"], 2
    )
    assert found[0][0].passage.id == "c2" and found[1][0].passage.id == "p1"
    assert found[0][0].score > found[0][1].score
    cfg = RAGConfig()
    text = augment_prompt("Which country is Zenin in?", found[0][:1], cfg)
    assert text.startswith(cfg.instruction) and "[1] Zenin: Zenin is in Risamar." in text
    assert text.endswith("Question: Which country is Zenin in?")
    msgs = augment_prompt(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "Where is Zenin?"}],
        [],
        cfg,
    )
    assert msgs[0] == {"role": "system", "content": "s"}
    assert "(no relevant passage found)" in msgs[1]["content"]


def test_knowledge_base_errors_name_line_and_field(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"kb.jsonl:2:text"):
        read_knowledge_base(write_kb(tmp_path / "kb.jsonl", [KB[0], {"id": "x", "title": "t"}]))
    with pytest.raises(DataError, match=r":2:id: duplicate"):
        read_knowledge_base(write_kb(tmp_path / "kb.jsonl", [KB[0], KB[0]]))


def test_retrieved_to_dict() -> None:
    r = Retrieved(read_passage(), 1.23456789)
    assert r.to_dict() == {"id": "a", "title": "A", "text": "t", "score": 1.234568}


def read_passage():
    from alignkit.decoding.rag import Passage

    return Passage("a", "A", "t")


# -- chain of thought ---------------------------------------------------------------------------


def test_cot_prompt_and_answer_extraction() -> None:
    cfg = CoTConfig()
    assert (
        cot_prompt("What is 4 times 5 plus 7?", cfg)
        == f"What is 4 times 5 plus 7?\n{cfg.instruction}"
    )
    sys_cfg = CoTConfig(placement="system")
    msgs = cot_prompt("Q?", sys_cfg)
    assert msgs == [
        {"role": "system", "content": cfg.instruction},
        {"role": "user", "content": "Q?"},
    ]
    assert extract_answer("4 * 5 = 20. 20 + 7 = 27. The answer is 27.") == "27"
    assert extract_answer("The answer is 3. No wait, the answer is 4") == "4"
    assert extract_answer("20 + 7 = 27") == "27"
    assert extract_answer("I don't know.") is None


def test_stop_sequences_cut_at_the_first() -> None:
    assert _cut_at_stop("abc. def! ghi", [".", "!"]) == ("abc", True)
    assert _cut_at_stop("abc", ["x"]) == ("abc", False)
