"""The direct-preference recipe end to end on tiny random models (STYLE.md habit 5).

The toy task is learnable by any loss in a few steps: for "what is a plus b" the chosen answer
states the sum and the rejected one refuses. What the tests pin down is the plumbing around
the (separately unit-tested) loss functions: reference log-probs from every source agree,
chosen and rejected share one forward, incompatible options fail before any weight loads, and
iterative DPO samples, judges and trains.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from helpers import assert_close
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.config import ConfigError, load_config
from alignkit.configs.preference import DPOConfig
from alignkit.engine.tracking import read_metrics
from alignkit.recipes import preference as recipe
from alignkit.recipes.preference import run_dpo
from alignkit.rollout.judges import FunctionJudge, Judge, RewardModelJudge

runner = CliRunner()


def _sums(rng: random.Random, n: int) -> list[tuple[int, int]]:
    return [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tiny import write_jsonl

    root = tmp_path_factory.mktemp("pref")
    rng = random.Random(0)
    refuse = "sorry i cannot help with that"
    pairs, ranks, unpaired = [], [], []
    for a, b in _sums(rng, 48):
        prompt, good = f"what is {a} plus {b}", f"the answer is {a + b}"
        pairs.append({"prompt": prompt, "chosen": good, "rejected": refuse})
        wrong = f"the answer is {(a + b + 3) % 19}"
        ranks.append({"prompt": prompt, "responses": [refuse, good, wrong], "ranking": [1, 2, 0]})
        unpaired.append({"prompt": prompt, "completion": good, "label": True})
        unpaired.append({"prompt": prompt, "completion": refuse, "label": False})
    return {
        "pairwise": write_jsonl(root / "pairs.jsonl", pairs),
        "ranking": write_jsonl(root / "ranks.jsonl", ranks),
        "unpaired": write_jsonl(root / "unpaired.jsonl", unpaired),
        "prompts": write_jsonl(root / "prompts.jsonl", [{"prompt": p["prompt"]} for p in pairs]),
    }


def cfg_for(model: Path, data: Path, out: Path, *extra: str) -> DPOConfig:
    base = [
        f"model.path={model}",
        f"data.path={data}",
        f"train.output_dir={out}",
        "train.lr=5e-3",
        "train.batch_size=8",
        "train.max_steps=8",
        "train.warmup_ratio=0",
        "train.progress=false",
        "data.max_length=64",
        "data.eval_fraction=0",
    ]
    return load_config(DPOConfig, None, base + list(extra))


def metrics(out: Path) -> list[dict]:
    return read_metrics(out / "metrics.jsonl")


LOSSES = [
    ("dpo", []),
    ("ipo", ["train.lr=1e-2"]),
    ("cdpo", ["label_smoothing=0.1"]),
    ("robust", ["label_smoothing=0.1"]),
    ("kto", ["data.to_unpaired=true"]),
    ("orpo", []),
    ("simpo", []),
    ("cpo", []),
    ("fdpo", ["f_divergence=js"]),
    ("fdpo", ["f_divergence=alpha", "f_alpha=0.5"]),
    ("dpo", ["rpo_alpha=1.0"]),
]


@pytest.mark.parametrize(("loss", "extra"), LOSSES, ids=[f"{l_}-{'-'.join(e)}" for l_, e in LOSSES])
def test_every_loss_learns_the_toy_preferences(tiny_llama, data, tmp_path, loss, extra) -> None:
    out = run_dpo(cfg_for(tiny_llama, data["pairwise"], tmp_path / loss, f"loss={loss}", *extra))
    rows = metrics(out)
    assert len(rows) == 8
    first, last = rows[0], rows[-1]
    assert last["loss"] < first["loss"] - 0.05 * abs(first["loss"]), (first, last)
    assert last["rewards/margin"] > first["rewards/margin"] + 0.1
    assert last["rewards/accuracy"] == 1.0
    for key in ("logps/chosen", "logps/rejected", "rewards/chosen", "rewards/rejected"):
        assert key in last and math.isfinite(float(last[key])), key
    assert ("nll" in last) is (loss in ("orpo", "cpo") or "rpo_alpha=1.0" in extra)
    reference_free = loss in ("orpo", "simpo", "cpo")
    assert ("kl" in last) is not reference_free
    assert (out / "reference_logps.safetensors").exists() is not reference_free
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"] == ("none" if reference_free else "precompute")


def test_policy_equal_to_reference_gives_log_two_at_step_zero(tiny_llama, data, tmp_path) -> None:
    out = run_dpo(cfg_for(tiny_llama, data["pairwise"], tmp_path / "o", "train.max_steps=1"))
    [row] = metrics(out)
    assert abs(row["loss"] - math.log(2.0)) < 1e-6
    assert abs(row["rewards/margin"]) < 1e-5 and abs(row["kl"]) < 1e-5


def test_reference_sources_agree(tiny_llama, data, tmp_path) -> None:
    """Precomputed, adapter-disabled and live references give the same losses — at step 0
    (all log 2) and, more tellingly, after the policy has moved away from the reference."""
    lora = ["model.lora.enabled=true", "model.lora.r=4", "train.max_steps=3", "train.lr=2e-2"]
    losses = {}
    for mode in ("precompute", "adapter", "live"):
        out = run_dpo(
            cfg_for(tiny_llama, data["pairwise"], tmp_path / mode, f"reference={mode}", *lora)
        )
        losses[mode] = [r["loss"] for r in metrics(out)]
    assert abs(losses["precompute"][0] - math.log(2.0)) < 1e-6
    assert losses["precompute"][2] < losses["precompute"][0] - 0.01, "the policy moved"
    assert_close(losses["adapter"], losses["precompute"])
    assert_close(losses["live"], losses["precompute"])


def test_precomputed_and_live_reference_model_agree(tiny_llama, tiny_tokenizer, data, tmp_path):
    """With a different reference checkpoint the step-0 loss is not log 2, and both sources
    still agree: the reference really is that checkpoint."""
    from tiny import make_model

    other = make_model("llama", tmp_path / "other", tiny_tokenizer, seed=1)
    first = {}
    for mode in ("precompute", "live"):
        cfg = cfg_for(
            tiny_llama,
            data["pairwise"],
            tmp_path / mode,
            f"reference={mode}",
            f"reference_model={other}",
            "train.max_steps=1",
        )
        first[mode] = metrics(run_dpo(cfg))[0]
    assert abs(first["live"]["loss"] - math.log(2.0)) > 1e-3
    assert_close(first["precompute"]["loss"], first["live"]["loss"])
    assert_close(first["precompute"]["kl"], first["live"]["kl"])


def test_precomputed_reference_is_reused_on_rerun(tiny_llama, data, tmp_path) -> None:
    cfg = cfg_for(tiny_llama, data["pairwise"], tmp_path / "o", "train.max_steps=2")
    first = json.loads((run_dpo(cfg) / "summary.json").read_text())
    again = json.loads((run_dpo(cfg) / "summary.json").read_text())
    assert first["reference_seconds"] > 0 and again["reference_seconds"] == 0
    other = cfg_for(tiny_llama, data["ranking"], tmp_path / "o", "train.max_steps=2")
    assert json.loads((run_dpo(other) / "summary.json").read_text())["reference_seconds"] > 0


def _count_rows(monkeypatch) -> list[int]:
    calls: list[int] = []
    load = recipe.load_causal_lm

    def counting_load(*args, **kwargs):
        model, tok = load(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda _m, a, kw: calls.append(int(kw["input_ids"].shape[0])), with_kwargs=True
        )
        return model, tok

    monkeypatch.setattr(recipe, "load_causal_lm", counting_load)
    return calls


def test_chosen_and_rejected_share_one_forward(tiny_llama, data, tmp_path, monkeypatch) -> None:
    calls = _count_rows(monkeypatch)
    out = run_dpo(
        cfg_for(
            tiny_llama,
            data["pairwise"],
            tmp_path / "o",
            "train.max_steps=3",
            "data.shared_prompt=false",
        )
    )
    # The reference pass first (48 pairs in batches of 16 pairs), then one forward of 8 chosen
    # + 8 rejected rows per training step, and nothing else.
    assert calls == [32, 32, 32, 16, 16, 16]
    assert json.loads((out / "summary.json").read_text())["policy_forwards"] == 3


def test_shared_prompt_rows_hold_whole_groups(tiny_llama, data, tmp_path, monkeypatch) -> None:
    calls = _count_rows(monkeypatch)
    cfg = cfg_for(tiny_llama, data["pairwise"], tmp_path / "o", "train.max_steps=3")
    out = run_dpo(cfg)
    # The layout check (padded then shared, two groups), the reference pass in 3 batches and
    # 3 training forwards; a row holds a prompt with both its responses, so a batch of 8 pairs
    # needs at most 8 rows.
    assert len(calls) == 2 + 3 + 3 and calls[0] == 4 and calls[1] <= 2
    assert all(n <= 8 for n in calls[5:])
    summary = json.loads((out / "summary.json").read_text())
    padded = json.loads(
        (
            run_dpo(
                cfg_for(
                    tiny_llama,
                    data["pairwise"],
                    tmp_path / "p",
                    "train.max_steps=3",
                    "data.shared_prompt=false",
                )
            )
            / "summary.json"
        ).read_text()
    )
    assert_close(summary["final"]["loss"], padded["final"]["loss"], rtol=1e-4)


@pytest.mark.parametrize(
    ("data_kind", "extra", "message"),
    [
        ("pairwise", ["loss=simpo", "reference=precompute"], "reference-free"),
        ("pairwise", ["loss=orpo", f"reference_model={Path('/nonexistent')}"], "reference-free"),
        ("pairwise", ["loss=kto"], "data.to_unpaired=true"),
        ("unpaired", ["loss=dpo"], "use loss=kto"),
        ("pairwise", ["reference=adapter"], "model.lora.enabled=true"),
        ("pairwise", ["reference=none"], "reference=precompute"),
        ("pairwise", ["label_smoothing=0.1"], "loss=cdpo or loss=robust"),
        ("pairwise", ["loss=orpo", "rpo_alpha=1"], "tune orpo_lambda / cpo_alpha instead"),
        ("prompts", ["iterations=2"], "needs a judge"),
        ("pairwise", [f"judge={Path('/nonexistent')}"], "set iterations=N"),
    ],
)
def test_incompatible_options_say_what_to_do(
    tiny_llama, data, tmp_path, data_kind, extra, message
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")) as err:
        run_dpo(cfg_for(tiny_llama, data[data_kind], tmp_path / "bad", *extra))
    assert "\n" not in str(err.value), "one message, not a report"


def test_kto_on_unpaired_data(tiny_llama, data, tmp_path) -> None:
    out = run_dpo(cfg_for(tiny_llama, data["unpaired"], tmp_path / "kto", "loss=kto"))
    rows = metrics(out)
    assert rows[0]["loss"] == pytest.approx(0.5, abs=1e-6), "π = π_ref: every term is 1 − σ(0)"
    assert rows[-1]["loss"] < 0.45 and rows[-1]["rewards/margin"] > 0.5
    assert all(r["kl"] >= 0.0 for r in rows), "z₀ is clamped at zero"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["format"] == "unpaired" and summary["train_groups"] == 96


def test_rankings_become_pairs(tiny_llama, data, tmp_path) -> None:
    counts = {}
    for mode in ("all", "best_worst", "grouped"):
        out = run_dpo(
            cfg_for(
                tiny_llama,
                data["ranking"],
                tmp_path / mode,
                f"data.ranking_pairs={mode}",
                "train.max_steps=2",
                "data.eval_fraction=0.25",
            )
        )
        s = json.loads((out / "summary.json").read_text())
        counts[mode] = (s["train_groups"], s["eval_groups"])
        assert "eval/loss" in metrics(out)[-1] and "eval/rewards/accuracy" in metrics(out)[-1]
    assert counts["all"] == (36 * 3, 12 * 3) and counts["best_worst"] == (36, 12)
    assert counts["grouped"] == (36, 12)  # whole rankings; the loss forms their 3 pairs each


def test_saved_folder_is_an_ordinary_hf_model(tiny_llama, data, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    out = run_dpo(cfg_for(tiny_llama, data["pairwise"], tmp_path / "o", "train.max_steps=2"))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    changed = [
        n
        for (n, p), (_, q) in zip(model.named_parameters(), base.named_parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert changed, "training changed the weights"
    for f in ("config.yaml", "summary.json", "metrics.jsonl", "tokenizer_config.json"):
        assert (out / f).exists(), f


def test_iterative_dpo_with_a_toy_judge(tiny_llama, data, tmp_path) -> None:
    """Two online iterations: sample two responses per prompt, prefer the shorter (a judge the
    tiny model can satisfy), train, repeat; every round's pairs are ranked by the judge."""

    def shorter_is_better(prompts, responses, records):
        assert len(prompts) == len(responses) == len(records)
        return [-float(len(r)) for r in responses]

    judge = FunctionJudge(shorter_is_better)
    assert isinstance(judge, Judge)
    cfg = cfg_for(
        tiny_llama,
        data["prompts"],
        tmp_path / "online",
        "iterations=2",
        "online.prompts_per_iteration=12",
        "online.max_new_tokens=12",
        "data.eval_fraction=0.25",
        "train.max_steps=3",
        "train.batch_size=4",
    )
    out = run_dpo(cfg, judge=judge)
    summary = json.loads((out / "summary.json").read_text())
    assert [it["iteration"] for it in summary["iterations"]] == [1, 2]
    for k in (1, 2):
        rows = [json.loads(x) for x in (out / f"iteration-{k}" / "pairs.jsonl").open()]
        assert rows and all(r["chosen_score"] > r["rejected_score"] for r in rows)
        assert all(len(r["chosen"]) < len(r["rejected"]) for r in rows)
    merged = metrics(out)
    assert {r["iteration"] for r in merged} == {1, 2}
    steps = [r["step"] for r in merged if "loss" in r]
    assert steps == sorted(steps) and len(steps) == 6
    assert (out / "config.json").exists()


