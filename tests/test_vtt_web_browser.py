"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium) takes the
reader study by keyboard: answers half, reloads, resumes, finishes; the owner page then shows
the right counts. Screenshots go to ``$MAMMOGAN_TEST_ARTIFACTS`` or ``<pytest tmp>/artifacts``."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mammogan_tf.evaluation.vtt import read_key
from mammogan_tf.evaluation.vtt_web.loadtest import ThreadedServer, demo_study
from mammogan_tf.evaluation.vtt_web.server import invite
from mammogan_tf.evaluation.vtt_web.store import Store
from mammogan_tf.evaluation.vtt_web.study import load_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no chromium/chromedriver on PATH (apt-get install chromium chromium-driver, as .ci/run does)",
                allow_module_level=True)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for downloads
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1100,700", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _text(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def _wait_image(driver, done):
    """Wait until the progress reads ``done`` answered and the next image is on screen."""
    WebDriverWait(driver, 60).until(lambda d: _text(d, "progress-text").startswith(f"{done} of "))
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "const i = document.getElementById('image'); return i.complete && i.naturalWidth > 0 "
        "&& i.style.visibility === 'visible'"))
    return driver.find_element(By.ID, "image").get_attribute("src").rsplit("/", 1)[1]


class Served:
    """A demo study served on a free loopback port in a thread, with reader erin and the owner."""

    def __init__(self, root, **reading):
        study_dir = demo_study(root / "study", n=3, size=32)
        self.key = read_key(study_dir / "key.csv")
        self.links = {name: path for name, _, path in invite(study_dir, "erin", "")}
        study = load_study(study_dir, **reading)
        self.served = ThreadedServer(study)
        self.base = self.served.url
        self.store = Store(study.database, self.key)

    def close(self):
        self.served.close()


def test_reader_answers_by_keyboard_resumes_after_reload_and_owner_sees_counts(tmp_path, browser):
    artifacts = Path(os.environ.get("MAMMOGAN_TEST_ARTIFACTS") or tmp_path / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    served = Served(tmp_path, confidence=True)
    key, links, base, store = served.key, served.links, served.base, served.store
    pressed = {}
    try:
        browser.get(base + links["erin"])
        body = browser.find_element(By.TAG_NAME, "body")
        for done in range(len(key)):
            if done == 3:
                browser.refresh()  # mid-way: the page resumes where the reader left off
                body = browser.find_element(By.TAG_NAME, "body")
            image_id = _wait_image(browser, done)
            if done == 1:  # window/level and zoom by keyboard
                zoom = _text(browser, "zoom-text")
                body.send_keys("+")
                body.send_keys("\ue013")  # arrow up: brighter
                style = browser.find_element(By.ID, "image").get_attribute("style")
                assert _text(browser, "zoom-text") != zoom and "brightness(1.05)" in style
                browser.save_screenshot(str(artifacts / "vtt_reading.png"))
            answer = "s" if done % 2 else "r"
            body.send_keys(answer)
            body.send_keys(str(1 + done % 5))
            body.send_keys("\ue007")  # Enter
            pressed[image_id] = ("synthetic" if answer == "s" else "real", 1 + done % 5)
        WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "done").is_displayed())
        assert _text(browser, "progress-text") == f"{len(key)} of {len(key)} answered"
        browser.save_screenshot(str(artifacts / "vtt_finished.png"))
        page_source = browser.page_source
        assert not any(name in page_source for name in key) and "truth" not in page_source
        rows = {store.opaque[r["image"]]: (r["answer"], r["confidence"]) for r in store.answers()}
        assert rows == pressed and len(rows) == len(key)  # every keypress answer stored once
        browser.get(base + links["owner"])
        row = browser.find_element(By.CSS_SELECTOR, "tr[data-reader='erin']")
        assert row.find_element(By.CLASS_NAME, "answered").text == f"{len(key)} / {len(key)}"
        correct = sum((pressed[store.opaque[name]][0] == "synthetic") == synthetic for name, synthetic in key.items())
        assert f"{correct / len(key):.3f}" in row.text
        browser.save_screenshot(str(artifacts / "vtt_results.png"))
    finally:
        served.close()
    assert all((artifacts / f"vtt_{n}.png").stat().st_size > 1000 for n in ("reading", "finished", "results"))


def test_time_limit_hides_the_image_and_the_answer_still_counts(tmp_path, browser):
    served = Served(tmp_path, time_limit_s=1)
    try:
        browser.get(served.base + served.links["erin"])
        image_id = _wait_image(browser, 0)
        WebDriverWait(browser, 10).until(lambda d: _text(d, "timer") == "time is up: answer now")
        assert browser.find_element(By.ID, "image").value_of_css_property("visibility") == "hidden"
        browser.find_element(By.TAG_NAME, "body").send_keys("s")  # no confidence asked: S submits at once
        assert _wait_image(browser, 1) != image_id
        (row,) = served.store.answers()
        assert served.store.opaque[row["image"]] == image_id and row["answer"] == "synthetic"
        assert row["response_ms"] >= 1000 and row["confidence"] is None
    finally:
        served.close()
