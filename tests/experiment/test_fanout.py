"""Fanning an experiment out (issue 30): `compare --workers 2` and `compare --ray local` write the
results.json one process writes, a worker SIGKILLed mid-run has its run tried again with the same
final results, and what cannot run as asked (a SQLite store with a remote Ray cluster, more GPUs
than the machine has) is refused before any work, in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rewardlab.experiment.executor import Execution, Outcome, execute
from rewardlab.store.store import Store
from tests._bow_experiment import RUNS, comparable, compare_command, compare_env
from tests._fanout_jobs import job


@pytest.fixture(scope="module")
def ray_tmp() -> Iterator[str]:
    """A short folder for Ray's sockets and logs (a Unix socket path has ~100 characters)."""
    path = tempfile.mkdtemp(prefix="rl-ray-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _compare(tmp: Path, *extra: str, ray_tmp: str | None = None) -> tuple[dict[str, Any], str]:
    """(results.json, stderr) of a compare with its own store; every run trained and stored."""
    out, db = tmp / "out", tmp / "store.db"
    done = subprocess.run(compare_command(out, db, *extra), env=compare_env(ray_tmp),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    with Store(f"sqlite:///{db}") as store:
        assert len(store.trained_run_keys(store.dataset_names()[0])) == RUNS
    return json.loads((out / "results.json").read_text()), done.stderr


def test_ray_local_gives_the_sequential_results(
        sequential_results: dict[str, Any], tmp_path: Path, ray_tmp: str) -> None:
    # the Ray tasks store their runs themselves (_compare checks all 10 are in the store)
    results, _ = _compare(tmp_path, "--workers", "2", "--ray", "local", ray_tmp=ray_tmp)
    assert (results["config"]["ray"], results["config"]["workers"]) == ("local", 2)
    assert comparable(results) == comparable(sequential_results)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _first_worker(proc: subprocess.Popen[bytes]) -> int:
    """The pid of the compare's first spawned worker, once there is one (`spawn_main` in its
    command line; multiprocessing's resource tracker is a child too)."""
    while proc.poll() is None:
        for pid in _children(proc.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                return pid
        time.sleep(0.02)  # a poll interval, not a deadline: the loop ends when a worker exists
    raise AssertionError(f"compare ended (status {proc.returncode}) before it started a worker")


def test_a_sigkilled_worker_has_its_run_tried_again_with_the_same_results(
        sequential_results: dict[str, Any], tmp_path: Path) -> None:
    out, db = tmp_path / "out", tmp_path / "store.db"
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen(compare_command(out, db, "--workers", "2"), env=compare_env(),
                                stdout=subprocess.DEVNULL, stderr=err)
        # a worker holds its first run from the moment it starts (it gets the run with its
        # start) until it has imported torch and trained it: killed now, it is killed mid-run
        os.kill(_first_worker(proc), signal.SIGKILL)
        assert proc.wait() == 0, log.read_text()[-3000:]
    stderr = log.read_text()
    assert stderr.count("its worker process was killed (SIGKILL)): trying again (1 of 1)") == 1
    results = json.loads((out / "results.json").read_text())
    assert (results["runs_reused"], results["config"]["workers"]) == (0, 2)
    # two worker processes, one killed, write the one process's results (dose-response included)
    assert len(results["dose_response"][0]["points"]) == 1
    assert comparable(results) == comparable(sequential_results)
    with Store(f"sqlite:///{db}") as store:
        assert len(store.trained_run_keys(store.dataset_names()[0])) == RUNS


def _interrupt_after_stored_runs(proc: subprocess.Popen[bytes], db: Path, k: int) -> int:
    """Ctrl-C (SIGINT to compare alone) once the store holds at least k runs; how many it held.

    The compare is let run in short steps and stopped (SIGSTOP) between them while the store is
    read, so it cannot finish unseen however busy the machine is: a stopped compare hands its
    workers no new run (at most one per worker finishes meanwhile) and takes the SIGINT, queued
    while it is stopped, as soon as it is continued."""
    con = sqlite3.connect(db, timeout=60, isolation_level=None)  # WAL: a read never waits
    try:
        while True:
            os.kill(proc.pid, signal.SIGSTOP)
            done = int(con.execute("SELECT count(*) FROM trained_runs").fetchone()[0])
            if proc.poll() is not None:  # it ended on its own: the assertions say how
                return done
            if done >= k:
                proc.send_signal(signal.SIGINT)
                os.kill(proc.pid, signal.SIGCONT)
                return done
            os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.05)  # the step it runs, not a deadline: the loop ends on the count
    finally:
        con.close()


def _with_ctrl_c(command: list[str]) -> list[str]:
    """`python -m rewardlab …` that takes Ctrl-C as a terminal's foreground job does. A process
    started in the background by a non-interactive shell (a CI script's `cmd &`) inherits SIGINT
    ignored, and Python keeps it so: the compare would then never see the test's SIGINT."""
    assert command[1:3] == ["-m", "rewardlab"]
    start = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "runpy.run_module('rewardlab', run_name='__main__', alter_sys=True)")
    return [command[0], "-c", start, *command[3:]]


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX"
    except (OSError, IndexError):
        return True


def test_ctrl_c_stops_the_workers_and_keeps_the_finished_runs(
        sequential_results: dict[str, Any], tmp_path: Path) -> None:
    out, db = tmp_path / "out", tmp_path / "store.db"
    Store(f"sqlite:///{db}").close()  # the schema (WAL mode) before two processes share the file
    proc = subprocess.Popen(_with_ctrl_c(compare_command(out, db, "--workers", "2")),
                            env=compare_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = _first_worker(proc)
    finished = _interrupt_after_stored_runs(proc, db, 2)
    assert proc.wait() == 130  # the CLI's exit status for Ctrl-C
    assert _gone(worker)  # no worker outlives the compare
    with Store(f"sqlite:///{db}") as store:
        kept = len(store.trained_run_keys(store.dataset_names()[0]))
    assert 2 <= finished <= kept < RUNS and not (out / "results.json").exists()
    # started again, it trains only the runs it had not stored, and ends as one process does
    again = subprocess.run(compare_command(out, db, "--workers", "2"), env=compare_env(), capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "trying again" not in again.stderr  # two workers and no fault: no run tried twice
    results = json.loads((out / "results.json").read_text())
    assert results["runs_reused"] == kept
    assert comparable(results) == comparable(sequential_results)


# ---------------------------------------------------------------- refused before any work

@pytest.mark.parametrize("extra, says", [
    (["--ray", "ray://10.0.0.1:10001"], "workers on other nodes write their runs to the store "
                                        "themselves"),
    (["--ray", "auto"], "use a PostgreSQL store"),
    (["--workers", "64", "--gpus-per-run", "1"], "--workers 64 × --gpus-per-run 1 needs 64 GPUs"),
    (["--gpus-per-run", "2", "--grad-accum", "2"],
     "--workers 1 × --gpus-per-run 2 needs 2 GPUs; this machine shows 0"),
    (["--gpus-per-run", "2"], "give a --grad-accum divisible by 2"),
    (["--workers", "0"], "--workers must be at least 1 (got 0)"),
    (["--retries", "-1"], "--retries must be at least 0 (got -1)"),
])
def test_what_cannot_run_as_asked_is_refused_before_any_work(
        tmp_path: Path, extra: list[str], says: str) -> None:
    out, db = tmp_path / "out", tmp_path / "store.db"
    done = subprocess.run(compare_command(out, db, *extra), env=compare_env(), capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not db.exists() and not out.exists()  # no store opened, no data read, nothing written


# ---------------------------------------------------------------- the executor itself

def _tasks(tmp_path: Path, *behaviours: str) -> list[tuple[int, str, str]]:
    return [(i, b, str(tmp_path / f"tries-{i}")) for i, b in enumerate(behaviours, start=1)]


def _tries(task: tuple[int, str, str]) -> int:
    return len(Path(task[2]).read_text().splitlines())


def _by_value(outcomes: Iterator[Outcome[tuple[int, str, str]]]
              ) -> dict[int, Outcome[tuple[int, str, str]]]:
    return {o.task[0]: o for o in outcomes}


@pytest.mark.parametrize("execution", [Execution(), Execution(workers=2)],
                         ids=["in-process", "2-processes"])
def test_every_task_runs_once_and_gives_its_result(execution: Execution, tmp_path: Path) -> None:
    tasks = _tasks(tmp_path, *["works"] * 5)
    got = _by_value(execute(job, tasks, shared=10, execution=execution))
    assert {v: (o.result, o.error, o.attempts) for v, o in got.items()} == {
        v: (10 * v, None, 1) for v in range(1, 6)}
    assert [_tries(t) for t in tasks] == [1] * 5


def test_worker_processes_retry_a_killed_run_and_report_what_still_fails(tmp_path: Path) -> None:
    tasks = _tasks(tmp_path, "works", "killed_once", "always_killed", "refused", "works")
    got = _by_value(execute(job, tasks, shared=3, execution=Execution(workers=2, retries=2)))
    assert (got[1].result, got[5].result) == (3, 15)  # the others went on
    assert (got[2].result, got[2].attempts, _tries(tasks[1])) == (6, 2, 2)
    assert got[3].result is None and got[3].attempts == 3 and _tries(tasks[2]) == 3
    assert got[3].error == "its worker process was killed (SIGKILL)"
    # the input at fault: tried once, its message kept
    assert (got[4].error, got[4].attempts, _tries(tasks[3])) == ("task 4: refused", 1, 1)


def test_ray_tasks_retry_a_killed_run_and_report_what_still_fails(
        tmp_path: Path, ray_tmp: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    # the job's module travels with the task (Ray's workers do not have tests/ on their path)
    import tests._fanout_jobs

    ray.cloudpickle.register_pickle_by_value(tests._fanout_jobs)
    tasks = _tasks(tmp_path, "works", "killed_once", "always_killed", "refused")
    got = _by_value(execute(job, tasks, shared=3,
                            execution=Execution(workers=2, ray="local", retries=1)))
    assert not ray.is_initialized()  # the local cluster it started is shut down
    assert (got[1].result, got[2].result, _tries(tasks[1])) == (3, 6, 2)
    assert got[3].result is None and _tries(tasks[2]) == 2 and got[3].error
    assert (got[4].error, _tries(tasks[3])) == ("task 4: refused", 1)
