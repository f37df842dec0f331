"""Reviews feed the experiment (synthetic data with known flips, the `bow` backbone, SQLite):
`compare` reports each detector's reviewed precision, adds `clean-reviewed` once reviewers
confirmed flags, and `--detectors reviewed:DET` acts on the confirmed flags only."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from rewardlab.data.sources import read_source
from rewardlab.errors import SelectionError
from rewardlab.evaluation.metrics import wilson_interval
from rewardlab.experiment.compare import (
    CompareConfig,
    _with_reviewed,
    plan_conditions,
    run_comparison,
)
from rewardlab.flags.flagging import import_flagged_indices
from rewardlab.flags.selection import FlagSpec
from rewardlab.store.store import Store
from rewardlab.training.train_config import TrainConfig

SPEC = "synthetic:n=100,noise=0.3,seed=0"
BASE = CompareConfig(train=SPEC, test_fraction=0.25, training=TrainConfig(model="bow"), seeds=1,
                     detectors=(FlagSpec("noted"), FlagSpec("unreviewed")), max_pairs=0, name="syn")


@pytest.fixture(scope="module")
def reviewed_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, set[int], set[int]]:
    """Dataset "syn": detector `noted` (an imported flag file) flags 20 flipped and 20 clean train
    pairs; a reviewer confirms the flipped ones (tp) and rejects the clean ones (fp). Detector
    `unreviewed` flags 5 other pairs nobody reviewed.
    Returns (db url, confirmed example ids, rejected example ids)."""
    db = f"sqlite:///{tmp_path_factory.mktemp('db')}/r.db"
    with Store(db) as store:
        store.ingest("syn", read_source(SPEC, test_fraction=0.25))
        train = store.load_pairs("syn", split="train")
        flipped = [p for p in train if p.meta.get("flipped")][:20]
        clean = [p for p in train if not p.meta.get("flipped")][:20]
        import_flagged_indices(store, "syn", [p.source_index for p in flipped + clean],
                               label="noted")
        others = [p for p in train if p not in flipped + clean][:5]
        import_flagged_indices(store, "syn", [p.source_index for p in others], label="unreviewed")
        reviews = [{"example_id": int(p.example_id or 0), "detector": "noted", "verdict": v,
                    "reviewer": "ann", "note": ""}
                   for ps, v in ((flipped, "tp"), (clean, "fp")) for p in ps]
        store.save_reviews("syn", reviews)  # type: ignore[arg-type]
    return db, {int(p.example_id or 0) for p in flipped}, {int(p.example_id or 0) for p in clean}


def _train_pairs(results: dict, condition: str) -> int:
    return results["conditions"][condition]["runs"][0]["train_pairs"]


def test_compare_reports_precision_and_adds_clean_reviewed(
        reviewed_store: tuple[str, set[int], set[int]], tmp_path: Path) -> None:
    db, _, _ = reviewed_store
    config = dataclasses.replace(BASE, conditions=("unfiltered", "clean"))
    results = run_comparison(config, tmp_path / "out", db=db, progress=False)
    noted = results["flags"]["detectors"]["noted"]
    assert (noted["flagged"], noted["reviewed"], noted["reviewed_tp"]) == (40, 40, 20)
    assert noted["precision"] == pytest.approx(0.5)
    assert noted["precision_ci"] == pytest.approx(list(wilson_interval(20, 40)))
    # (b) clean-reviewed joined the plan after clean and removes only the 20 confirmed flags
    assert list(results["conditions"]) == ["unfiltered", "clean-remove", "clean-reviewed"]
    assert results["config"]["conditions"] == list(results["conditions"])
    pool = _train_pairs(results, "unfiltered")
    assert (_train_pairs(results, "clean-remove"), _train_pairs(results, "clean-reviewed")) == (
        pool - 45, pool - 20)
    assert {(c["treated"], c["baseline"]) for c in results["comparisons"]} == {
        ("clean-remove", "unfiltered"), ("clean-reviewed", "unfiltered")}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| Reviewed precision |" in report and "| 50.0% (35–65%) of 40 |" in report
    assert results["flags"]["detectors"]["unreviewed"]["precision"] is None


def test_reviewed_detector_names_the_confirmed_subset(
        reviewed_store: tuple[str, set[int], set[int]], tmp_path: Path) -> None:
    db, confirmed, _ = reviewed_store
    config = dataclasses.replace(BASE, detectors=(FlagSpec("noted", reviewed_only=True),),
                                 conditions=("clean",))
    results = run_comparison(config, tmp_path / "out", db=db, progress=False)
    block = results["flags"]["detectors"]["reviewed:noted"]
    assert (block["flagged"], block["threshold_kind"]) == (20, "data")
    assert results["flags"]["union"]["flagged"] == 20
    pool = len(Store(db).load_pairs("syn", split="train"))
    assert _train_pairs(results, "clean-remove") == pool - 20  # the confirmed flags only
    assert results["config"]["detectors"] == ["reviewed:noted"]
    removed = set().union(*Store(db).flagged_example_ids("syn", ["noted"]).values())
    assert confirmed < removed


def test_clean_reviewed_needs_confirmed_flags(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/empty.db"
    with Store(db) as store:
        store.ingest("syn", read_source(SPEC, test_fraction=0.25))
        import_flagged_indices(store, "syn", [0, 1, 2], label="noted")
        pool = store.load_pairs("syn", split="train")
        # without reviews nothing joins a plan with clean
        plan = plan_conditions(("unfiltered", "clean"), ("remove",))
        assert _with_reviewed(plan, store, "syn", ["noted"], pool) == (plan, set())
    config = dataclasses.replace(BASE, detectors=(FlagSpec("noted"),),
                                 conditions=("unfiltered", "clean-reviewed"))
    with pytest.raises(SelectionError, match="clean-reviewed: reviewers confirmed none"):
        run_comparison(config, tmp_path / "out", db=db, progress=False)
