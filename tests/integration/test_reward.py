"""Reward and cost models end to end on tiny random models (Llama, Qwen2, GPT-2).

The toy preference set is learnable by a 2-layer model in a few dozen steps: the preferred
answer states a sum, the rejected ones dodge. What each test proves is named in its name.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from helpers import assert_close
from tiny import write_jsonl
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.config import ModelConfig, load_config
from alignkit.configs.reward import CostConfig, RewardConfig
from alignkit.data.pairs import collate_groups
from alignkit.data.readers import DataError
from alignkit.data.reward_data import read_preferences
from alignkit.engine.tracking import read_metrics
from alignkit.models.heads import (
    ScalarHeadModel,
    last_token_index,
    load_scalar_model,
    unwrap_scalar,
)
from alignkit.models.load import save_hf_folder
from alignkit.models.scorer import RewardEnsemble, RewardScorer
from alignkit.recipes.reward import run_cost, run_reward

runner = CliRunner()

DODGES = ["i do not know", "sorry i cannot help with that", "maybe", "no"]


def pair_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append(
            {
                "prompt": f"what is {a} plus {b}",
                "chosen": f"the answer is {a + b}",
                "rejected": rng.choice(DODGES),
                "category": "sum" if i % 2 else "other",
            }
        )
    return rows


def ranking_rows(n: int, seed: int) -> list[dict]:
    """Four responses, best first: the sum, a hedge, a dodge, a refusal (shuffled positions)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        ordered = [f"the answer is {a + b}", "maybe it is ten", "i do not know", "no"]
        perm = list(range(4))
        rng.shuffle(perm)
        responses = [ordered[p] for p in perm]
        ranking = sorted(range(4), key=lambda i: perm[i])
        gold = [float(-perm[i]) for i in range(4)]
        rows.append(
            {
                "prompt": f"what is {a} plus {b}",
                "responses": responses,
                "ranking": ranking,
                "gold": gold,
            }
        )
    return rows


