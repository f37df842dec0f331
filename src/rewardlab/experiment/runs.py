"""Carrying out a plan of runs: reuse what the store holds, train the rest, store each at once.

Every run whose id the store holds (with rewards for exactly this experiment's test pairs) is
reused; the others train one by one, in plan order, and each lands in the store as it finishes,
its record and per-test-pair rewards in one transaction. A compare killed at any moment (SIGKILL
included) therefore loses at most the runs in progress, and started again with the same arguments
it trains only the runs that had not finished. A fresh run's record goes through the same JSON
round trip as a stored one, so the statistics read the same values either way.

The runs to train go to an executor (`experiment/executor.py`): one after another here, N local
worker processes (this process stores each run as it comes back), or Ray tasks (each task stores
its own run: it may be on another machine). A run on G > 1 GPUs (`--gpus-per-run G`) is one
accelerate job of G processes that the worker launches on its G GPUs (`run_job.py`); its record
comes back as a one-process run's. Runs that still fail after their retries are reported
together once the others are in; the finished ones stay stored for the next compare.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from rewardlab.data.pairs import PreferencePair
from rewardlab.data.rated import RatedPrompt
from rewardlab.errors import RewardlabError
from rewardlab.experiment.dose_arms import ArmKey
from rewardlab.experiment.executor import Execution, Outcome, check_execution, execute
from rewardlab.experiment.plan import RunSpec
from rewardlab.experiment.run_job import launch_run, selection_fields, train_and_evaluate

if TYPE_CHECKING:
    from rewardlab.report.results import RunRecord
    from rewardlab.store.records import StoredRun
    from rewardlab.store.store import Store

__all__ = ["PlanRuns", "RunTask", "run_plan", "train_run", "records_by_key", "checkpoint_dir"]

log = logging.getLogger("rewardlab")
_REWARDS = ("test_chosen_rewards", "test_rejected_rewards")


@dataclass(frozen=True)
class PlanRuns:
    """The finished plan: each run's record by run id, and how many came from the store."""

    records: Mapping[str, RunRecord]
    reused: int


def checkpoint_dir(out_dir: Path, run: RunSpec) -> Path:
    """Where `--save-checkpoints` keeps a run's model: DIR/runs/<group>-s<seed>."""
    return out_dir / "runs" / f"{run.group}-s{run.seed}"


def _from_store(stored: StoredRun | None, run: RunSpec, test_ids: list[int], ckpt: Path | None
                ) -> RunRecord | None:
    """The stored run as this run's record, or None when it cannot stand in for it: rewards for
    other test pairs, or (`--save-checkpoints`) no checkpoint where this run keeps its own."""
    if stored is None or stored["test_ids"] != test_ids:
        return None
    if ckpt is not None and (stored["record"].get("checkpoint") != str(ckpt)
                             or not ckpt.is_dir()):
        return None
    # updating keeps the stored key order, which is the fresh record's
    record = {**stored["record"], **selection_fields(run, ckpt)}
    return cast("RunRecord", {**record, _REWARDS[0]: stored["chosen"],
                              _REWARDS[1]: stored["rejected"]})


def _save(store: Store, name: str, run: RunSpec, record: RunRecord, test_ids: list[int]) -> None:
    store.save_trained_run(
        name, run.id, stage=run.stage, group=run.group, seed=run.seed,
        model=run.train_config.model, pair_steps=run.pair_steps,
        record={k: v for k, v in record.items() if k not in _REWARDS}, test_ids=test_ids,
        chosen=record["test_chosen_rewards"], rejected=record["test_rejected_rewards"])


@dataclass(frozen=True)
class RunTask:
    """One run to train, as an executor hands it to a worker."""

    run: RunSpec
    checkpoint: Path | None
    dataset: str  # the dataset's name in the store
    store_url: str | None = None  # set: the worker stores the run itself (a Ray task)
    processes: int = 1  # > 1: one accelerate job of that many processes, one per GPU (run_job.py)
    test_rated: tuple[RatedPrompt, ...] = ()  # a rated run's test prompts (rated metrics)

    @property
    def label(self) -> str:
        return f"{self.run.group}, seed {self.run.seed}"


def _test_ids(test: Sequence[PreferencePair]) -> list[int]:
    return [int(p.example_id) for p in test if p.example_id is not None]


def train_run(task: RunTask, test: Sequence[PreferencePair]) -> RunRecord:
    """Train and evaluate one run (in a worker process or a Ray task); with `task.store_url`,
    store it from here, in one transaction, before it is handed back.

    A run of `task.processes` > 1 is one launched job (`run_job.launch_run`) on the GPUs this
    worker was given; where CUDA shows none (the tests), its processes run on the CPU."""
    if task.processes > 1:
        import torch

        record = launch_run(task.run, test, checkpoint=task.checkpoint,
                            processes=task.processes, cpu=not torch.cuda.is_available(),
                            test_rated=task.test_rated)
    else:
        record = train_and_evaluate(task.run, test, checkpoint=task.checkpoint, progress=False,
                                    test_rated=task.test_rated)
    if task.store_url is not None:
        from rewardlab.store.store import Store

        with Store(task.store_url) as store:
            _save(store, task.dataset, task.run, record, _test_ids(test))
    return record


