"""The store's experiments (issue 28 item 3): recorded with their plan before any run trains,
their progress counted from the trained runs the plan names, continued when started again
unfinished, completed by `finish_experiment`. SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from rewardlab.data.sources import read_source
from rewardlab.errors import StoreError
from rewardlab.store.store import Store

KEYS = ["a" * 64, "b" * 64, "c" * 64]


def _save(store: Store, key: str, test_ids: list[int]) -> None:
    store.save_trained_run("syn", key, stage="condition", group="unfiltered", seed=0,
                           model="bow", pair_steps=3, record={"seed": 0}, test_ids=test_ids,
                           chosen=[0.0] * len(test_ids), rejected=[1.0] * len(test_ids))


def _progress(store: Store) -> list[tuple[int | None, int | None, int]]:
    return [(r["runs_planned"], r["runs_done"], len(r["runs"])) for r in store.experiments()]


def test_an_experiment_counts_its_stored_runs(store: Store) -> None:
    store.ingest("syn", read_source("synthetic:n=12,seed=0", test_fraction=0.25))
    test_ids = [p.example_id or 0 for p in store.load_pairs("syn", split="test")]
    _save(store, "z" * 64, test_ids)  # another plan's run: not counted
    exp = store.start_experiment(name="e", dataset="syn", config={"seeds": [0]},
                                 out_dir="/o/e", run_keys=KEYS)
    assert _progress(store) == [(3, 0, 0)]
    _save(store, KEYS[1], test_ids)
    assert _progress(store) == [(3, 1, 0)]
    # started again unfinished, same plan and folder: the same experiment continues
    assert store.start_experiment(name="e", dataset="syn", config={}, out_dir="/o/e",
                                  run_keys=KEYS) == exp
    # another plan into the folder is another experiment
    other = store.start_experiment(name="e", dataset="syn", config={}, out_dir="/o/e",
                                   run_keys=KEYS[:2])
    assert other != exp and _progress(store) == [(3, 1, 0), (2, 1, 0)]
    for key in (KEYS[0], KEYS[2]):
        _save(store, key, test_ids)
    store.finish_experiment(exp, metrics={"unfiltered": {"accuracy_mean": 0.5}},
                            runs=[{"condition": "unfiltered", "seed": 0,
                                   "metrics": {"accuracy": 0.5}, "checkpoint": None}])
    [first, _] = store.experiments()
    assert first["metrics"] == {"unfiltered": {"accuracy_mean": 0.5}}
    assert first["config"] == {"seeds": [0]}
    assert _progress(store) == [(3, 3, 1), (2, 2, 0)]
    # finished: the same compare again is a new experiment
    assert store.start_experiment(name="e", dataset="syn", config={}, out_dir="/o/e",
                                  run_keys=KEYS) not in (exp, other)
    with pytest.raises(StoreError, match="no experiment with id 999"):
        store.finish_experiment(999, metrics={}, runs=[])


def test_an_experiment_recorded_without_a_plan_has_no_progress(store: Store) -> None:
    store.record_experiment(name="old", dataset="hh", config={}, metrics={}, out_dir="o")
    assert _progress(store) == [(None, None, 0)]
