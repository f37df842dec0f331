"""The demo's ties lesson (issue 32, "Teaching"): on synthetic prompts whose ties are known, plain
BT names a winner for every tie while the Davidson tie model recovers the tie share and the band;
one figure, numbers in the teaching block, one paragraph in the report.

The tolerances hold for data seeds 0, 1 and 2 at the lesson's size (n=400, 4 epochs, fp32):
predicted tie share within 0.011 of the observed (here ±0.05), implied band 6-19% narrower than
the true one (here within 25%; Davidson's soft P(tie) bump against a hard cut-off makes it
narrow). The test runs seed 0.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import cast

import pytest
import torch

from rewardlab.data.synthetic import read_synthetic_rated
from rewardlab.experiment.ties_lesson import HANDLINGS, implied_band, reward_band, run_ties_lesson
from rewardlab.report.build import write_report
from rewardlab.report.results import ResultsDocument, TiesLesson
from rewardlab.training.grouped import train_on_rated
from rewardlab.training.ties import TIE, TieKind, TieModel, outcome_probs
from rewardlab.training.train_config import TrainConfig
from tests._results_fixture import PNG_MAGIC, build_results


@pytest.fixture(scope="module")
def lesson(tmp_path_factory: pytest.TempPathFactory) -> TiesLesson:
    return run_ties_lesson(tmp_path_factory.mktemp("ties"), seed=0)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return int(width), int(height)


def test_the_figure_is_a_real_png_of_report_size(lesson: TiesLesson) -> None:
    path = Path(lesson["figure"])
    assert path.name == "teach_ties.png"
    width, height = _png_size(path)
    assert 1000 <= width <= 2000 and 400 <= height <= 900, (width, height)
    assert path.stat().st_size > 30_000  # two panels of curves, not an empty canvas


def test_the_tie_model_recovers_the_tie_share_and_band(lesson: TiesLesson) -> None:
    assert lesson["test_pairs"] == 200 * 6  # 200 test prompts of K = 4
    assert abs(lesson["observed_tie_share"] - 0.2) <= 0.05  # the data's ties=0.2
    assert abs(lesson["predicted_tie_share"] - lesson["observed_tie_share"]) <= 0.05
    implied, true = lesson["implied_band"], lesson["true_band"]
    assert implied is not None and abs(implied - true) <= 0.25 * true, (implied, true)
    assert lesson["tie_model"] == "davidson" and lesson["tie_parameter"] > 1.0  # a band at all
    assert lesson["p_tie_on_ties"] > 2 * lesson["p_tie_on_decided"]
    assert lesson["tie_accuracy"] > 0.8


def test_plain_bt_names_a_winner_for_every_tie(lesson: TiesLesson) -> None:
    handlings = lesson["handlings"]
    assert tuple(handlings) == HANDLINGS
    assert handlings["drop"]["p_better_on_ties"] > 0.55  # sure of a winner where there is none
    # the tie model gives the tie its share, so it is far less sure of a winner on ties
    assert handlings["model"]["p_better_on_ties"] < handlings["drop"]["p_better_on_ties"] - 0.1
    for handling in handlings.values():
        assert handling["kendall_tau"] >= 0.8 and (handling["pair_accuracy"] or 0.0) >= 0.95


def test_the_report_says_it_with_the_numbers(lesson: TiesLesson, tmp_path: Path) -> None:
    results = build_results(n_test=60, seeds=(0,), teaching_dir=tmp_path / "teach")
    plain = write_report(cast(ResultsDocument, results), tmp_path / "plain")
    results["teaching"]["ties"] = lesson
    results["teaching"]["figures"]["ties"] = lesson["figure"]
    write_report(cast(ResultsDocument, results), tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    md = (tmp_path / "report" / "report.md").read_text()
    for text in (html, md):
        assert "How would you handle ties?" in text and "one seed" in text
        assert (f"is {lesson['implied_band']:.2f} against the true "
                f"{lesson['true_band']:.2f}") in text
        assert (f"pairs is {lesson['predicted_tie_share']:.2f} against "
                f"{lesson['observed_tie_share']:.2f} observed") in text
        assert f"mean P(win) of {lesson['handlings']['drop']['p_better_on_ties']:.2f}" in text
    images = html.count("data:image/png;base64")
    assert images == plain["html"].read_text().count("data:image/png;base64") + 1
    assert "teach_ties.png" in md
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved["teaching"]["ties"]["handlings"]["soft"] == lesson["handlings"]["soft"]


@pytest.mark.parametrize(("kind", "value"), [("davidson", 2.5), ("davidson", 7.0),
                                             ("rao-kupper", 2.5), ("rao-kupper", 6.0)])
def test_reward_band_is_where_the_tie_stops_being_the_likeliest_call(kind: TieKind,
                                                                      value: float) -> None:
    band = reward_band(kind, value)
    assert band > 0
    d = torch.tensor([0.0, band - 1e-3, band + 1e-3], dtype=torch.float64)
    probs = outcome_probs(d, torch.zeros(3, dtype=torch.float64), TieModel(kind, init=value))
    tie_likeliest = (probs[:, TIE] > probs.max(dim=1).values - 1e-12).tolist()
    assert tie_likeliest == [True, True, False]
    assert reward_band(kind, 1.0 if kind == "davidson" else 1.9) == 0.0  # never the likeliest


def test_implied_band_converts_the_reward_band_to_quality_units() -> None:
    prompts = read_synthetic_rated("synthetic:n=32,k=4,ties=0.2,test_n=16").prompts
    train = [p for p in prompts if p.split == "train"]
    test = [p for p in prompts if p.split == "test"]
    config = TrainConfig(model="bow", epochs=2, precision="fp32", ties="model", seed=0)
    model = train_on_rated(train, config=config, progress=False).model
    band = implied_band(model, test)
    nu = model.info["ties"]["parameter"]
    assert band["reward_band"] == pytest.approx(max(0.0, 2 * math.log(nu)))
    assert band["reward_per_quality"] > 0  # two epochs already order the replies by quality
    assert band["quality_band"] == pytest.approx(band["reward_band"] / band["reward_per_quality"])