def run_plan(plan: Sequence[RunSpec], store: Store, name: str, test: Sequence[PreferencePair], *,
             out_dir: Path | None = None, reuse: bool = True, progress: bool = True,
             execution: Execution | None = None,
             test_rated: Sequence[RatedPrompt] = ()) -> PlanRuns:
    """Every run of `plan` finished: reused from the store (`reuse`) or trained and stored.

    `out_dir` given: each trained run keeps its checkpoint there (`checkpoint_dir`). `execution`:
    how the runs train (default: one after another, here). `test_rated`: the test prompts whose
    rated metrics the runs on rated prompts (`RunSpec.prompt_ids`) also record. Runs that fail
    after their retries are logged one by one, then a RewardlabError counts them, once the others
    are in and stored.
    """
    execution = execution or Execution()
    check_execution(execution, store.url)  # before any run trains
    test_ids = _test_ids(test)
    stored = store.trained_runs(name, [r.id for r in plan]) if reuse else {}
    records: dict[str, RunRecord] = {}
    tasks: list[RunTask] = []
    for i, run in enumerate(plan, start=1):
        ckpt = checkpoint_dir(out_dir, run) if out_dir is not None else None
        record = _from_store(stored.get(run.id), run, test_ids, ckpt)
        if record is None:
            tasks.append(RunTask(run, ckpt, name, _worker_store_url(store, execution),
                                 processes=max(1, execution.gpus_per_run or 1),
                                 test_rated=tuple(test_rated) if run.prompt_ids is not None
                                 else ()))
            continue
        records[run.id] = record
        log.info("[%d/%d] %s, seed %d: test accuracy %.4f on %d pairs (stored run reused)", i,
                 len(plan), run.group, run.seed, record["test"]["accuracy"], record["test"]["n"])
    reused = len(records)
    if execution.in_process:
        _train_here(tasks, store, test, test_ids, records, progress)
    else:
        _train_elsewhere(tasks, store, test, test_ids, records, execution,
                         len(plan) if progress else 0)
    return PlanRuns({r.id: records[r.id] for r in plan}, reused)


def _worker_store_url(store: Store, execution: Execution) -> str | None:
    """Ray tasks store their own runs (they may run on other machines); local workers hand
    theirs back to this process. No password travels with a task: a node gets it from its own
    environment (PGPASSWORD, ~/.pgpass, as libpq reads them)."""
    if execution.ray is None:
        return None
    from sqlalchemy.engine import make_url

    url = make_url(store.url).set(password=None).difference_update_query(["password"])
    return url.render_as_string(hide_password=False)


def _train_here(tasks: Sequence[RunTask], store: Store, test: Sequence[PreferencePair],
                test_ids: list[int], records: dict[str, RunRecord], progress: bool) -> None:
    """One after another in this process, as compare always did: an error stops it."""
    for i, task in enumerate(tasks, start=1):
        log.info("[%d/%d] %s, seed %d", i, len(tasks), task.run.group, task.run.seed)
        record = train_and_evaluate(task.run, test, checkpoint=task.checkpoint, progress=progress,
                                    test_rated=task.test_rated)
        _save(store, task.dataset, task.run, record, test_ids)
        records[task.run.id] = record
        log.info("    test accuracy %.4f on %d pairs (%.0f s)", record["test"]["accuracy"],
                 record["test"]["n"], record["seconds"])


def _train_elsewhere(tasks: Sequence[RunTask], store: Store, test: Sequence[PreferencePair],
                     test_ids: list[int], records: dict[str, RunRecord], execution: Execution,
                     planned: int) -> None:
    """Through the executor: each run stored as it comes back, a bar counting the plan's runs
    done (the reused ones from the start) with an ETA, none when `planned` is 0; the runs that
    failed after their retries reported together at the end."""
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    failed: list[Outcome[RunTask]] = []
    # log lines go above the bar rather than through it (the CLI logs through the root logger)
    with tqdm(total=planned, initial=planned - len(tasks), desc="runs", unit="run",
              dynamic_ncols=True, disable=not planned) as bar, \
            logging_redirect_tqdm([logging.getLogger()]):
        for done in execute(train_run, tasks, shared=list(test), execution=execution):
            bar.update(1)
            if done.error is not None:
                log.warning("%s failed after %d tries: %s", done.task.label, done.attempts,
                            done.error)
                failed.append(done)
                continue
            record = cast("RunRecord", done.result)
            if done.task.store_url is None:  # else the worker stored it
                _save(store, done.task.dataset, done.task.run, record, test_ids)
            records[done.task.run.id] = record
            log.info("%s: test accuracy %.4f on %d pairs (%.0f s)", done.task.label,
                     record["test"]["accuracy"], record["test"]["n"], record["seconds"])
    if failed:
        raise RewardlabError(_failure_line(failed, len(tasks), execution.retries))


def _failure_line(failed: Sequence[Outcome[RunTask]], trained: int, retries: int) -> str:
    first = failed[0]
    return (f"{len(failed)} of {trained} runs failed after {retries} "
            f"{'retry' if retries == 1 else 'retries'} (first: {first.task.label}: {first.error}); "
            f"the {trained - len(failed)} others are stored: run compare again to train only "
            "the failed ones")


def records_by_key(plan: Sequence[RunSpec], records: Mapping[str, RunRecord]
                   ) -> dict[ArmKey, list[RunRecord]]:
    """The records grouped by where they go in the results (`RunSpec.key`), seeds in plan order."""
    grouped: dict[ArmKey, list[RunRecord]] = {}
    for run in plan:
        grouped.setdefault(run.key, []).append(records[run.id])
    return grouped
