"""`analyse(plan, runs)` is a pure function (issue 28 item 4): it reads only its arguments, changes
neither, gives the same results for the same inputs, and `to_json()` writes results.json's keys in
their order, each test's Holm p beside it."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from rewardlab.data.pairs import PreferencePair
from rewardlab.evaluation.metrics import preference_metrics
from rewardlab.experiment.analysis import ExperimentPlan, analyse
from rewardlab.experiment.compare_config import CompareConfig, Condition
from rewardlab.experiment.plan import ExperimentData, plan_experiment
from rewardlab.experiment.runs import PlanRuns
from rewardlab.training.train_config import TrainConfig

P = 60  # test pairs


def _record(seed: int, shift: float, n_train: int) -> dict:
    rng = np.random.default_rng(seed * 7 + int(10 * shift))
    chosen, rejected = rng.normal(shift, 1, P), rng.normal(0, 1, P)
    lengths = np.full(P, 10)
    metrics = {**preference_metrics(chosen, rejected, chosen_lengths=lengths,
                                    rejected_lengths=lengths, subsets=["s"] * P),
               "n_truncated": 0, "n_response_truncated": 0, "n_identical": 0}
    return {"seed": seed, "train_pairs": n_train, "selection": f"{n_train} pairs",
            "flagged_in_train": 0, "removed": 0, "train_loss": 0.6, "train_accuracy": 0.7,
            "seconds": 1.0, "checkpoint": None, "n_truncated": 0,
            "history": [{"step": 1, "loss": 0.6}], "test": metrics,
            "test_chosen_rewards": chosen.tolist(), "test_rejected_rewards": rejected.tolist()}


def _plan() -> tuple[ExperimentPlan, PlanRuns]:
    pool = [PreferencePair(i, "train", "p", "a", "b", example_id=10 + i) for i in range(8)]
    conditions = [Condition("unfiltered", "all", None), Condition("clean-remove", "clean", "remove"),
                  Condition("random", "random", None)]
    data = ExperimentData(pool=pool, fingerprint="f", conditions=conditions, seeds=[0, 1],
                          flagged=frozenset({11, 12}))
    config = CompareConfig(training=TrainConfig(model="bow"),
                           conditions=("unfiltered", "clean", "random"))
    runs = plan_experiment(config, data)
    shift = {"unfiltered": 0.3, "clean-remove": 0.9, "random": 0.2}
    records = {r.id: _record(r.seed, shift[r.group], len(r.pair_ids)) for r in runs}
    side = {"dataset": "d", "source": "s", "pairs": 8, "fingerprint": "f"}
    plan = ExperimentPlan(
        runs=runs, config=config, config_block={"train": "s", "seeds": [0, 1]},
        data_block={"train": side, "test": {**side, "pairs": P}},
        flags={"detectors": {}, "union": {"flagged": 2, "rate": 0.25}}, data=data, test=[],
        treatment="remove")
    return plan, PlanRuns(records, reused=2)


def test_analyse_is_pure_and_serialises_in_results_json_order() -> None:
    plan, runs = _plan()
    records_before = copy.deepcopy(dict(runs.records))
    config_block_before = copy.deepcopy(plan.config_block)
    first = analyse(plan, runs)
    assert dict(runs.records) == records_before and plan.config_block == config_block_before
    assert all("p_holm" not in r for r in runs.records.values())
    again = analyse(plan, runs)
    assert first == again  # nothing read besides the arguments: no clock, no store
    doc = first.to_json()
    assert list(doc) == ["rewardlab_version", "created", "config", "data", "flags", "conditions",
                         "comparisons", "multiplicity", "notebook_table", "verdict", "seconds",
                         "runs_planned", "runs_reused"]
    assert (doc["runs_planned"], doc["runs_reused"], doc["created"]) == (6, 2, "")
    assert [(c["treated"], c["baseline"]) for c in doc["comparisons"]] == [
        ("clean-remove", "unfiltered"), ("clean-remove", "random")]
    assert doc["multiplicity"]["tests"] == 2
    assert [c["p_holm"] for c in doc["comparisons"]] == doc["multiplicity"]["p_holm"]
    assert list(doc["comparisons"][0])[-1] == "p_holm"
    stamped = dataclasses.replace(first, created="2026-12-06T12:00:00+00:00", seconds=3.0).to_json()
    assert stamped["created"] == "2026-12-06T12:00:00+00:00" and stamped["seconds"] == 3.0
    # unfiltered trains on all 8 pairs, clean and random on the 6 left after removing 2
    assert [doc["conditions"][c]["summary"]["train_pairs"] for c in doc["conditions"]] == [8, 6, 6]
