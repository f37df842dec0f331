"""The uninterrupted, one-process run of the shared `bow` experiment (tests/_bow_experiment.py),
once per session: the resume and fan-out tests compare their results.json with it."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from rewardlab.store.store import Store
from tests._bow_experiment import RUNS, compare_command, compare_env


@pytest.fixture(scope="session")
def sequential_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """results.json of the experiment trained one run after another, in one process."""
    tmp = tmp_path_factory.mktemp("sequential")
    out, db = tmp / "out", tmp / "store.db"
    done = subprocess.run(compare_command(out, db), env=compare_env(), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["runs_reused"] == 0
    with Store(f"sqlite:///{db}") as store:
        assert len(store.trained_run_keys(store.dataset_names()[0])) == RUNS
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert results["runs_planned"] == RUNS and results["config"]["workers"] == 1
    return results