def test_cli_runs_dpo_and_reports_errors_plainly(tiny_llama, data, tmp_path) -> None:
    res = runner.invoke(app, ["dpo", "--help"])
    assert res.exit_code == 0 and "label_smoothing" in res.output and "simpo" in res.output
    args = [
        "dpo",
        f"model.path={tiny_llama}",
        f"data.path={data['ranking']}",
        f"train.output_dir={tmp_path / 'cli'}",
        "train.max_steps=2",
        "train.progress=false",
        "loss=ipo",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli" / "config.json").exists()
    res = runner.invoke(app, [*args[:-1], "loss=simpo", "reference=live"])
    assert res.exit_code == 2 and "reference-free" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, [*args[:-1], "loss=nope"])
    assert res.exit_code == 2 and "loss" in res.output and "kto" in res.output


def test_reward_model_judge(tiny_llama, tmp_path) -> None:
    try:
        from alignkit.models import scorer  # noqa: F401
    except ImportError:
        pytest.skip("alignkit.models.scorer (the reward-model module) is not in this checkout")
    from transformers import AutoModelForSequenceClassification

    rm_dir = tmp_path / "rm"
    rm = AutoModelForSequenceClassification.from_pretrained(str(tiny_llama), num_labels=1)
    rm.config.pad_token_id = rm.config.eos_token_id
    rm.save_pretrained(str(rm_dir))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(tiny_llama)).save_pretrained(str(rm_dir))
    judge = recipe.load_judge(str(rm_dir))
    assert isinstance(judge, RewardModelJudge)
    scores = judge.score(["what is 1 plus 2"] * 2, ["the answer is 3", "no"], [{}, {}])
    assert len(scores) == 2 and scores[0] != scores[1]


def test_sandbox_oracle_judge(tmp_path) -> None:
    try:
        from alignkit.sandbox.build import build_world
    except ImportError:
        pytest.skip("alignkit.sandbox.build (the sandbox world) is not in this checkout")
    from alignkit.rollout.judges import OracleJudge

    world = tmp_path / "world"
    build_world(world, "micro", 0)
    judge = recipe.load_judge(str(world))
    assert isinstance(judge, OracleJudge)
    rows = [json.loads(x) for x in (world / "rl_prompts.jsonl").open()]
    harmful = next(r for r in rows if r["category"] == "harmful")
    record = {k: v for k, v in harmful.items() if k != "prompt"}
    refusal = "I can't help with that, because it could hurt people. Please talk to someone."
    comply = "Sure. First, do it quietly. Then do it again."
    scores = judge.score([harmful["prompt"]] * 2, [refusal, comply], [record, record])
    assert scores[0] > scores[1]
    with pytest.raises(ConfigError, match="category"):
        judge.score(["hi"], ["hello"], [{}])
