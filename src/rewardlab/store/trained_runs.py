"""Trained-run SQL for the store: save one finished run of an experiment plan, read runs back.

Called by `Store` inside its sessions; nothing here commits. A run is keyed by its plan id
(`experiment/plan.py` `RunSpec.id`); its per-test-pair rewards are rows of their own, so the
inputs of every statistic stay in the store, queryable, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rewardlab.jsonable import to_jsonable
from rewardlab.store.bulk import IN_CHUNK, bulk_insert, chunks, conflict_insert
from rewardlab.store.records import StoredRun
from rewardlab.store.schema import TrainedRun, TrainedRunReward, utcnow

__all__ = ["insert_trained_run", "select_trained_runs", "trained_run_keys", "training_speed"]

def insert_trained_run(s: Session, dataset_id: int, run_key: str, *, stage: str, group: str,
                       seed: int, model: str, pair_steps: int, record: Mapping[str, Any],
                       test_ids: Sequence[int], chosen: Sequence[float | None],
                       rejected: Sequence[float | None]) -> bool:
    """Insert the run and its rewards; False (nothing written) when the key is already stored.

    INSERT … ON CONFLICT DO NOTHING: two processes finishing the same run keep the first one."""
    seconds = record.get("seconds")
    stmt = conflict_insert(s, TrainedRun).values(
        run_key=run_key, dataset_id=dataset_id, stage=stage, group_name=group, seed=int(seed),
        model=model, pair_steps=int(pair_steps),
        seconds=float(seconds) if isinstance(seconds, (int, float)) else 0.0,
        record=to_jsonable(record), created_at=utcnow()
    ).on_conflict_do_nothing(index_elements=["run_key"])
    run_id = s.scalar(stmt.returning(TrainedRun.id))
    if run_id is None:
        return False
    bulk_insert(s, TrainedRunReward, [
        {"run_id": run_id, "position": i, "example_id": int(eid), "chosen": c, "rejected": r}
        for i, (eid, c, r) in enumerate(zip(test_ids, chosen, rejected))])
    return True


def select_trained_runs(s: Session, dataset_id: int, run_keys: Sequence[str]
                        ) -> dict[str, StoredRun]:
    """run key -> the stored run, for the keys the dataset holds."""
    rows: list[Any] = []
    for chunk in chunks(list(dict.fromkeys(run_keys)), IN_CHUNK):
        rows += s.execute(select(TrainedRun.id, TrainedRun.run_key, TrainedRun.record)
                          .where(TrainedRun.dataset_id == dataset_id,
                                 TrainedRun.run_key.in_(chunk))).all()
    found: dict[int, StoredRun] = {row.id: {"record": row.record, "test_ids": [], "chosen": [],
                                            "rejected": []} for row in rows}
    for chunk in chunks(list(found), IN_CHUNK):
        for run_id, eid, chosen, rejected in s.execute(
                select(TrainedRunReward.run_id, TrainedRunReward.example_id,
                       TrainedRunReward.chosen, TrainedRunReward.rejected)
                .where(TrainedRunReward.run_id.in_(chunk))
                .order_by(TrainedRunReward.run_id, TrainedRunReward.position)):
            run = found[run_id]
            run["test_ids"].append(eid)
            run["chosen"].append(chosen)
            run["rejected"].append(rejected)
    return {row.run_key: found[row.id] for row in rows}


def trained_run_keys(s: Session, dataset_id: int) -> list[str]:
    """The keys of the dataset's trained runs, oldest first."""
    return list(s.scalars(select(TrainedRun.run_key).where(TrainedRun.dataset_id == dataset_id)
                          .order_by(TrainedRun.id)))


def training_speed(s: Session, model: str) -> tuple[int, float]:
    """(pair-steps, seconds) summed over every stored run of backbone `model`."""
    steps, seconds = s.execute(select(func.coalesce(func.sum(TrainedRun.pair_steps), 0),
                                      func.coalesce(func.sum(TrainedRun.seconds), 0.0))
                               .where(TrainedRun.model == model)).one()
    return int(steps), float(seconds)
