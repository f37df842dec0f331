"""Carrying out a plan of runs: reuse what the store holds, train the rest, store each at once.

Every run whose id the store holds (with rewards for exactly this experiment's test pairs) is
reused; the others train one by one, in plan order, and each lands in the store as it finishes,
its record and per-test-pair rewards in one transaction. A compare killed at any moment (SIGKILL
included) therefore loses at most the run in progress, and started again with the same arguments
it trains only the runs that had not finished. A fresh run's record goes through the same JSON
round trip as a stored one, so the statistics read the same values either way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rewardlab.data.pairs import PreferencePair
from rewardlab.experiment.dose import ArmKey
from rewardlab.experiment.plan import RunSpec
from rewardlab.jsonable import to_jsonable

if TYPE_CHECKING:
    from rewardlab.report.results import RunRecord
    from rewardlab.store.records import StoredRun
    from rewardlab.store.store import Store

__all__ = ["PlanRuns", "run_plan", "records_by_key", "checkpoint_dir"]

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


def _selection_fields(run: RunSpec, ckpt: Path | None) -> dict[str, Any]:
    """The record's fields that describe the run's selection, not its training: taken from the
    plan, also for a reused run (an unfiltered run is the same run whatever the detectors flag,
    but its record counts this experiment's flags)."""
    selection = run.selection
    return {"seed": run.seed, "train_pairs": len(selection.pairs),
            "selection": selection.describe(), "flagged_in_train": selection.n_flagged,
            "removed": selection.n_removed, "checkpoint": str(ckpt) if ckpt else None}


def _train_and_evaluate(run: RunSpec, test: Sequence[PreferencePair], ckpt: Path | None,
                        progress: bool) -> RunRecord:
    """Train on the run's selection with its TrainConfig, evaluate on `test`: its record."""
    from rewardlab.evaluation.evaluate import evaluate_reward_model
    from rewardlab.training.loop import train_reward_model

    selection = run.selection
    trained = train_reward_model(selection.pairs, config=run.train_config, output_dir=ckpt,
                                 smoothing=selection.smoothing, progress=progress)
    evaluation = evaluate_reward_model(trained.model, test, progress=progress)
    fields = _selection_fields(run, ckpt)
    record = {
        **{k: fields[k] for k in ("seed", "train_pairs", "selection", "flagged_in_train",
                                  "removed")},
        "train_loss": trained.train_loss, "train_accuracy": trained.train_accuracy,
        "seconds": trained.seconds, "checkpoint": fields["checkpoint"],
        "n_truncated": trained.n_truncated, "history": trained.history,
        "test": evaluation.metrics,
        "test_chosen_rewards": evaluation.chosen_rewards.tolist(),
        "test_rejected_rewards": evaluation.rejected_rewards.tolist(),
    }
    # as the store hands it back (NaN → None, tuples → lists): fresh and reused runs read alike
    return cast("RunRecord", to_jsonable(record))


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
    record = {**stored["record"], **_selection_fields(run, ckpt)}
    return cast("RunRecord", {**record, _REWARDS[0]: stored["chosen"],
                              _REWARDS[1]: stored["rejected"]})


def _save(store: Store, name: str, run: RunSpec, record: RunRecord, test_ids: list[int]) -> None:
    store.save_trained_run(
        name, run.id, stage=run.stage, group=run.group, seed=run.seed,
        model=run.train_config.model, pair_steps=run.pair_steps,
        record={k: v for k, v in record.items() if k not in _REWARDS}, test_ids=test_ids,
        chosen=record["test_chosen_rewards"], rejected=record["test_rejected_rewards"])


def run_plan(plan: Sequence[RunSpec], store: Store, name: str, test: Sequence[PreferencePair], *,
             out_dir: Path | None = None, reuse: bool = True, progress: bool = True) -> PlanRuns:
    """Every run of `plan` finished: reused from the store (`reuse`) or trained and stored.

    `out_dir` given: each trained run keeps its checkpoint there (`checkpoint_dir`).
    """
    test_ids = [int(p.example_id) for p in test if p.example_id is not None]
    stored = store.trained_runs(name, [r.id for r in plan]) if reuse else {}
    records: dict[str, RunRecord] = {}
    reused = 0
    for i, run in enumerate(plan, start=1):
        log.info("[%d/%d] %s, seed %d", i, len(plan), run.group, run.seed)
        ckpt = checkpoint_dir(out_dir, run) if out_dir is not None else None
        record = _from_store(stored.get(run.id), run, test_ids, ckpt)
        how = "stored run reused"
        reused += record is not None
        if record is None:
            record = _train_and_evaluate(run, test, ckpt, progress)
            _save(store, name, run, record, test_ids)
            how = f"{record['seconds']:.0f} s"
        records[run.id] = record
        log.info("    test accuracy %.4f on %d pairs (%s)", record["test"]["accuracy"],
                 record["test"]["n"], how)
    return PlanRuns(records, reused)


def records_by_key(plan: Sequence[RunSpec], records: Mapping[str, RunRecord]
                   ) -> dict[ArmKey, list[RunRecord]]:
    """The records grouped by where they go in the results (`RunSpec.key`), seeds in plan order."""
    grouped: dict[ArmKey, list[RunRecord]] = {}
    for run in plan:
        grouped.setdefault(run.key, []).append(records[run.id])
    return grouped
