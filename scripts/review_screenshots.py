"""Screenshots of the review pages for docs/img (queue and precision), from the bundled HH sample.

    .venv/bin/python scripts/review_screenshots.py [OUT_DIR]     # default docs/img

Builds a throwaway SQLite store: the embedded HH-RLHF sample, a few rule detectors, and review
verdicts MADE UP by this script (seeded; more suspect flags more often "true positive") so the
precision page has something to show. Then drives the system Chromium headless (as the browser
tests do) and saves review-queue.png and review-precision.png. Browser console errors fail it.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

from rewardlab.data.sources import read_source
from rewardlab.flags.flagging import flag_dataset
from rewardlab.store.store import Store
from rewardlab.web.review import ReviewConfig, create_review_app
from rewardlab.web.server import background_server

DETECTORS = ["length_ratio", "repetition", "readability_mismatch", "refusal_bias"]
PARAMS = {"length_ratio": {"percentile": 90.0, "min_ratio": 2.0}}  # more flags to page through
REVIEWED = {"length_ratio": 60, "readability_mismatch": 9, "refusal_bias": 20}


def _made_up_reviews(store: Store, name: str, *, seed: int = 0) -> None:
    """The top REVIEWED[d] flags of each detector get a verdict: P(tp) falls from 0.95 at the
    most suspect to 0.25 at the last reviewed; 1 in 12 is "needs review"."""
    rng = random.Random(seed)
    for detector, n in REVIEWED.items():
        items = store.review_queue(name, detector=detector, limit=n)["items"]
        for rank, item in enumerate(items):
            p_true = 0.95 - 0.7 * rank / max(len(items) - 1, 1)
            verdict = "needs_review" if rng.random() < 1 / 12 else (
                "tp" if rng.random() < p_true else "fp")
            store.save_review(name, example_id=item["example_id"], detector=detector,
                              verdict=verdict, reviewer=rng.choice(["ann", "bo"]))


def _driver() -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def _shoot(driver: object, url: str, path: Path, *, full: bool = False) -> None:
    driver.set_window_size(1280, 1000)  # type: ignore[attr-defined]
    driver.get(url)  # type: ignore[attr-defined]
    _images_loaded(driver)
    if full:  # the whole page: the window as tall as the document
        height = driver.execute_script("return document.documentElement.scrollHeight")  # type: ignore[attr-defined]
        driver.set_window_size(1280, min(int(height) + 120, 3000))  # type: ignore[attr-defined]
        _images_loaded(driver)
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]
    if errors:
        raise SystemExit(f"browser console errors on {url}: {errors}")
    print(f"wrote {path}")


def _images_loaded(driver: object) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: d.execute_script(  # type: ignore[arg-type]
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Store(f"sqlite:///{tmp}/shots.db") as store:
        store.ingest("hh", read_source("hh-rlhf-sample"))
        flag_dataset(store, "hh", detectors=DETECTORS, params=PARAMS, progress=False)
        _made_up_reviews(store, "hh")
        app = create_review_app(store, ReviewConfig(reviewer="bo"), dataset="hh")
        with background_server(app) as base:
            driver = _driver()
            try:
                _shoot(driver, f"{base}/queue?dataset=hh&detector=length_ratio&state=all",
                       out / "review-queue.png")
                _shoot(driver, f"{base}/precision?dataset=hh", out / "review-precision.png",
                       full=True)
                if len(sys.argv) > 2:  # a look at the datasets page too (not in the docs)
                    _shoot(driver, f"{base}/", out / "review-datasets.png", full=True)
            finally:
                driver.quit()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
