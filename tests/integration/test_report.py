"""The HTML report: built from run folders (synthetic ones in alignkit's layout, and a real
micro pipeline), self-contained, escaped, complete, and rendered by a real headless browser.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from report_fixtures import XSS, make_runs

from alignkit.config import ConfigError
from alignkit.evaluation.plots import curve_groups, pareto_front
from alignkit.evaluation.report import SECTIONS, discover, pick_examples, write_report
from alignkit.pipeline import Pipeline, load_pipeline

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class PageParser(HTMLParser):
    """Collects every tag's attributes, the section ids and the script bodies."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.sections: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            self.attrs.append((tag, k, v or ""))
        if tag == "section":
            self.sections.append(dict(attrs).get("id") or "")
        if tag == "script":
            self.scripts += 1


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("report")
    settings = make_runs(root / "runs")
    path = write_report(settings, root / "out")
    return path, path.read_text(encoding="utf-8"), settings


def test_every_image_is_an_embedded_decodable_png(report: tuple[Path, str, dict]) -> None:
    path, page, _ = report
    p = PageParser()
    p.feed(page)
    srcs = [v for tag, k, v in p.attrs if tag == "img" and k == "src"]
    # 7 figures (levels, frontier, win rates, categories, 5 training runs → 9) + the RM PNG.
    assert len(srcs) == 10
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_MAGIC)
    assert path.name == "report.html" and (path.parent / "report.json").is_file()


def test_page_loads_nothing_from_outside(report: tuple[Path, str, dict]) -> None:
    _, page, _ = report
    p = PageParser()
    p.feed(page)
    for tag, k, v in p.attrs:
        if k in ("src", "href", "srcset", "action", "poster", "data"):
            assert v.startswith(("data:", "#")), f"<{tag} {k}={v[:80]!r}> leaves the page"
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.I)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page  # the CSP forbids any other load


def test_responses_are_escaped(report: tuple[Path, str, dict]) -> None:
    _, page, _ = report
    assert XSS not in page
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in page
    p = PageParser()
    p.feed(page)
    assert p.scripts == 1  # ours (the image check); nothing from the data became a tag
    assert not any(k == "onerror" for _, k, _v in p.attrs)


def test_all_sections_present_and_filled(report: tuple[Path, str, dict]) -> None:
    _, page, settings = report
    p = PageParser()
    p.feed(page)
    assert p.sections == [sid for sid, _, _ in SECTIONS]
    stage_rows = re.findall(r'<th scope="row"><span class="dot"[^>]*></span>([a-z]+)', page)
    assert stage_rows == ["base", "sft", "rm", "dpo", "ppo"]  # stage order, reward model too
    for text in ("Following instructions", "Matching human preferences", "Holding human values"):
        assert text in page
    assert "7m 00s" in page and "1m 15s" in page  # wall times from summary.json
    for key in ("by_category", "length_bias", "accuracy_when_longer_loses", "ece"):
        assert f">{key}<" in page  # rm_report.json, as the reward-model code writes it
    rm_png = base64.b64encode((Path(settings["runs"]["rm"]) / "rm_report.png").read_bytes())
    assert rm_png.decode() in page
    assert 'class="empty"' not in page  # every section has something to show
    assert "contrast_homonyms" in page and "over_refusal_rate" in page  # the suite result
    assert "+0.589 vs sft" in page  # final model's gain in gold reward over the reference


def test_discover_finds_runs_and_eval_of_a_folder(report: tuple[Path, str, dict]) -> None:
    _, _, settings = report
    root = Path(settings["eval"]).parent
    found = discover([root])
    assert found["eval"] == settings["eval"]
    assert sorted(found["runs"]) == sorted(settings["runs"])
    with pytest.raises(FileNotFoundError, match="neither a run"):
        discover([root / "eval" / "base"])


def test_unknown_setting_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['run'\]"):
        write_report({"run": {}}, tmp_path)


def test_examples_are_the_same_prompts_across_models() -> None:
    def rows(tag: str) -> list[dict[str, Any]]:
        return [
            {"id": f"{c}-{i}", "category": c, "prompt": f"p{c}{i}", "response": f"{tag}{i}"}
            for i in range(3)
            for c in ("a", "b")
        ]

    responses = {"m1": rows("x"), "m2": rows("y")[1:]}  # m2 lacks a-0
    picked = pick_examples(responses, ["m1", "m2"], 3)
    assert [rec["id"] for rec, _ in picked] == ["b-0", "a-1", "b-1"]  # categories alternate
    assert all(by["m1"]["prompt"] == by["m2"]["prompt"] for _, by in picked)


