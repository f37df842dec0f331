"""`rewardlab experiments` shows a running compare's progress (issue 28 item 3): the experiment is
in the store with its plan's `runs_planned` before its first run finishes, and `runs_done` counts
the plan's runs stored so far, read by another process while the compare is between runs. The
check runs inside the compare, right before and after a run is stored: no timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rewardlab.experiment.compare import CompareConfig, run_comparison
from rewardlab.flags.selection import FlagSpec
from rewardlab.store.store import Store
from rewardlab.training.train_config import TrainConfig

# 3 conditions × 2 seeds = 6 bow runs on 80 synthetic train pairs
CONFIG = CompareConfig(train="synthetic:n=80,noise=0.2,seed=0", test_fraction=0.25,
                       training=TrainConfig(model="bow"), seeds=2,
                       detectors=(FlagSpec("oof_margin"),), max_pairs=0, name="syn")
RUNS = 6


def _cli_progress(db_url: str, out: Path) -> tuple[int | None, int | None]:
    """(runs_planned, runs_done) of the experiment into `out`, as `rewardlab experiments --json`
    prints them from a process of its own."""
    done = subprocess.run([sys.executable, "-m", "rewardlab", "experiments", "--json",
                           "--db", db_url], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    [row] = [r for r in json.loads(done.stdout) if r["out_dir"] == str(out.resolve())]
    return row["runs_planned"], row["runs_done"]


def _store_progress(db_url: str, out: Path) -> tuple[int | None, int | None]:
    """The same, through a Store (a connection) of its own."""
    with Store(db_url) as other:
        [row] = [r for r in other.experiments() if r["out_dir"] == str(out.resolve())]
    return row["runs_planned"], row["runs_done"]


def _watch_saves(monkeypatch: pytest.MonkeyPatch, db_url: str, out: Path,
                 seen: list[tuple[str, int, Any]], *, cli_at: tuple[int, ...] = (),
                 fail_after: int | None = None) -> None:
    """Read the progress right before and after each run is stored (as `rewardlab experiments`
    from a second process after the saves numbered in `cli_at`); raise after `fail_after`
    saves, as a compare killed between runs."""
    save = Store.save_trained_run
    count = [0]

    def watched(self: Store, *args: Any, **kwargs: Any) -> bool:
        seen.append(("before", count[0], _store_progress(db_url, out)))
        stored = save(self, *args, **kwargs)
        count[0] += 1
        seen.append(("after", count[0], _store_progress(db_url, out)))
        if count[0] in cli_at:
            seen.append(("cli", count[0], _cli_progress(db_url, out)))
        if count[0] == fail_after:
            raise KeyboardInterrupt("killed between runs")
        return stored

    monkeypatch.setattr(Store, "save_trained_run", watched)


def test_experiments_shows_runs_done_of_runs_planned_while_a_compare_runs(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "exp"
    seen: list[tuple[str, int, Any]] = []
    _watch_saves(monkeypatch, db_url, out, seen, cli_at=(1, 4))
    results = run_comparison(CONFIG, out, db=db_url, progress=False)
    assert results["runs_planned"] == RUNS
    # before the first run is stored the row is there, planned 6, done 0; then one more per run
    assert seen[0] == ("before", 0, (RUNS, 0))
    assert [p for when, _, p in seen if when == "after"] == [(RUNS, k) for k in range(1, RUNS + 1)]
    assert [(k, p) for when, k, p in seen if when == "cli"] == [(1, (RUNS, 1)), (4, (RUNS, 4))]
    with Store(db_url) as store:
        [row] = store.experiments()
    assert (row["runs_planned"], row["runs_done"], len(row["runs"])) == (RUNS, RUNS, RUNS)


def test_a_compare_started_again_continues_its_experiment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db_url, out = f"sqlite:///{tmp_path}/s.db", tmp_path / "exp"
    seen: list[tuple[str, int, Any]] = []
    _watch_saves(monkeypatch, db_url, out, seen, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_comparison(CONFIG, out, db=db_url, progress=False)
    assert _store_progress(db_url, out) == (RUNS, 2)  # unfinished: no (condition, seed) rows yet
    monkeypatch.undo()
    results = run_comparison(CONFIG, out, db=db_url, progress=False)
    assert results["runs_reused"] == 2
    with Store(db_url) as store:
        rows = store.experiments()
    # one experiment, continued: the killed compare's row is the finished one
    assert [(r["runs_planned"], r["runs_done"], len(r["runs"])) for r in rows] == [(RUNS, RUNS, RUNS)]
