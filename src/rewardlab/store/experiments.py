"""Experiment SQL for the store: an experiment's row, its plan, its results, its progress.

Called by `Store` inside its sessions; nothing here commits. An experiment is recorded when it
starts, with the ids of every run its plan holds (`PlannedRun`); its runs land in `trained_runs`
as they finish (`store/trained_runs.py`), so any process reading the store sees `runs_done` of
`runs_planned` grow while the experiment runs. When it ends, its summary metrics and one
`ExperimentRun` per (condition, seed) are added: an experiment without them has not finished.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rewardlab.jsonable import to_jsonable
from rewardlab.store.bulk import bulk_insert
from rewardlab.store.records import ExperimentRow, ExperimentRunRow, FinishedRun
from rewardlab.store.schema import Experiment, ExperimentRun, PlannedRun, TrainedRun, iso_utc

__all__ = ["insert_experiment", "unfinished_experiment", "insert_experiment_runs",
           "select_experiments"]


def insert_experiment(s: Session, *, name: str, dataset: str, config: Mapping[str, Any],
                      metrics: Mapping[str, Any], out_dir: str,
                      run_keys: Sequence[str] | None = None) -> int:
    """Add an experiment (and its plan's run ids, in plan order, when given); its id."""
    experiment = Experiment(name=name, dataset=dataset, config=to_jsonable(config),
                            metrics=to_jsonable(metrics), out_dir=str(out_dir))
    s.add(experiment)
    s.flush()  # assigns experiment.id
    bulk_insert(s, PlannedRun, [{"experiment_id": experiment.id, "position": i, "run_key": key}
                                for i, key in enumerate(run_keys or ())])
    return experiment.id


def unfinished_experiment(s: Session, *, dataset: str, out_dir: str,
                          run_keys: Sequence[str]) -> int | None:
    """The newest experiment into `out_dir` on `dataset` with exactly this plan that never
    finished (a killed compare started again continues its row), or None."""
    candidates = s.scalars(select(Experiment.id).where(
        Experiment.dataset == dataset, Experiment.out_dir == str(out_dir),
        ~Experiment.id.in_(select(ExperimentRun.experiment_id)))
        .order_by(Experiment.id.desc())).all()
    for experiment_id in candidates:
        keys = list(s.scalars(select(PlannedRun.run_key)
                              .where(PlannedRun.experiment_id == experiment_id)
                              .order_by(PlannedRun.position)))
        if keys == list(run_keys):
            return int(experiment_id)
    return None


def insert_experiment_runs(s: Session, experiment_id: int, runs: Sequence[FinishedRun]) -> None:
    """One `ExperimentRun` per (condition, seed) of a finished experiment."""
    s.add_all([ExperimentRun(experiment_id=experiment_id, condition=r["condition"],
                             seed=int(r["seed"]), metrics=to_jsonable(r["metrics"]),
                             checkpoint=None if r["checkpoint"] is None else str(r["checkpoint"]))
               for r in runs])


def _progress(s: Session) -> dict[int, tuple[int, int]]:
    """experiment id -> (runs its plan holds, of those stored as trained), for experiments whose
    plan was recorded."""
    rows = s.execute(select(PlannedRun.experiment_id, func.count(PlannedRun.id),
                            func.count(TrainedRun.id))
                     .outerjoin(TrainedRun, TrainedRun.run_key == PlannedRun.run_key)
                     .group_by(PlannedRun.experiment_id)).all()
    return {int(eid): (int(planned), int(done)) for eid, planned, done in rows}


def select_experiments(s: Session) -> list[ExperimentRow]:
    """Every experiment, oldest first, with its runs and its plan's progress (None for both
    counts when its plan was not recorded: experiments from before schema version 4)."""
    experiments = s.scalars(select(Experiment).order_by(Experiment.id)).all()
    runs = s.scalars(select(ExperimentRun).order_by(ExperimentRun.id)).all()
    progress = _progress(s)
    by_experiment: dict[int, list[ExperimentRunRow]] = {e.id: [] for e in experiments}
    for r in runs:
        by_experiment[r.experiment_id].append(
            {"id": r.id, "condition": r.condition, "seed": r.seed, "metrics": r.metrics,
             "checkpoint": r.checkpoint})
    rows: list[ExperimentRow] = []
    for e in experiments:
        planned, done = progress.get(e.id, (None, None))
        rows.append({"id": e.id, "name": e.name, "dataset": e.dataset, "config": e.config,
                     "metrics": e.metrics, "out_dir": e.out_dir,
                     "created_at": iso_utc(e.created_at), "runs": by_experiment[e.id],
                     "runs_planned": planned, "runs_done": done})
    return rows
