"""The review pages in a real browser (Debian's Chromium, headless, driven by Selenium), on SQLite
and PostgreSQL: keys and clicks save reviews, a reload shows them, the precision page counts them,
and a pair holding `<script>alert(1)</script>` shows as text and runs nothing.

Without Chromium and chromedriver these tests skip (`scripts/install_browser.sh` installs them);
in CI (`CI=true`) they fail instead. One browser serves the whole module.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _review_seed import LENGTH_FLAGGED, XSS, seed_store

from rewardlab.store.store import Store
from rewardlab.web.review import ReviewConfig, create_review_app
from rewardlab.web.server import background_server

CHROMIUM = os.environ.get("REWARDLAB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("REWARDLAB_CHROMEDRIVER", "/usr/bin/chromedriver")


def _browser_missing() -> str | None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() or shutil.which(p))]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if not missing:
        return None
    return (f"no browser to test with: {', '.join(missing)} missing "
            "(scripts/install_browser.sh installs Debian's chromium and chromium-driver)")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    reason = _browser_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests must run in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    # the driver given explicitly, so Selenium Manager never looks for (or downloads) one
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[str, Store, list[int]]]:
    with Store(db_url) as store:
        ids = seed_store(store)
        app = create_review_app(store, ReviewConfig(reviewer="selenium"))
        with background_server(app) as base:
            yield base, store, ids


def _keys(driver: object, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()  # type: ignore[arg-type]


def _wait(driver: object, condition: str, timeout: float = 20.0) -> None:
    """Wait until the JavaScript expression `condition` is true in the page."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(  # type: ignore[arg-type]
        lambda d: d.execute_script(f"return Boolean({condition})"))


def _settled(driver: object) -> None:
    _wait(driver, "document.body.dataset.pending === '0'")


def _no_alert(driver: object) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text  # type: ignore[attr-defined]


def test_keyboard_review_persists_and_updates_precision(
        browser: object, served: tuple[str, Store, list[int]]) -> None:
    from selenium.webdriver.common.by import By

    base, store, ids = served
    d = browser
    d.get(f"{base}/queue?dataset=rev&detector=length_ratio&state=unreviewed")  # type: ignore[attr-defined]
    cards = d.find_elements(By.CSS_SELECTOR, "article.card")  # type: ignore[attr-defined]
    assert len(cards) == 20
    # the <script> pair: shown as text, no element made of it, nothing ran
    prompt = cards[0].find_element(By.CSS_SELECTOR, ".prompt .text").text
    assert prompt == f"Tell me about {XSS} please"
    assert d.find_elements(By.CSS_SELECTOR, "article.card script, article.card b") == []  # type: ignore[attr-defined]
    _no_alert(d)

    _keys(d, "jjk")  # next, next, previous: the second card is current
    assert "current" in cards[1].get_attribute("class")
    _keys(d, "kk")  # back to the first (k stops there)
    _keys(d, "1")  # card 0: true positive; moves on
    _keys(d, "2")  # card 1: false positive
    _keys(d, "3")  # card 2: needs review
    cards[3].find_element(By.CSS_SELECTOR, "button.verdict.fp").click()  # card 3 by mouse
    _keys(d, "j")  # from card 3 to card 4
    _keys(d, "n")
    _keys(d, "clearly padded <b>not</b> a reply")  # typing in the note: no shortcuts fire
    from selenium.webdriver.common.keys import Keys

    _keys(d, Keys.ESCAPE)
    _keys(d, "1")  # card 4: true positive, with the note
    _settled(d)
    statuses = [c.find_element(By.CSS_SELECTOR, ".status").text for c in cards[:5]]
    assert statuses == ["saved: True positive", "saved: False positive", "saved: Needs review",
                        "saved: False positive", "saved: True positive"]
    rows = {r["source_index"]: (r["verdict"], r["reviewer"], r["note"]) for r in store.reviews("rev")}
    assert rows == {0: ("tp", "selenium", ""), 1: ("fp", "selenium", ""),
                    2: ("needs_review", "selenium", ""), 3: ("fp", "selenium", ""),
                    4: ("tp", "selenium", "clearly padded <b>not</b> a reply")}

    d.refresh()  # type: ignore[attr-defined]
    # the unreviewed queue lost the five reviewed cards
    _wait(d, "document.querySelectorAll('article.card').length === 19")
    assert f"{LENGTH_FLAGGED - 5:,} flags unreviewed" in d.find_element(By.ID, "summary").text  # type: ignore[attr-defined]
    d.get(f"{base}/queue?dataset=rev&detector=length_ratio&state=reviewed")  # type: ignore[attr-defined]
    reviewed = d.find_elements(By.CSS_SELECTOR, "article.card")  # type: ignore[attr-defined]
    assert [c.get_attribute("data-verdict") for c in reviewed] == [
        "tp", "fp", "needs_review", "fp", "tp"]
    chosen = [c.find_element(By.CSS_SELECTOR, "button.chosen").get_attribute("data-verdict")
              for c in reviewed]
    assert chosen == ["tp", "fp", "needs_review", "fp", "tp"]
    note = reviewed[4].find_element(By.CSS_SELECTOR, "ul.reviews li").text
    assert note == "selenium: True positive — clearly padded <b>not</b> a reply"
    assert reviewed[4].find_element(By.CSS_SELECTOR, "textarea.note").get_attribute("value") == (
        "clearly padded <b>not</b> a reply")

    d.get(f"{base}/precision?dataset=rev")  # type: ignore[attr-defined]
    row = d.find_element(By.CSS_SELECTOR, 'tr[data-detector="length_ratio"]')  # type: ignore[attr-defined]
    cells = {c: row.find_element(By.CSS_SELECTOR, f"td.{c}").text
             for c in ("reviewed", "tp", "fp", "precision", "ci")}
    assert cells == {"reviewed": "4", "tp": "2", "fp": "2", "precision": "50.0%",
                     "ci": "15–85%"}
    _wait(d, "document.querySelector('img.figure').complete "
             "&& document.querySelector('img.figure').naturalWidth > 0")
    _no_alert(d)


def test_twenty_keyboard_reviews_take_seconds(browser: object,
                                              served: tuple[str, Store, list[int]]) -> None:
    """The UI's share of reviewing 20 flags: 20 keypresses, each saved, with nothing to wait for
    between them (a person needs only the time to read each card on top)."""
    from selenium.webdriver.common.by import By

    base, store, _ = served
    d = browser
    d.get(f"{base}/queue?dataset=rev&detector=any&state=unreviewed&limit=20")  # type: ignore[attr-defined]
    assert len(d.find_elements(By.CSS_SELECTOR, "article.card")) == 20  # type: ignore[attr-defined]
    started = time.perf_counter()
    for i in range(20):
        _keys(d, "12"[i % 2])
    _settled(d)
    seconds = time.perf_counter() - started
    assert len(store.reviews("rev")) == 20
    print(f"\n20 keyboard reviews saved in {seconds:.2f} s ({seconds / 20 * 1000:.0f} ms each)")
    assert seconds < 20  # under a minute with room to read: measured ~1-3 s on 2 busy cores
    _keys(d, "j")  # past the last card: the next page, offset by the cards left open (none)
    _wait(d, "location.search.includes('offset=0')")
    assert len(d.find_elements(By.CSS_SELECTOR, "article.card")) == 14  # type: ignore[attr-defined]
