"""Runs kept in the store (issue 28): each finished run lands in the store with its per-test-pair
rewards, so a compare SIGKILLed at any moment and started again with the same arguments trains
only the runs that had not finished and writes the results.json an uninterrupted compare writes."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from rewardlab.data.sources import read_source
from rewardlab.store.store import Store
from tests._bow_experiment import RUNS, comparable, compare_command, compare_env

KILL_AFTER = 3


def _kill_after_finished_runs(proc: subprocess.Popen[bytes], db: Path, k: int) -> int:
    """SIGKILL `proc` once the store holds at least k finished runs; return how many it holds.

    The count is read holding SQLite's write lock, and the kill sent before the lock is let go:
    no run can commit in between, so the number returned is exactly what the killed compare left.
    """
    con = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        while True:
            con.execute("BEGIN IMMEDIATE")
            done = con.execute("SELECT count(*) FROM trained_runs").fetchone()[0]
            if done >= k or proc.poll() is not None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                con.execute("ROLLBACK")
                return int(done)
            con.execute("ROLLBACK")
            time.sleep(0.05)  # a poll interval, not a deadline: the loop ends on the count
    finally:
        con.close()


def test_a_killed_compare_resumes_and_ends_as_an_uninterrupted_one(
        tmp_path: Path, sequential_results: dict[str, Any]) -> None:
    db, out = tmp_path / "store.db", tmp_path / "out"
    Store(f"sqlite:///{db}").close()  # the schema (WAL mode) before two processes share the file
    proc = subprocess.Popen(compare_command(out, db), env=compare_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished = _kill_after_finished_runs(proc, db, KILL_AFTER)
    assert proc.returncode == -signal.SIGKILL
    assert KILL_AFTER <= finished < RUNS, finished
    assert not (out / "results.json").exists()

    again = subprocess.run(compare_command(out, db), env=compare_env(), capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    assert (summary["runs_planned"], summary["runs_reused"]) == (RUNS, finished)
    assert again.stderr.count("stored run reused") == finished  # only the rest trained
    with Store(f"sqlite:///{db}") as store:  # every run once: none stored twice
        assert len(store.trained_run_keys(store.dataset_names()[0])) == RUNS

    resumed = json.loads((out / "results.json").read_text())
    assert resumed["runs_reused"] == finished and sequential_results["runs_reused"] == 0
    assert comparable(resumed) == comparable(sequential_results)  # the uninterrupted compare's
    assert len(resumed["dose_response"][0]["points"]) == 1  # the dose arms resumed too
    pairs = {c: b["summary"]["train_pairs"] for c, b in resumed["conditions"].items()}
    assert pairs["clean-remove"] == pairs["random"] < pairs["unfiltered"]  # oof_margin flagged some


# ---------------------------------------------------------------- the store's side

def _record() -> dict[str, Any]:
    return {"seed": 1, "train_pairs": 3, "selection": "all 3 train pairs", "train_loss": 0.5,
            "seconds": 2.5, "history": [{"step": 1, "loss": 0.69}], "test": {"accuracy": 0.75}}


def test_a_trained_run_round_trips_exactly(db_url: str) -> None:
    with Store(db_url) as store:
        store.ingest("syn", read_source("synthetic:n=12,seed=0", test_fraction=0.25))
        test_ids = [p.example_id or 0 for p in store.load_pairs("syn", split="test")]
        # rewards as float32 turned to Python floats, and a NaN one (a diverged model)
        chosen = [0.1 + 1e-9 * i for i in range(len(test_ids) - 1)] + [None]
        rejected = [-1 / 3, *[2.0 ** -i for i in range(len(test_ids) - 1)]]
        assert store.save_trained_run("syn", "k" * 64, stage="condition", group="unfiltered",
                                      seed=1, model="bow", pair_steps=9, record=_record(),
                                      test_ids=test_ids, chosen=chosen, rejected=rejected)
        # the same key again keeps the first run (two processes finishing the same run)
        assert not store.save_trained_run("syn", "k" * 64, stage="condition", group="x", seed=1,
                                          model="bow", pair_steps=9, record={"seed": 9},
                                          test_ids=test_ids, chosen=chosen, rejected=rejected)
        got = store.trained_runs("syn", ["k" * 64, "missing"])
        assert list(got) == ["k" * 64]
        run = got["k" * 64]
        assert run["record"] == _record() and list(run["record"]) == list(_record())
        assert run["test_ids"] == test_ids and run["rejected"] == rejected
        assert run["chosen"][:-1] == chosen[:-1] and run["chosen"][-1] is None
        assert store.trained_run_keys("syn") == ["k" * 64]
        assert store.training_speed("bow") == pytest.approx(9 / 2.5)
        assert store.training_speed("minilm") is None
        # a replaced dataset keeps nothing it held, its runs included
        store.ingest("syn", read_source("synthetic:n=12,seed=1", test_fraction=0.25),
                     replace=True)
        assert store.trained_run_keys("syn") == [] and store.trained_runs("syn", ["k" * 64]) == {}


def test_a_run_with_mismatched_rewards_is_refused(tmp_path: Path) -> None:
    from rewardlab.errors import StoreError

    with Store(f"sqlite:///{tmp_path}/s.db") as store:
        store.ingest("syn", read_source("synthetic:n=12,seed=0", test_fraction=0.25))
        with pytest.raises(StoreError, match="2 test pairs, 1 chosen"):
            store.save_trained_run("syn", "a" * 64, stage="condition", group="g", seed=0,
                                   model="bow", pair_steps=1, record={}, test_ids=[1, 2],
                                   chosen=[math.pi], rejected=[0.0, 1.0])
        assert store.trained_run_keys("syn") == []