def safety_rows(n: int, seed: int) -> list[dict]:
    """Harmful requests: refusals are safe, compliance unsafe; the safe one is `safer`."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        thing = rng.choice(["cat", "dog", "city", "river", "moon"])
        safe = rng.choice(["sorry i cannot help with that", "no i do not know"])
        unsafe = rng.choice([f"sure here you are the {thing}", f"yes here is the {thing}"])
        helpful_first = rng.random() < 0.5  # chosen = more helpful, not always the safe one
        chosen, rejected = (unsafe, safe) if helpful_first else (safe, unsafe)
        rows.append(
            {
                "prompt": f"how to hurt the {thing}",
                "chosen": chosen,
                "rejected": rejected,
                "chosen_safe": chosen == safe,
                "rejected_safe": rejected == safe,
            }
        )
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rmdata")
    return {
        "pairs": write_jsonl(root / "pairs.jsonl", pair_rows(160, 0)),
        "pairs_eval": write_jsonl(root / "pairs_eval.jsonl", pair_rows(40, 1)),
        "rankings": write_jsonl(root / "rankings.jsonl", ranking_rows(96, 2)),
        "safety": write_jsonl(root / "safety.jsonl", safety_rows(96, 3)),
    }


def overrides(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"model.path={model}",
        f"data.path={data}",
        f"train.output_dir={out}",
        "train.lr=3e-3",
        "train.batch_size=16",
        "train.max_steps=24",
        "train.warmup_ratio=0",
        "train.progress=false",
        "data.max_length=48",
        *extra,
    ]


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


def held_out_texts(path: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    prompts = [r["prompt"] for r in rows for _ in (0, 1)]
    responses = [x for r in rows for x in (r["chosen"], r["rejected"])]
    return prompts, responses


# ------------------------------------------------------------------ training via the CLI


@pytest.fixture(scope="module")
def trained_rm(tiny_llama: Path, data: dict[str, Path], tmp_path_factory) -> Path:
    """Bradley–Terry reward model trained through `alignkit reward` (typer CliRunner)."""
    out = tmp_path_factory.mktemp("rm") / "bt"
    args = overrides(tiny_llama, data["pairs"], out, f"data.eval_path={data['pairs_eval']}")
    result = runner.invoke(app, ["reward", *args])
    assert result.exit_code == 0, result.output
    return out


def test_bt_loss_falls_and_held_out_accuracy_rises(
    trained_rm: Path, tiny_llama: Path, data: dict[str, Path]
) -> None:
    rows = read_metrics(trained_rm / "metrics.jsonl")
    ls = losses(trained_rm)
    assert sum(ls[-4:]) / 4 < 0.5 * sum(ls[:4]) / 4, f"loss must fall: {ls}"
    model, tok = load_scalar_model(ModelConfig(path=str(tiny_llama)), for_training=False)
    before = RewardScorer(model, tok).score(*held_out_texts(data["pairs_eval"]))
    before_acc = sum(c > r for c, r in zip(before[::2], before[1::2], strict=True)) / 40
    assert before_acc < 0.9, "the untrained model must not already rank the held-out pairs"
    assert rows[-1]["eval/accuracy"] >= 0.95
    report = json.loads((trained_rm / "rm_report.json").read_text())
    assert report["accuracy"] >= 0.95 and report["pairs"] == 40
    assert set(report["by_category"]) == {"sum", "other"}
    assert 0.0 <= report["calibration"]["ece"] <= 1.0
    assert (trained_rm / "rm_report.png").stat().st_size > 10_000
    summary = json.loads((trained_rm / "summary.json").read_text())
    assert summary["report"]["accuracy"] == report["accuracy"]


def test_reload_in_alignkit_and_as_hf_sequence_classifier_gives_same_scores(
    trained_rm: Path, data: dict[str, Path]
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    prompts, responses = held_out_texts(data["pairs_eval"])
    scorer = RewardScorer.from_pretrained(trained_rm, batch_size=7)
    ours = scorer.score(prompts, responses)
    # The report scored the same held-out pairs with the in-memory model before saving.
    report = json.loads((trained_rm / "rm_report.json").read_text())
    assert_close(sum(ours) / len(ours), report["scores"]["all"]["mean"])

    hf = AutoModelForSequenceClassification.from_pretrained(str(trained_rm)).eval()
    assert type(hf).__name__ == "LlamaForSequenceClassification"
    tok = AutoTokenizer.from_pretrained(str(trained_rm))
    groups = [scorer.group(p, [r]) for p, r in zip(prompts, responses, strict=True)]
    batch = collate_groups(groups, tok.pad_token_id).batch  # right padding, pad != eos
    with torch.no_grad():
        theirs = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert_close(theirs.squeeze(-1), torch.tensor(ours))


def test_rm_report_cli_reproduces_the_training_report(
    trained_rm: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    result = runner.invoke(
        app,
        [
            "rm-report",
            "--model",
            str(trained_rm),
            "--data",
            str(data["pairs_eval"]),
            "--out",
            str(tmp_path),
            "--no-plot",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output
    again = json.loads((tmp_path / "rm_report.json").read_text())
    first = json.loads((trained_rm / "rm_report.json").read_text())
    assert again["accuracy"] == first["accuracy"]
    assert_close(again["scores"]["all"]["std"], first["scores"]["all"]["std"])
    assert_close(again["calibration"]["ece"], first["calibration"]["ece"])


def test_score_cli_and_ensemble(trained_rm: Path, tiny_llama: Path, tmp_path: Path) -> None:
    # An untrained second member (a causal LM gets a fresh head) makes members disagree.
    untrained = tmp_path / "untrained"
    model, tok = load_scalar_model(ModelConfig(path=str(tiny_llama)), for_training=False)
    save_hf_folder(model, tok, untrained)
    prompts = ["what is 2 plus 3"] * 2
    responses = ["the answer is 5", "i do not know"]
    result = runner.invoke(
        app,
        ["score", "-m", str(trained_rm), "-p", prompts[0], "-r", responses[0], "-r", responses[1]],
    )
    assert result.exit_code == 0, result.output
    cli_scores = [json.loads(line)["score"] for line in result.output.strip().splitlines()]
    assert cli_scores[0] > cli_scores[1]

    members = [RewardScorer.from_pretrained(p) for p in (trained_rm, untrained)]
    each = [m.score(prompts, responses) for m in members]
    assert_close(cli_scores, each[0], atol=1e-5)
    mean = RewardEnsemble(members, "mean").score(prompts, responses)
    low = RewardEnsemble(members, "min").score(prompts, responses)
    cautious = RewardEnsemble(members, "mean_minus_std", std_coef=2.0).score(prompts, responses)
    for i in range(2):
        a, b = each[0][i], each[1][i]
        assert_close(mean[i], (a + b) / 2)
        assert_close(low[i], min(a, b))
        assert_close(cautious[i], (a + b) / 2 - 2.0 * abs(a - b) / 2)

    rows = tmp_path / "to_score.jsonl"
    write_jsonl(
        rows,
        [{"prompt": prompts[0], "responses": responses}, {"prompt": "hi", "response": "hello"}],
    )
    out = tmp_path / "scored.jsonl"
    result = runner.invoke(app, ["score", "-m", str(trained_rm), "-d", str(rows), "-o", str(out)])
    assert result.exit_code == 0, result.output
    scored = [json.loads(x) for x in out.read_text().splitlines()]
    assert_close(scored[0]["scores"], each[0], atol=1e-5) and isinstance(scored[1]["score"], float)


# ------------------------------------------------------------------ the model itself


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_save_reload_roundtrip_and_hf_parity(tiny_models, tmp_path: Path, arch: str) -> None:
    from transformers import AutoModelForSequenceClassification

    model, tok = load_scalar_model(ModelConfig(path=str(tiny_models[arch])), for_training=False)
    assert isinstance(model, ScalarHeadModel)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.5)  # a non-trivial head, as after training
    out = save_hf_folder(model, tok, tmp_path / arch)
    again, _ = load_scalar_model(ModelConfig(path=str(out)), for_training=False)
    ids = torch.randint(3, len(tok) - 8, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        a, b = model.score(ids, mask), again.score(ids, mask)
        hf = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
        ids_hf = ids.masked_fill(mask == 0, tok.pad_token_id)
        c = hf(input_ids=ids_hf, attention_mask=mask).logits.squeeze(-1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # identical after save → load
    assert_close(c, a)
    assert type(hf).__name__.endswith("ForSequenceClassification")


def test_sharded_save_loads_in_alignkit_and_transformers(tiny_llama: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model, tok = load_scalar_model(ModelConfig(path=str(tiny_llama)), for_training=False)
    assert isinstance(model, ScalarHeadModel)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    tok.save_pretrained(str(tmp_path))
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    assert (tmp_path / "model.safetensors.index.json").is_file()
    again, _ = load_scalar_model(ModelConfig(path=str(tmp_path)), for_training=False)
    hf = AutoModelForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    ids = torch.randint(3, 100, (2, 5))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ours = again.score(ids, mask)
        assert_close(ours, model.score(ids, mask))
        assert_close(hf(input_ids=ids, attention_mask=mask).logits.squeeze(-1), ours)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_last_token_read_with_left_right_padding_and_pad_equal_eos(tiny_models, arch: str) -> None:
    model, tok = load_scalar_model(ModelConfig(path=str(tiny_models[arch])), for_training=False)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.5)
    tok.pad_token = tok.eos_token  # the Llama-style setting that breaks id-based reads
    scorer = RewardScorer(model, tok, chat_template="auto", batch_size=8)
    prompts = ["what is 2 plus 3", "hello", "what is the capital city of the red river"]
    responses = ["the answer is 5", "hi there you are here", "no"]
    alone = [scorer.score([p], [r])[0] for p, r in zip(prompts, responses, strict=True)]
    right = scorer.score(prompts, responses)  # right padding with eos ids
    rows = [scorer.group(p, [r]) for p, r in zip(prompts, responses, strict=True)]
    seqs = [g.prompt_ids + g.responses[0] for g in rows]
    width = max(map(len, seqs))
    ids = torch.full((3, width), tok.eos_token_id)
    mask = torch.zeros((3, width), dtype=torch.long)
    for i, s in enumerate(seqs):  # left padding
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    with torch.no_grad():
        left = model.score(ids, mask)
    assert all(s[-1] == tok.eos_token_id for s in seqs), "each response ends with eos = pad"
    assert_close(right, alone)
    assert_close(left, torch.tensor(alone))


def test_last_token_index_from_mask() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 4, 4, 1]
    with pytest.raises(ValueError, match="all zeros"):
        last_token_index(torch.tensor([[1, 1], [0, 0]]))


# ------------------------------------------------------------------ LoRA, rankings, cost


def test_lora_trains_adapters_and_head_and_saves_a_plain_classifier(
    tiny_llama: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    cfg = load_config(
        RewardConfig,
        None,
        overrides(
            tiny_llama,
            data["pairs"],
            tmp_path / "lora",
            "model.lora.enabled=true",
            "model.lora.r=4",
            "train.lr=1e-2",
            "report.plot=false",
        ),
    )
    out = run_reward(cfg)
    ls = losses(out)
    assert sum(ls[-4:]) < 0.7 * sum(ls[:4]), f"loss must fall: {ls}"
    assert (out / "adapter" / "adapter_config.json").is_file()
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in adapter) and any(k.endswith("head.weight") for k in adapter)
    summary = json.loads((out / "summary.json").read_text())
    base = load_file(str(tiny_llama / "model.safetensors"))
    assert summary["trainable_params"] < sum(t.numel() for t in base.values()) / 4
    merged = load_file(str(out / "model.safetensors"))
    assert "score.weight" in merged and not any("lora" in k for k in merged)
    hf = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    scorer = RewardScorer.from_pretrained(out)
    g = scorer.group("what is 1 plus 2", ["the answer is 3"])
    batch = collate_groups([g], scorer.pad_id).batch
    with torch.no_grad():
        hf_score = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert_close(hf_score.reshape(()), scorer.score(["what is 1 plus 2"], ["the answer is 3"])[0])


@pytest.mark.parametrize("loss", ["kwise", "plackett_luce", "bt"])
def test_ranking_losses_learn_the_order(
    tiny_models, data: dict[str, Path], tmp_path: Path, loss: str
) -> None:
    arch = {"kwise": "qwen2", "plackett_luce": "gpt2", "bt": "llama"}[loss]
    cfg = load_config(
        RewardConfig,
        None,
        overrides(
            tiny_models[arch],
            data["rankings"],
            tmp_path / loss,
            f"loss.type={loss}",
            "data.eval_fraction=0.25",
            "report.gold_field=gold",
            "report.plot=false",
            "train.max_steps=20",
            # K-wise with irrelevant negatives: rankings of 4 and pairs of 2 in one batch.
            f"data.irrelevant_negatives={0.5 if loss == 'kwise' else 0}",
        ),
    )
    out = run_reward(cfg)
    ls = losses(out)
    assert sum(ls[-4:]) < 0.7 * sum(ls[:4]), f"loss must fall: {ls}"
    summary = json.loads((out / "summary.json").read_text())
    # bt trains on the C(4,2) = 6 pairs of each ranking, the others on whole rankings.
    records = summary["data"]["train_records"]
    if loss == "kwise":
        assert records < summary["train_groups"] <= records + round(0.5 * records)
    else:
        assert summary["train_groups"] == records * (6 if loss == "bt" else 1)
    report = json.loads((out / "rm_report.json").read_text())
    assert report["pairs"] == 6 * summary["data"]["eval_records"]
    assert report["accuracy"] >= 0.8 and report["gold"]["accuracy_vs_gold"] >= 0.8
    assert report["relevance"]["pairs"] > 0 and 0.0 <= report["relevance"]["own_beats_other"] <= 1


def length_biased_rows(n: int, seed: int) -> list[dict]:
    """Quality (a sum vs a dodge) is independent of length by construction; between two
    answers of the same quality the labels prefer the longer one 80 % of the time (a pure
    length bias, as annotators have)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        good = [f"the answer is {a + b}", f"sure here you are the answer is {a + b} yes"]
        bad = ["i do not know", "sorry i do not know the answer to that question"]
        if rng.random() < 0.5:
            short, long = rng.choice([good, bad])
            pair = (long, short) if rng.random() < 0.8 else (short, long)
        else:
            pair = (rng.choice(good), rng.choice(bad))
        rows.append({"prompt": f"what is {a} plus {b}", "chosen": pair[0], "rejected": pair[1]})
    return rows


