"""The over-optimisation study: window means, the gold peak, the verdict, bad input."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.data.readers import DataError
from alignkit.evaluation.overopt import overopt_report, overoptimisation_curve, read_rl_metrics


def rows_for(gold: list[float], proxy: list[float], kl: list[float]) -> list[dict]:
    return [
        {"iteration": i + 1, "reward": p, "gold_reward": g, "kl": k}
        for i, (g, p, k) in enumerate(zip(gold, proxy, kl, strict=True))
    ]


def test_window_means_and_a_peak_then_fall_is_over_optimisation() -> None:
    # Four windows of 2: gold 0.1, 0.5, 0.3, 0.0 (peak in window 2); proxy rises throughout.
    gold = [0.1, 0.1, 0.5, 0.5, 0.3, 0.3, 0.0, 0.0]
    proxy = [0.0, 0.0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6]
    kl = [0.0, 0.0, 1.0, 1.0, 4.0, 4.0, 9.0, 9.0]
    c = overoptimisation_curve(rows_for(gold, proxy, kl), window=2)
    assert [p["iterations"] for p in c["points"]] == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert [p["sqrt_kl"] for p in c["points"]] == [0.0, 1.0, 2.0, 3.0]
    assert c["gold_peak"]["index"] == 1 and math.isclose(c["gold_peak"]["gold"], 0.5)
    assert math.isclose(c["proxy_gain_after_gold_peak"], 0.4)
    assert math.isclose(c["gold_drop_after_peak"], 0.5)
    assert c["over_optimised"] is True


def test_gold_that_keeps_rising_is_not_over_optimisation() -> None:
    up = [0.1, 0.12, 0.3, 0.32, 0.5, 0.52]
    c = overoptimisation_curve(rows_for(up, up, [0.0, 0.1, 0.5, 0.6, 1.0, 1.1]), window=2)
    assert c["gold_peak"]["index"] == 2
    assert c["over_optimised"] is False


def test_noise_within_one_standard_error_is_not_called_over_optimisation() -> None:
    # The last window's gold is below the peak, but by less than the window's own spread.
    gold = [0.0, 1.0, 0.6, 0.2]
    proxy = [0.0, 1.0, 0.6, 0.5]
    c = overoptimisation_curve(rows_for(gold, proxy, [0.0, 0.0, 1.0, 1.0]), window=2)
    assert c["over_optimised"] is False


def test_negative_kl_estimates_are_clamped_and_short_tails_folded() -> None:
    rows = rows_for([0.1] * 9, [0.1] * 9, [-0.01, -0.02] + [0.5] * 7)
    c = overoptimisation_curve(rows, window=2)
    assert c["points"][0]["sqrt_kl"] == 0.0
    assert len(c["points"]) == 5  # a last window of half the size or more is kept
    assert len(overoptimisation_curve(rows, window=4)["points"]) == 2  # the lone 9th row is not
    with pytest.raises(ValueError, match="window"):
        overoptimisation_curve(rows, window=0)


def test_report_writes_json_and_png_and_cli_prints_the_verdict(tmp_path) -> None:
    gold = [0.1, 0.1, 0.5, 0.5, 0.3, 0.3, 0.0, 0.0]
    proxy = [0.0, 0.0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6]
    rows = rows_for(gold, proxy, [0.0, 0.0, 1.0, 1.0, 4.0, 4.0, 9.0, 9.0])
    run = tmp_path / "grpo"
    run.mkdir()
    lines = [json.dumps({"step": 0, "loss": 1.0})] + [json.dumps(r) for r in rows]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert len(read_rl_metrics(run)) == 8  # rows without gold/kl are skipped
    overopt_report(run, window=2)
    assert json.loads((run / "overopt.json").read_text())["over_optimised"] is True
    assert (run / "overopt.png").read_bytes()[:4] == b"\x89PNG"
    res = CliRunner().invoke(app, ["overopt", str(run), "--window", "2", "--no-plot"])
    assert res.exit_code == 0, res.output
    assert "over-optimised" in res.output and "gold peak" in res.output


def test_a_run_without_gold_says_to_set_monitor_world(tmp_path) -> None:
    run = tmp_path / "dpo"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.1, "kl": 0.0}) + "\n")
    with pytest.raises(DataError, match="monitor.world"):
        read_rl_metrics(run)
    (run / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match="line 1"):
        read_rl_metrics(run)
    res = CliRunner().invoke(app, ["overopt", str(tmp_path / "missing")])
    assert res.exit_code != 0 and "not found" in res.output
