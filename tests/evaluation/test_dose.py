"""Dose-response and per-detector ablation: which pairs each arm treats, the whole-curve test, the
options checked before any work, the report's figure, and the demo's curve on synthetic data.

One small experiment (synthetic pairs with 20% flipped labels, `bow`, 2 seeds, 2 fractions)
feeds the end-to-end checks; every number is recomputed here from the run records.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from rewardlab.cli.main import main
from rewardlab.data.pairs import PreferencePair
from rewardlab.data.sources import read_source
from rewardlab.errors import SelectionError
from rewardlab.evaluation.crossed import pair_unit_test
from rewardlab.evaluation.dose_stats import curve_test, dose_verdict
from rewardlab.experiment.compare import CompareConfig, run_comparison, validate_compare_config
from rewardlab.experiment.demo import run_demo
from rewardlab.experiment.dose_arms import parse_fractions
from rewardlab.flags.flagging import import_flagged_indices
from rewardlab.flags.selection import (
    FlagSpec,
    detector_scores,
    flagged_ids,
    random_order,
    rank_pairs,
    treat_positions,
    treated_count,
)
from rewardlab.report.build import write_report
from rewardlab.store.store import Store
from rewardlab.training.train_config import TrainConfig

N_TRAIN = 200
FRACTIONS = [0.1, 0.25]
CONFIG = CompareConfig(train=f"synthetic:n={N_TRAIN},noise=0.2,seed=0", test_fraction=0.25,
                       seeds=2, conditions=("unfiltered",), treatments=("remove",),
                       detectors=(FlagSpec("oof_margin"),), max_pairs=0, name="syn",
                       fractions=tuple(FRACTIONS), rank_by="oof_margin", ablation=True,
                       training=TrainConfig(model="bow"))


def _pairs(n: int) -> list[PreferencePair]:
    return [PreferencePair(i, "train", "p", f"a{i}", f"b{i}", example_id=100 + i)
            for i in range(n)]


def _correct(run: dict[str, Any]) -> np.ndarray:
    return np.asarray(run["test_chosen_rewards"]) > np.asarray(run["test_rejected_rewards"])


# ---------------------------------------------------------------- options, checked first

@pytest.mark.parametrize("text, needle", [
    ("0.1,0", "outside (0, 1)"), ("0.5,1", "outside (0, 1)"), ("0.2,0.1", "not increasing"),
    ("0.1,0.1", "repeats"), ("0.1,x", "not a number"), ("", "not a number"),
])
def test_bad_fractions_are_one_clear_error(text: str, needle: str) -> None:
    with pytest.raises(SelectionError, match="--fractions") as err:
        parse_fractions(text)
    assert needle in str(err.value)


def test_fraction_and_rank_by_need_each_other_and_a_known_detector() -> None:
    base = CompareConfig(train="synthetic:n=50")
    assert validate_compare_config(base) == []
    with pytest.raises(SelectionError, match="needs --rank-by"):
        validate_compare_config(CompareConfig(fractions=(0.1,)))
    with pytest.raises(SelectionError, match="needs --fractions"):
        validate_compare_config(CompareConfig(rank_by="oof_margin"))
    with pytest.raises(SelectionError, match="unknown detector 'nope'"):
        validate_compare_config(CompareConfig(fractions=(0.1,), rank_by="nope"))
    # the strength preset brings its own ranking and fractions; an option still wins
    assert validate_compare_config(CompareConfig(preset="strength")) == [0.05, 0.1, 0.2, 0.3]
    assert validate_compare_config(CompareConfig(preset="strength", fractions=(0.5,))) == [0.5]


def test_cli_refuses_bad_fractions_before_any_work(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "cli.db"
    code = main(["compare", "--train", "synthetic:n=50", "--test-fraction", "0.2", "--fractions",
                 "0.3,0.1", "--rank-by", "oof_margin", "-o", str(tmp_path / "out"),
                 "--db", f"sqlite:///{db}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not increasing" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    with Store(f"sqlite:///{db}") as store:
        assert store.dataset_names() == []  # refused before ingest


def test_a_detector_without_distinct_scores_cannot_rank(tmp_path: Path) -> None:
    """Checked after the detectors ran and before any model trains."""
    db = f"sqlite:///{tmp_path}/s.db"
    config = CompareConfig(train="synthetic:n=40,noise=0.2,seed=0", test_fraction=0.25,
                           detectors=(FlagSpec("none_flagged"),), fractions=(0.1,),
                           rank_by="none_flagged", name="syn", max_pairs=0,
                           training=TrainConfig(model="bow"))
    with Store(db) as store:
        store.ingest("syn", read_source(config.train, test_fraction=0.25))
        import_flagged_indices(store, "syn", [], label="none_flagged")  # every score 0
        with pytest.raises(SelectionError, match="every pair the same score"):
            run_comparison(config, tmp_path / "out", store=store, progress=False)
        assert store.experiments() == []


# ---------------------------------------------------------------- choosing the pairs

def test_ranking_breaks_ties_at_random_and_puts_unscored_pairs_last() -> None:
    pairs = _pairs(8)
    scores = {100: 1.0, 101: 0.0, 102: 1.0, 103: math.nan, 104: 0.0, 105: 0.0, 106: 0.5}
    ranked = rank_pairs(pairs, scores)
    assert sorted(ranked[:2]) == [0, 2] and ranked[2] == 6
    assert sorted(ranked[3:6]) == [1, 4, 5] and sorted(ranked[6:]) == [3, 7]  # NaN, missing
    assert rank_pairs(pairs, scores) == ranked  # seeded: the same order every time
    ties = rank_pairs(_pairs(40), {})
    assert ties != list(range(40))  # equal scores are not ranked by source order


@pytest.mark.parametrize("treatment", ["remove", "flip", "soft"])
def test_detector_and_random_arms_treat_the_same_number_of_pairs(treatment: str) -> None:
    pairs = _pairs(50)
    ranked = rank_pairs(pairs, {100 + i: float(i % 7) for i in range(50)})
    for fraction in (0.05, 0.1, 0.3):
        k = treated_count(fraction, 50)
        assert k == round(fraction * 50)
        for seed in (0, 1):
            control = random_order(50, seed=seed)[:k]
            top = treat_positions(pairs, ranked[:k], treatment=treatment)
            rand = treat_positions(pairs, control, treatment=treatment, mode="matched-random")
            assert top.n_flagged == rand.n_flagged == k
            if treatment == "remove":
                assert len(top.pairs) == len(rand.pairs) == 50 - k
                assert top.n_removed == rand.n_removed == k
            elif treatment == "flip":
                assert top.n_flipped == rand.n_flipped == k and len(rand.pairs) == 50
                flipped = [i for i, p in enumerate(rand.pairs) if p.chosen != pairs[i].chosen]
                assert sorted(flipped) == sorted(control)
            else:
                assert top.smoothing is not None and rand.smoothing is not None
                assert sum(x > 0 for x in rand.smoothing) == k
            assert rand.describe() == f"{k} random pairs " + {
                "remove": "removed", "flip": "flipped", "soft": "label-smoothed"}[treatment] + \
                " (size-matched control)"
    # the random choices are nested across fractions and differ between seeds
    assert random_order(50, seed=0)[:5] == random_order(50, seed=0)[:15][:5]
    assert random_order(50, seed=0) != random_order(50, seed=1)
    assert treated_count(0.001, 50) == 1


# ---------------------------------------------------------------- the whole-curve test

def _run(seed: int, correct: list[int]) -> dict[str, Any]:
    return {"seed": seed, "test_chosen_rewards": [float(c) for c in correct],
            "test_rejected_rewards": [0.5] * len(correct)}


def test_curve_test_by_hand() -> None:
    # 2 fractions × 2 seeds over 6 test pairs; detector arm right on 5, 5, 6, 6 of them,
    # random arm on 4, 5, 4, 3 → differences 1/6, 0, 2/6, 3/6
    det = [[_run(0, [1, 1, 1, 1, 1, 0]), _run(1, [1, 1, 1, 1, 0, 1])],
           [_run(0, [1, 1, 1, 1, 1, 1]), _run(1, [1] * 6)]]
    rand = [[_run(1, [1, 1, 1, 1, 1, 0]), _run(0, [1, 1, 1, 1, 0, 0])],  # paired by seed
            [_run(0, [1, 1, 0, 0, 1, 1]), _run(1, [0, 1, 0, 1, 0, 1])]]
    out = curve_test(det, rand)
    diffs = [1 / 6, 0.0, 2 / 6, 3 / 6]
    assert (out["cells"], out["seeds"], out["fractions"]) == (4, [2, 2], 2)
    assert out["diff"] == pytest.approx(np.mean(diffs))
    assert out["per_seed"] == pytest.approx([(1 / 6 + 2 / 6) / 2, (0 + 3 / 6) / 2])
    # The test pair is the unit: each seed's per-pair differences averaged over the fractions,
    # seed 0: [0, 0, .5, .5, .5, 0], seed 1: [.5, 0, .5, 0, 0, .5]; per pair over the seeds
    # [.25, 0, .5, .25, .25, .25] (variance 0.025). Both seeds average .25: no seed scatter to add.
    assert out["var_pairs"] == pytest.approx(0.025 / 6) and out["var_seeds"] == 0.0
    t = 0.25 / math.sqrt(0.025 / 6)
    assert out["df"] == pytest.approx(5) and out["p"] == pytest.approx(2 * sps.t.sf(t, 5))
    half = sps.t.ppf(0.975, 5) * math.sqrt(0.025 / 6)
    assert out["ci"] == pytest.approx([0.25 - half, 0.25 + half])
    text = dose_verdict(rank_by="d", treatment="remove", fractions=[0.1, 0.2], comparisons=[],
                        curve=out)
    assert "the detector's curve lies above the random curve by 25.0 points" in text
    assert "the 6 test pairs the unit" in text


def test_the_curve_verdict_never_overstates() -> None:
    curve = {"diff": 0.004, "ci": [-0.01, 0.02], "p": 0.4, "cells": 20, "pairs": 500,
             "fractions": 4, "seeds": [5, 5]}
    text = dose_verdict(rank_by="d", treatment="flip", fractions=[0.05, 0.3], comparisons=[],
                        curve=curve)  # type: ignore[arg-type]
    assert "no detectable difference" in text and "above" not in text
    assert text.startswith("Dose-response: flipping the top 5–30% of training pairs d ranks")
    assert "(4 fractions × 5 seeds)" in text


# ---------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def dose(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    out = tmp_path_factory.mktemp("dose") / "out"
    db = f"sqlite:///{out.parent}/dose.db"
    return run_comparison(CONFIG, out, db=db, progress=False), out, db


def test_each_fraction_treats_the_top_ranked_pairs_and_as_many_random_ones(dose: tuple) -> None:
    results, _, db = dose
    block = results["dose_response"][0]
    assert (block["rank_by"], block["treatment"], block["fractions"]) == \
        ("oof_margin", "remove", FRACTIONS)
    assert block["pool"] == block["scored"] == N_TRAIN and block["baseline"] == "unfiltered"
    store = Store(db)
    pool = store.load_pairs("syn", split="train")
    ranked = rank_pairs(pool, detector_scores(store, "syn", "oof_margin"))
    flagged = flagged_ids(store, "syn", "oof_margin")
    for point, fraction in zip(block["points"], FRACTIONS):
        k = round(fraction * N_TRAIN)
        assert point["fraction"] == fraction and point["count"] == k
        assert point["flagged_among"] == sum(pool[i].example_id in flagged for i in ranked[:k])
        for arm in ("detector", "random"):
            runs = point[arm]["runs"]
            assert [r["seed"] for r in runs] == [0, 1]
            assert {r["train_pairs"] for r in runs} == {N_TRAIN - k}
            assert {r["removed"] for r in runs} == {k}
            assert point[arm]["summary"]["accuracy_mean"] == pytest.approx(
                np.mean([r["test"]["accuracy"] for r in runs]))
        comp = point["comparison"]
        for m, d, r in zip(comp["mcnemar"], point["detector"]["runs"], point["random"]["runs"]):
            a, b = _correct(d), _correct(r)
            assert (m["b"], m["c"]) == (int((a & ~b).sum()), int((~a & b).sum()))


def test_the_curve_statistics_are_the_runs(dose: tuple) -> None:
    results, _, _ = dose
    block = results["dose_response"][0]
    det = np.stack([[_correct(r) for r in p["detector"]["runs"]] for p in block["points"]])
    rand = np.stack([[_correct(r) for r in p["random"]["runs"]] for p in block["points"]])
    curve = block["curve_test"]  # (F, S, P) arms above: 2 fractions × 2 seeds
    assert curve["cells"] == 4 and curve["diff"] == pytest.approx(float(det.mean() - rand.mean()))
    # the unit is the test pair: each seed's differences averaged over the fractions
    want = pair_unit_test(det.mean(axis=0), rand.mean(axis=0))
    assert (curve["p"], curve["ci"]) == (pytest.approx(want["p"]), pytest.approx(want["ci"]))
    lo, hi = curve["ci"]
    assert (curve["p"] < 0.05) == (lo > 0 or hi < 0)  # the CI and the p cannot disagree
    # removing what oof_margin ranks most suspect (mostly injected flips) beats random removal
    top = block["points"][-1]
    assert top["flagged_among"] >= 0.8 * round(0.2 * N_TRAIN)  # the flips are found
    assert curve["diff"] > 0
    assert "Dose-response: removing the top 10–25%" in results["verdict"]


def test_ablation_and_multiplicity(dose: tuple) -> None:
    results, _, _ = dose
    (entry,) = results["ablation"]
    k = results["flags"]["detectors"]["oof_margin"]["flagged"]
    assert (entry["detector"], entry["flagged"], entry["reused"]) == ("oof_margin", k, False)
    assert {r["train_pairs"] for r in entry["clean"]["runs"]} == {N_TRAIN - k}
    assert {r["train_pairs"] for r in entry["random"]["runs"]} == {N_TRAIN - k}
    mult = results["multiplicity"]
    # 2 fractions + the curve + the ablation (no clean condition ran, so no comparisons)
    assert mult["tests"] == 4 and len(mult["p_holm"]) == 4
    assert all(h >= p for p, h in zip(mult["p"], mult["p_holm"]))
    assert results["strength"]["detector"] == "oof_margin"
    assert results["strength"]["pairs"] == N_TRAIN
    share = np.mean(np.array(results["strength"]["mean_margin"]) < 0)
    assert results["strength"]["share_negative"] == pytest.approx(share)


def test_the_report_shows_the_curve_and_older_results_still_render(dose: tuple,
                                                                  tmp_path: Path) -> None:
    results, out, _ = dose
    saved = json.loads((out / "results.json").read_text())
    assert saved["dose_response"][0]["curve_test"]["cells"] == 4
    md = (out / "report.md").read_text()
    assert "## Dose-response: the detector's ranking vs random" in md
    assert "![dose_response](dose_response.png)" in md and "![strength](strength.png)" in md
    assert "## All tests, corrected for multiplicity" in md
    assert "| Fraction | Pairs treated | Of them flagged by oof\\_margin |" in md  # escaped once
    assert (out / "dose_response.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "Dose-response" in html and html.count("data:image/png;base64") >= 5
    # a results.json from before dose-response, pooled tests and power still makes a report
    old = {k: v for k, v in saved.items()
           if k not in ("dose_response", "ablation", "strength", "multiplicity")}
    written = write_report(old, tmp_path / "old")
    assert "dose_response" not in written and (tmp_path / "old" / "report.html").exists()


def test_the_demo_curve_rises_above_random(tmp_path: Path) -> None:
    """`rewardlab demo`, smaller: removing oof_margin's most suspect pairs (the injected flips)
    beats removing as many random ones."""
    results = run_demo(tmp_path / "demo", n=200, seeds=1, fractions=(0.2,), progress=False)
    (point,) = results["dose_response"][0]["points"]
    k = round(0.2 * 200)
    assert point["count"] == k and point["random"]["runs"][0]["train_pairs"] == 200 - k
    share = results["teaching"]["dose_flipped_share"]["0.2"]
    assert share >= 0.8  # the top 20% are mostly the injected 20% flips
    det, rand = (point[a]["summary"]["accuracy_mean"] for a in ("detector", "random"))
    assert det > rand, (det, rand)
    assert (tmp_path / "demo" / "dose_response.png").is_file()
    md = (tmp_path / "demo" / "report.md").read_text()
    assert "really were flipped: top 20%" in md
    # the ties lesson (issue 32): its figure and paragraph are part of every demo
    assert results["teaching"]["ties"]["figure"] == str(tmp_path / "demo" / "teach_ties.png")
    assert (tmp_path / "demo" / "teach_ties.png").is_file() and "How would you handle ties?" in md
