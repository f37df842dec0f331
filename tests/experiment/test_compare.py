"""run_comparison end to end on synthetic data with known flips, the `bow` backbone and SQLite:
conditions × seeds on one test set, consistent counts and statistics, results.json, determinism.

`oof_margin` defines "flagged" (as in `rewardlab demo`): on `synthetic:` data every pair shares one
prompt, so the default rule set's test_leakage would flag the whole train split.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rewardlab.experiment.compare import CompareConfig, run_comparison
from rewardlab.experiment.compare_config import preset_training
from rewardlab.flags.selection import FlagSpec
from rewardlab.store.store import Store

N_TRAIN, NOISE = 200, 0.2
N_TEST = round(N_TRAIN * 0.25 / 0.75)  # --test-fraction 0.25 sizes the test split
CONDITIONS = ["unfiltered", "clean-remove", "clean-flip", "random"]
CONFIG = CompareConfig(train=f"synthetic:n={N_TRAIN},noise={NOISE},seed=0", test_fraction=0.25,
                       seeds=2, treatments=("remove", "flip"), detectors=(FlagSpec("oof_margin"),),
                       max_pairs=0, name="syn", training=preset_training(model="bow"))


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db')}/compare.db"


@pytest.fixture(scope="module")
def first(db: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("exp") / "first"
    return run_comparison(CONFIG, out, db=db, progress=False), out


def _runs(results: dict[str, Any], condition: str) -> list[dict[str, Any]]:
    return results["conditions"][condition]["runs"]


def _correct(run: dict[str, Any]) -> np.ndarray:
    return np.asarray(run["test_chosen_rewards"]) > np.asarray(run["test_rejected_rewards"])


def test_every_condition_has_every_seed(first: tuple) -> None:
    results, _ = first
    assert list(results["conditions"]) == CONDITIONS == results["config"]["conditions"]
    assert results["config"]["seeds"] == [0, 1]
    assert results["config"]["train_config"]["model"] == "bow"
    for name in CONDITIONS:
        block = results["conditions"][name]
        assert [r["seed"] for r in block["runs"]] == [0, 1]
        assert block["summary"]["n_seeds"] == 2
        accs = [r["test"]["accuracy"] for r in block["runs"]]
        assert block["summary"]["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert [c["treatment"] for c in results["conditions"].values()] == [None, "remove", "flip", None]
    # the seed reaches training: two seeds, two different models
    seed0, seed1 = _runs(results, "unfiltered")
    assert seed0["test_chosen_rewards"] != seed1["test_chosen_rewards"]


def test_every_run_is_scored_on_the_same_test_pairs(first: tuple) -> None:
    results, _ = first
    assert results["data"]["test"]["pairs"] == N_TEST and results["data"]["train"]["pairs"] == N_TRAIN
    for name in CONDITIONS:
        for run in _runs(results, name):
            assert len(run["test_chosen_rewards"]) == len(run["test_rejected_rewards"]) == N_TEST
            assert run["test"]["n"] == N_TEST
            # the metrics are the arrays' (ties count as wrong)
            assert run["test"]["correct"] == int(_correct(run).sum())
            assert run["test"]["accuracy"] == pytest.approx(_correct(run).mean())


def test_train_pair_counts_follow_the_flags(first: tuple, db: str) -> None:
    results, _ = first
    store = Store(db)
    pool = store.load_pairs("syn", split="train")
    flagged_ids = store.flagged_example_ids("syn", ["oof_margin"])["oof_margin"]
    n_flagged = sum(p.example_id in flagged_ids for p in pool)
    flipped = sum(bool(p.meta["flipped"]) for p in pool)
    assert flipped == round(NOISE * N_TRAIN) and 0 < n_flagged < N_TRAIN
    assert results["flags"]["union"]["flagged"] == n_flagged
    assert results["flags"]["detectors"]["oof_margin"]["rate"] == pytest.approx(n_flagged / N_TRAIN)
    for seed in (0, 1):
        unfiltered, remove, flip, random = (_runs(results, c)[seed] for c in CONDITIONS)
        assert {r["flagged_in_train"] for r in (unfiltered, remove, flip, random)} == {n_flagged}
        assert unfiltered["train_pairs"] == flip["train_pairs"] == N_TRAIN
        assert remove["train_pairs"] == N_TRAIN - n_flagged == unfiltered["train_pairs"] - n_flagged
        assert random["train_pairs"] == remove["train_pairs"]  # as many pairs, chosen at random
        assert remove["removed"] == random["removed"] == n_flagged
        assert unfiltered["removed"] == flip["removed"] == 0
    assert results["conditions"]["clean-remove"]["summary"]["train_pairs"] == N_TRAIN - n_flagged


def test_bow_learns_the_hidden_quality(first: tuple) -> None:
    """Chance is 0.5; bow reaches ~0.93-1.0 here. 0.8 on 67 pairs is far outside chance (p < 1e-6)."""
    results, _ = first
    for name in CONDITIONS:
        for run in _runs(results, name):
            assert run["test"]["accuracy"] >= 0.8, (name, run["seed"], run["test"]["accuracy"])
            assert run["test"]["accuracy_ci"][0] > 0.5
            assert run["history"] and run["train_loss"] < np.log(2)


def test_comparisons_are_paired_statistics_of_the_runs(first: tuple) -> None:
    results, _ = first
    pairs = [(c["treated"], c["baseline"]) for c in results["comparisons"]]
    assert pairs == [("clean-remove", "unfiltered"), ("clean-remove", "random"),
                     ("clean-flip", "unfiltered"), ("clean-flip", "random")]
    for comp in results["comparisons"]:
        treated, baseline = _runs(results, comp["treated"]), _runs(results, comp["baseline"])
        assert [m["seed"] for m in comp["mcnemar"]] == [0, 1]
        for m, t, b in zip(comp["mcnemar"], treated, baseline):
            a_ok, b_ok = _correct(t), _correct(b)
            assert (m["b"], m["c"]) == (int((a_ok & ~b_ok).sum()), int((~a_ok & b_ok).sum()))
            assert m["n_discordant"] == m["b"] + m["c"] and 0.0 <= m["p"] <= 1.0
        boot = comp["test"]
        want = np.mean([_correct(t).mean() - _correct(b).mean() for t, b in zip(treated, baseline)])
        assert boot["diff"] == pytest.approx(want)
        assert boot["ci"][0] <= boot["diff"] <= boot["ci"][1]
        assert comp["verdict"].startswith(comp["treated"])
    assert isinstance(results["verdict"], str) and results["verdict"]


def test_results_json_round_trips(first: tuple) -> None:
    results, out = first
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["config"]["train"] == CONFIG.train and saved["config"]["test_fraction"] == 0.25
    assert (out / "report.md").stat().st_size > 0 and (out / "report.html").stat().st_size > 0


def test_the_experiment_is_recorded_in_the_store(first: tuple, db: str) -> None:
    results, out = first
    recorded = [e for e in Store(db).experiments() if e["out_dir"] == str(out.resolve())]
    assert len(recorded) == 1
    runs = recorded[0]["runs"]
    assert [(r["condition"], r["seed"]) for r in runs] == [(c, s) for c in CONDITIONS for s in (0, 1)]
    for r in runs:
        run = _runs(results, r["condition"])[r["seed"]]
        assert r["metrics"]["accuracy"] == run["test"]["accuracy"]
        assert r["metrics"]["train_pairs"] == run["train_pairs"]


def test_same_config_and_db_reproduce_the_numbers(first: tuple, db: str,
                                                  tmp_path: Path) -> None:
    results, _ = first
    store = Store(db)
    detector_run = store.latest_runs("syn")["oof_margin"]["run_id"]
    # every run trained again (not reused from the store): training itself reproduces the numbers
    again = run_comparison(dataclasses.replace(CONFIG, reuse_runs=False), tmp_path / "second", db=db,
                           progress=False)
    assert again["runs_reused"] == 0
    assert store.latest_runs("syn")["oof_margin"]["run_id"] == detector_run  # reused, not rerun
    assert sum(store.dataset_summaries()[0]["pairs"].values()) == N_TRAIN + N_TEST  # no re-ingest
    assert again["data"] == results["data"] and again["flags"] == results["flags"]
    for name in CONDITIONS:
        for a, b in zip(_runs(again, name), _runs(results, name)):
            assert a["test"]["accuracy"] == b["test"]["accuracy"]
            assert a["test_chosen_rewards"] == b["test_chosen_rewards"]
            assert a["test_rejected_rewards"] == b["test_rejected_rewards"]
            assert a["history"] == b["history"]
    assert [c["test"] for c in again["comparisons"]] == \
        [c["test"] for c in results["comparisons"]]


def test_quick_preset_trains_minilm_at_its_tuned_lr() -> None:
    """Issue 35: at 2e-5 one epoch of MiniLM on the sample barely moved the loss from ln 2."""
    from rewardlab.experiment.compare import PRESETS, train_config_for

    assert PRESETS["quick"].get("lr") == 1e-4
    assert train_config_for(CompareConfig(), 0).lr == 1e-4  # minilm, the preset's backbone
    minilm = CompareConfig(training=preset_training(model="minilm"))
    assert train_config_for(minilm, 3).lr == 1e-4
    bow = CompareConfig(training=preset_training(model="bow"))
    assert train_config_for(bow, 0).lr is None  # bow keeps its own 3e-3
    strength = CompareConfig(preset="strength", training=preset_training("strength"))
    assert train_config_for(strength, 0).lr is None
