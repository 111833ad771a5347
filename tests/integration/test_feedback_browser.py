"""A person's path through the app in headless Chromium: sign in, rank an item with the
keyboard only, submit, and find that ranking in the export. Also: a prompt full of HTML is
shown as text and runs nothing.

Needs Debian's chromium and chromium-driver and the selenium package; skipped, with the
reason, when any is missing. Screenshots land in the test's temporary folder (and in
$ALIGNKIT_SCREENSHOT_DIR when set) for a person to look at.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignkit.feedback.cli import app as cli
from alignkit.feedback.importer import NewItem
from alignkit.feedback.store import FeedbackStore
from alignkit.feedback.testing import ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
XSS_PROMPT = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        f"Chromium or its driver is missing ({CHROMIUM}, {CHROMEDRIVER}): "
        "apt-get install -y chromium chromium-driver",
        allow_module_level=True,
    )

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    # Selenium must use the local driver and never try to download one.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # running as root in a container
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / f"{name}.png"))
    target = os.environ.get("ALIGNKIT_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(target) / f"{name}.png")


def keys(driver: webdriver.Chrome, *sequence: str) -> None:
    """Type at whatever has focus, as a person at the keyboard would (no clicks)."""
    chain = ActionChains(driver)
    for key in sequence:
        chain.send_keys(key)
    chain.perform()


def test_keyboard_only_ranking_reaches_the_export(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    db = str(tmp_path / "fb.db")
    store = FeedbackStore(db)
    store.add_items(
        [
            NewItem(
                "Which answer is best?",
                ["First answer", "Second answer", "Third answer, the best one"],
                {},
                "t:1",
            ),
            NewItem(
                XSS_PROMPT,
                ["<b>not bold</b>", "</li><script>window.__pwned = 3</script>"],
                {},
                "t:2",
            ),
        ]
    )
    token = store.add_annotator("alice")
    store.close()
    wait = WebDriverWait(browser, 15)

    with ServerProcess(db, log_path=tmp_path / "server.log") as server:
        browser.get(server.url + "/")
        wait.until(ec.visibility_of_element_located((By.ID, "token")))
        assert browser.switch_to.active_element.get_attribute("id") == "token"
        keys(browser, token, Keys.ENTER)
        wait.until(ec.visibility_of_element_located((By.ID, "task")))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#responses li")) == 3)
        assert browser.find_element(By.ID, "prompt").text == "Which answer is best?"
        screenshot(browser, tmp_path, "feedback-item-desktop")

        # Response 3 to the top (3, up, up), then mark response 1 unsafe (1, s); submit.
        keys(browser, "3", Keys.ARROW_UP, Keys.ARROW_UP, "1", "s")
        labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#responses li .label")]
        assert labels == ["Response 3", "Response 1", "Response 2"]
        assert "unsafe" in browser.find_element(
            By.CSS_SELECTOR, 'li[data-index="0"]'
        ).get_attribute("class")
        screenshot(browser, tmp_path, "feedback-ranked-desktop")
        keys(browser, Keys.ENTER)
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Saved ranking #1"))

        # The next item's prompt is HTML: it must appear as text and execute nothing.
        wait.until(ec.text_to_be_present_in_element((By.ID, "prompt"), "<script>"))
        assert browser.find_element(By.ID, "prompt").text == XSS_PROMPT
        assert (
            browser.find_elements(By.CSS_SELECTOR, "#prompt script, #prompt img, #responses b")
            == []
        )
        second = browser.find_elements(By.CSS_SELECTOR, "#responses li .response")[1].text
        assert second == "</li><script>window.__pwned = 3</script>"
        assert browser.execute_script("return window.__pwned === undefined")
        browser.set_window_size(390, 844)  # a phone
        screenshot(browser, tmp_path, "feedback-xss-phone")
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        ), "the page scrolls sideways on a phone-sized screen"

        keys(browser, "k")  # skip it
        wait.until(ec.visibility_of_element_located((By.ID, "done")))
        assert "1 ranked · 1 skipped" in browser.find_element(By.ID, "progress-text").text

    out = tmp_path / "ranking.jsonl"
    r = CliRunner().invoke(cli, ["export", "--format", "ranking", "--out", str(out), "--db", db])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 1
    assert rows[0]["prompt"] == "Which answer is best?"
    assert rows[0]["ranking"] == [2, 0, 1]
    assert rows[0]["safe"] == [False, True, True]
    assert rows[0]["annotator"] == "alice"


def test_admin_page_shows_counts(browser: webdriver.Chrome, tmp_path: Path) -> None:
    db = str(tmp_path / "fb.db")
    store = FeedbackStore(db)
    store.add_items([NewItem(f"p{i}", ["a", "b"], {}, f"t:{i}") for i in range(3)])
    who = store.authenticate(store.add_annotator("<i>mallory</i>"))
    assert who is not None
    ann = store.next_assignment(who)
    assert ann is not None
    store.submit(who, ann.id, [1, 0], [True, False])
    admin = store.add_annotator("boss", is_admin=True)
    store.close()
    wait = WebDriverWait(browser, 15)
    with ServerProcess(db, log_path=tmp_path / "server.log") as server:
        browser.get(server.url + "/admin#token=" + admin)
        wait.until(ec.visibility_of_element_located((By.ID, "dashboard")))
        assert "#token" not in browser.current_url  # the token is taken out of the address bar
        rows = browser.find_elements(By.CSS_SELECTOR, "#annotators tr")
        assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [
            "<i>mallory</i>",
            "boss (admin)",
        ]
        assert browser.find_elements(By.CSS_SELECTOR, "#annotators i") == []
        metrics = {
            m.find_element(By.CLASS_NAME, "name").text: m.find_element(By.CLASS_NAME, "value").text
            for m in browser.find_elements(By.CSS_SELECTOR, "#summary .metric")
        }
        assert metrics["items"] == "3" and metrics["rankings"] == "1"
        screenshot(browser, tmp_path, "feedback-admin-desktop")


def test_dragging_the_handle_reorders(browser: webdriver.Chrome, tmp_path: Path) -> None:
    """Pointer dragging (mouse here; the same pointer events serve touch) moves a response."""
    db = str(tmp_path / "fb.db")
    store = FeedbackStore(db)
    store.add_items([NewItem("Order these", ["one", "two", "three"], {}, "t:1")])
    token = store.add_annotator("alice")
    store.close()
    wait = WebDriverWait(browser, 15)
    with ServerProcess(db, log_path=tmp_path / "server.log") as server:
        browser.get(server.url + "/#token=" + token)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#responses li")) == 3)
        cards = browser.find_elements(By.CSS_SELECTOR, "#responses li")
        handle = cards[2].find_element(By.CLASS_NAME, "handle")
        top = cards[0].location["y"] + 5
        ActionChains(browser).click_and_hold(handle).move_by_offset(
            0, top - handle.location["y"]
        ).release().perform()
        labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#responses li .label")]
        assert labels == ["Response 3", "Response 1", "Response 2"]
        browser.find_element(By.ID, "submit").click()
        wait.until(ec.visibility_of_element_located((By.ID, "done")))
    store = FeedbackStore(db)
    try:
        assert [r.ranking for r in store.iter_rankings()] == [[2, 0, 1]]
    finally:
        store.close()