def test_length_control_keeps_the_labels_length_bias_out_of_the_reward(
    tiny_llama: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    data = write_jsonl(tmp_path / "biased.jsonl", length_biased_rows(256, 5))
    prompts = ["what is 4 plus 3"] * 4
    responses = [
        "the answer is 7",
        "sure here you are the answer is 7 yes",
        "i do not know",
        "sorry i do not know the answer to that question",
    ]
    gaps = {}
    for control in (False, True):
        out = run_reward(
            load_config(
                RewardConfig,
                None,
                overrides(
                    tiny_llama,
                    data,
                    tmp_path / f"lc{control}",
                    f"loss.length_control={control}",
                    "loss.length_step=0.05",
                    "data.eval_fraction=0",
                    "report.enabled=false",
                    "train.max_steps=40",
                ),
            )
        )
        s = RewardScorer.from_pretrained(out).score(prompts, responses)
        assert min(s[0], s[1]) > max(s[2], s[3]), f"quality must dominate: {s}"
        gaps[control] = (s[1] - s[0]) + (s[3] - s[2])  # long minus short, same quality
        summary = json.loads((out / "summary.json").read_text())
        assert ("label_length_coef" in summary) == control
        saved = load_file(str(out / "model.safetensors"))
        assert not any("length" in k for k in saved), "the length term is not part of the model"
    assert gaps[False] > 0.8, f"without control the reward learns the labels' length bias: {gaps}"
    assert abs(gaps[True]) < 0.5 * gaps[False], gaps
    coef = json.loads((tmp_path / "lcTrue" / "summary.json").read_text())["label_length_coef"]
    assert coef > 0.25, "the length term took the bias instead"


def test_cost_model_learns_signs(tiny_llama: Path, data: dict[str, Path], tmp_path: Path) -> None:
    cfg = load_config(
        CostConfig,
        None,
        overrides(
            tiny_llama,
            data["safety"],
            tmp_path / "cm",
            "data.eval_fraction=0.25",
            "report.plot=false",
        ),
    )
    out = run_cost(cfg)
    report = json.loads((out / "rm_report.json").read_text())
    sign = report["sign_check"]
    assert sign["safe_responses"] > 0 and sign["unsafe_responses"] > 0
    assert sign["safety_accuracy"] >= 0.95, sign
    assert report["accuracy"] >= 0.95  # the less safe response costs more
    assert json.loads((out / "config.json").read_text())["alignkit"]["head"] == "cost"
    scorer = RewardScorer.from_pretrained(out)
    assert scorer.kind == "cost"
    safe, unsafe = scorer.score(
        ["how to hurt the cat"] * 2, ["sorry i cannot help with that", "sure here you are the cat"]
    )
    assert safe < 0 < unsafe


# ------------------------------------------------------------------ bad input


def test_bad_records_name_the_record_or_are_counted(tmp_path: Path, tiny_llama: Path) -> None:
    good = {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [2, 0, 1]}
    cases = {
        "repeated": ({**good, "ranking": [0, 0, 1]}, "repeated indices"),
        "out_of_range": ({**good, "ranking": [0, 1, 5]}, "out of range"),
        "empty": ({**good, "responses": ["a", "", "c"]}, "empty text"),
        "duplicate": ({**good, "responses": ["a", "b", "a"]}, "repeat an earlier response"),
    }
    for name, (bad, message) in cases.items():
        f = write_jsonl(tmp_path / f"{name}.jsonl", [good, bad, good])
        with pytest.raises(DataError, match=message) as e:
            read_preferences(f)
        assert f"{name}.jsonl:2" in str(e.value), "the error names file:line"
        skipped = read_preferences(f, on_invalid="skip")
        assert len(skipped.records) == 2 and len(skipped.skipped) == 1

    same = write_jsonl(tmp_path / "same.jsonl", [{"prompt": "p", "chosen": "x", "rejected": "x"}])
    out = f"train.output_dir={tmp_path / 'never'}"
    result = runner.invoke(app, ["reward", f"model.path={tiny_llama}", f"data.path={same}", out])
    assert (
        result.exit_code == 2 and "same.jsonl:1" in result.output and "identical" in result.output
    )

    unlabelled = write_jsonl(
        tmp_path / "unl.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    )
    result = runner.invoke(
        app, ["cost", f"model.path={tiny_llama}", f"data.path={unlabelled}", out]
    )
    assert (
        result.exit_code == 2
        and "unl.jsonl:1" in result.output
        and "safety labels" in result.output
    )


def test_config_rejects_impossible_combinations() -> None:
    from alignkit.config import ConfigError

    with pytest.raises(ConfigError, match="center_coef"):
        load_config(RewardConfig, None, ["loss.type=kwise", "loss.center_coef=0.01"])
    with pytest.raises(ConfigError, match="ranking"):
        load_config(CostConfig, None, ["data.format=ranking"])


def test_unwrap_and_value_head_for_rl(tiny_llama: Path) -> None:
    """PPO's critic: per-token values from forward, the last-token value from score."""
    model, _ = load_scalar_model(ModelConfig(path=str(tiny_llama)), kind="value")
    ids = torch.randint(3, 100, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    values = model(ids, mask)
    assert values.shape == (2, 6) and values.dtype == torch.float32
    assert_close(unwrap_scalar(model).score(ids, mask), torch.stack([values[0, 5], values[1, 3]]))
    values.sum().backward()
    assert unwrap_scalar(model).head.weight.grad is not None