def test_plot_helpers() -> None:
    assert pareto_front([(0.0, 0.1), (2.0, 0.5), (1.0, 0.6), (3.0, 0.4)]) == [
        (0.0, 0.1),
        (1.0, 0.6),
    ]
    rows = [{"step": 1, "loss": 1.0, "lr": 1e-5, "rewards/chosen": 0.1, "kl": 0.0, "x": "nan"}]
    assert curve_groups(rows) == [
        ("loss", ["loss"]),
        ("reward", ["rewards/chosen"]),
        ("KL to reference", ["kl"]),
    ]


def test_report_stage_of_a_real_pipeline(tmp_path: Path) -> None:
    """The pipeline dispatches ``run: report`` to write_report with ${stage} folders."""
    train = {"train.max_steps": 3, "train.batch_size": 4, "train.progress": False}
    spec = {
        "recipe": "pipeline",
        "root": str(tmp_path / "runs"),
        "stages": [
            {"name": "world", "run": "sandbox", "with": {"preset": "micro", "seed": 1}},
            {
                "name": "base",
                "run": "pretrain",
                "with": {
                    "tokenizer": "${world}/tokenizer",
                    "data.path": "${world}/corpus.jsonl",
                    "data.max_length": 64,
                    "init.hidden_size": 32,
                    "init.intermediate_size": 64,
                    "init.num_hidden_layers": 2,
                    "init.num_attention_heads": 2,
                    **train,
                },
            },
            {
                "name": "sft",
                "run": "sft",
                "with": {
                    "model.path": "${base}",
                    "data.path": "${world}/sft.jsonl",
                    "data.max_length": 96,
                    **train,
                },
            },
            {
                "name": "eval",
                "run": "eval",
                "with": {
                    "world": "${world}",
                    "models": {"base": "${base}", "sft": "${sft}"},
                    "reference": "${sft}",
                    "limit": 6,
                    "max_new_tokens": 6,
                },
            },
            {
                "name": "report",
                "run": "report",
                "with": {"runs": {"base": "${base}", "sft": "${sft}"}, "eval": "${eval}"},
            },
        ],
    }
    f = tmp_path / "pipe.yaml"
    f.write_text(yaml.safe_dump(spec))
    Pipeline(load_pipeline(f)).run(log=lambda s: None)
    page = (tmp_path / "runs" / "report" / "report.html").read_text()
    table = json.loads((tmp_path / "runs" / "report" / "report.json").read_text())
    assert table["models"] == ["base", "sft"] and table["reference"] == "sft"
    assert table["wall_time_s"]["sft"] is not None
    assert "training curves of base" in page and "training curves of sft" in page
    assert page.count("<section") == len(SECTIONS)


# --------------------------------------------------------------------------------------------
# A real browser
# --------------------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"Chromium not found at {CHROMIUM}: apt-get install -y chromium",
)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",  # let the load event (and the image check) run
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


@needs_chromium
def test_headless_chromium_renders_the_page_with_every_image(
    report: tuple[Path, str, dict], tmp_path: Path
) -> None:
    path, page, _ = report
    shot = tmp_path / "report.png"
    r = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", path.as_uri())
    assert shot.is_file(), r.stderr[-2000:]
    png = shot.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 50_000  # a rendered page, not a blank one
    target = os.environ.get("ALIGNKIT_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / "report.png")

    dom = chromium(tmp_path, "--dump-dom", path.as_uri()).stdout
    n_img = page.count("<img ")
    assert f'data-images="{n_img}"' in dom and 'data-images-ok="true"' in dom, dom[:300]
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom).group(1)  # type: ignore[union-attr]

    # The check can fail: the same page with one undecodable image is reported as broken.
    broken = tmp_path / "broken.html"
    broken.write_text(
        page.replace("<main>", '<main><img alt="x" src="data:image/png;base64,AAAA">')
    )
    dom = chromium(tmp_path, "--dump-dom", broken.as_uri()).stdout
    assert 'data-images-ok="false"' in dom
