"""The A/A control (issue 29): `aa` trains the unfiltered data again with independent seeds and is
compared with unfiltered like any condition, so the report shows what difference seeds alone make.

End to end on synthetic data with the `bow` backbone and SQLite (seconds); its calibration over
many experiments is tests/evaluation/test_calibration_sim.py's, and 20 real A/A runs are
benchmarks/aa_control.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rewardlab.errors import SelectionError
from rewardlab.evaluation.stats import compare_runs
from rewardlab.experiment.compare import (
    CompareConfig,
    plan_conditions,
    run_comparison,
    validate_compare_config,
)
from rewardlab.experiment.compare_config import AA_CONDITION, AA_SEED_OFFSET, CONDITIONS, Condition
from rewardlab.flags.selection import FlagSpec
from rewardlab.training.train_config import TrainConfig

CONFIG = CompareConfig(train="synthetic:n=160,noise=0.1,seed=3", test_fraction=0.25,
                       training=TrainConfig(model="bow"), seeds=2, conditions=("unfiltered", "aa"),
                       detectors=(FlagSpec("length_ratio"),),
                       max_pairs=0, name="aa")


def test_aa_is_unfiltered_again_and_needs_unfiltered() -> None:
    assert AA_CONDITION == "aa" and AA_CONDITION in CONDITIONS
    assert plan_conditions(("unfiltered", "aa"), ("remove",)) == [Condition("unfiltered", "all", None),
                                                          Condition("aa", "all", None)]
    validate_compare_config(CompareConfig(conditions=("unfiltered", "aa")))  # valid on its own
    with pytest.raises(SelectionError, match="add unfiltered to --conditions, e.g. unfiltered,aa"):
        plan_conditions(("aa",), ("remove",))


@pytest.fixture(scope="module")
def aa(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("aa") / "out"
    db = f"sqlite:///{tmp_path_factory.mktemp('db')}/aa.db"
    return run_comparison(CONFIG, out, db=db, progress=False), out


def _correct(run: dict[str, Any]) -> np.ndarray:
    return np.asarray(run["test_chosen_rewards"]) > np.asarray(run["test_rejected_rewards"])


def test_aa_trains_the_same_data_with_other_seeds(aa: tuple) -> None:
    results, _ = aa
    unfiltered, control = (results["conditions"][c]["runs"] for c in ("unfiltered", "aa"))
    assert [r["seed"] for r in unfiltered] == [0, 1]
    assert [r["seed"] for r in control] == [AA_SEED_OFFSET, AA_SEED_OFFSET + 1]
    assert [r["train_pairs"] for r in control] == [r["train_pairs"] for r in unfiltered]
    # other seeds, other models: the predictions differ somewhere
    assert any((_correct(a) != _correct(b)).any() or a["test_chosen_rewards"] !=
               b["test_chosen_rewards"] for a, b in zip(control, unfiltered))


def test_aa_is_compared_with_unfiltered_as_independent_seeds(aa: tuple) -> None:
    results, _ = aa
    (comp,) = results["comparisons"]
    assert (comp["treated"], comp["baseline"]) == ("aa", "unfiltered")
    test = comp["test"]
    assert test["seed_design"] == "independent seeds" and test["seeds"] == [2, 2]
    assert comp["mcnemar"] == []  # no seed is shared: no per-seed pairing
    runs = {c: results["conditions"][c]["runs"] for c in ("aa", "unfiltered")}
    want = np.mean([_correct(r).mean() for r in runs["aa"]]) - np.mean(
        [_correct(r).mean() for r in runs["unfiltered"]])
    assert test["diff"] == pytest.approx(want)
    again = compare_runs("aa", runs["aa"], "unfiltered", runs["unfiltered"])
    assert comp == {**again, "p_holm": comp["p_holm"]}  # + Holm over the report's 1 test
    assert comp["power"]["seeds"] == 2 and comp["power"]["test_pairs"] == test["pairs"]
    assert results["multiplicity"]["tests"] == 1


def test_the_report_reads_the_aa_control_as_a_noise_floor(aa: tuple) -> None:
    results, out = aa
    verdict = results["verdict"]
    assert verdict.startswith("No cleaning condition was run")  # aa is no cleaning treatment
    assert "A/A control (aa: the unfiltered data again, trained with other seeds)" in verdict
    lo, hi = results["comparisons"][0]["test"]["ci"]
    if lo <= 0 <= hi:
        assert "the noise floor of this setup" in verdict
        assert f"±{100 * (hi - lo) / 2:.1f} points" in verdict
    md = (out / "report.md").read_text()
    assert "A/A control" in md and "| aa vs unfiltered |" in md
