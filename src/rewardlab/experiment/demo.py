"""`rewardlab demo`: the whole loop on synthetic preferences whose truth is known.

Synthetic pairs with a hidden quality function and 20% flipped labels → model-based detectors →
unfiltered / clean (remove, flip) / random, and a dose-response curve (remove the 5–30% of pairs
oof_margin ranks most suspect vs as many random pairs) → report, plus teaching figures: what the
BT loss does, how well the reward recovers true quality, and how well each detector finds the
injected flips. The teaching block also says, per fraction, how many of the removed pairs really
were flipped, and holds the ties lesson (`experiment.ties_lesson`): on synthetic prompts with known
ties, what plain BT, soft ½ targets and the Davidson tie model do with them, in one figure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rewardlab.data.pairs import PreferencePair
from rewardlab.experiment.compare import Annotate, run_comparison, train_config_for
from rewardlab.experiment.compare_config import CompareConfig, preset_training
from rewardlab.flags.selection import FlagSpec

if TYPE_CHECKING:
    from rewardlab.report.results import (
        ConditionBlock,
        DetectorQuality,
        ResultsDocument,
        ResultsDraft,
        TeachingBlock,
    )
    from rewardlab.store.store import Store

__all__ = ["run_demo", "DEMO_DETECTORS"]

# oof_margin defines "flagged" for the clean conditions; ensemble_strength is scored for comparison.
DEMO_DETECTORS = ("oof_margin", "ensemble_strength")
DEMO_SEEDS = 3
DEMO_FRACTIONS = (0.05, 0.1, 0.2, 0.3)  # around the 20% noise: the curve should rise, then level


def _detector_quality(store: Store, name: str, pool: Sequence[PreferencePair]
                      ) -> dict[str, DetectorQuality]:
    from rewardlab.experiment.teaching import detector_quality

    truth = np.array([bool(p.meta.get("flipped")) for p in pool])
    flagged_by = store.flagged_example_ids(name, list(DEMO_DETECTORS))
    return {d: detector_quality(np.array([p.example_id in ids for p in pool]), truth)
            for d, ids in flagged_by.items()}


def _oracle_accuracy(config: CompareConfig, pool: Sequence[PreferencePair],
                     test: Sequence[PreferencePair], seeds: Sequence[int]) -> float:
    """Test accuracy when the injected flips are undone: the ceiling cleaning could reach."""
    from rewardlab.evaluation.evaluate import evaluate_reward_model
    from rewardlab.training.loop import train_reward_model

    truth = [p.flipped() if p.meta.get("flipped") else p for p in pool]
    accs = [evaluate_reward_model(train_reward_model(
        truth, config=train_config_for(config, s), progress=False).model, test,
        progress=False).metrics["accuracy"]
        for s in seeds]
    return float(np.mean(np.array(accs, dtype=float)))  # floats: `test` is never empty


def _accuracy(cond: ConditionBlock) -> float:
    """A condition's mean test accuracy; never None here, the demo always has test pairs."""
    accuracy = cond["summary"]["accuracy_mean"]
    assert accuracy is not None, "no test accuracy: the demo's test split is empty"
    return accuracy


def _quality_points(results: ResultsDraft, test: Sequence[PreferencePair]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """True quality and the unfiltered seed-0 model's reward for every test response."""
    run = results["conditions"]["unfiltered"]["runs"][0]
    quality = [p.meta["quality_chosen"] for p in test] + [p.meta["quality_rejected"] for p in test]
    rewards = run["test_chosen_rewards"] + run["test_rejected_rewards"]
    return np.asarray(quality, dtype=float), np.asarray(rewards, dtype=float)


def _teaching(config: CompareConfig, store: Store, name: str, out_dir: Path,
              noise: float, seed: int) -> Annotate:
    from rewardlab.experiment.teaching import plot_bt_curves, plot_detector_quality, plot_quality_vs_reward
    from rewardlab.experiment.ties_lesson import run_ties_lesson

    def annotate(results: ResultsDraft, pool: list[PreferencePair],
                 test: list[PreferencePair]) -> TeachingBlock:
        figures = {"bt_curves": out_dir / "teach_bt_curves.png",
                   "quality_vs_reward": out_dir / "teach_quality_vs_reward.png",
                   "detector_quality": out_dir / "teach_detector_quality.png"}
        plot_bt_curves(figures["bt_curves"])
        corr = plot_quality_vs_reward(*_quality_points(results, test), figures["quality_vs_reward"])
        quality = _detector_quality(store, name, pool)
        plot_detector_quality(quality, figures["detector_quality"])
        conds = results["conditions"]
        unfiltered = _accuracy(conds["unfiltered"])
        best = max((c for c in conds if c.startswith("clean-")), key=lambda c: _accuracy(conds[c]))
        oracle = _oracle_accuracy(config, pool, test, results["config"]["seeds"])
        lost = oracle - unfiltered
        recovered = (_accuracy(conds[best]) - unfiltered) / lost if lost > 0 else None
        block: TeachingBlock = {
            "noise": noise, "injected_flips": int(sum(bool(p.meta.get("flipped")) for p in pool)),
            "detector_quality": quality, "quality_reward_corr": corr,
            "oracle_accuracy": oracle, "best_treatment": best, "recovered_fraction": recovered,
            "figures": {k: str(v) for k, v in figures.items()}}
        if results.get("dose_response"):
            block["dose_flipped_share"] = _dose_flipped_share(results, store, name, pool)
        block["ties"] = run_ties_lesson(out_dir, seed=seed)
        block["figures"]["ties"] = block["ties"]["figure"]
        return block

    return annotate


def _dose_flipped_share(results: ResultsDraft, store: Store, name: str,
                        pool: Sequence[PreferencePair]) -> dict[str, float]:
    """Per fraction ("0.1"), the share of the detector arm's treated pairs that were flipped."""
    from rewardlab.flags.selection import detector_scores, rank_pairs, treated_count

    dose = results["dose_response"][0]
    ranked = rank_pairs(pool, detector_scores(store, name, dose["rank_by"]))  # as the curve did
    out = {}
    for point in dose["points"]:
        top = ranked[:treated_count(point["fraction"], len(pool))]
        out[f"{point['fraction']:g}"] = float(np.mean([bool(pool[i].meta.get("flipped"))
                                                       for i in top]))
    return out


def run_demo(out_dir: Path, *, n: int = 4000, noise: float = 0.2, seed: int = 0,
             db: str | None = None, progress: bool = True, seeds: int = DEMO_SEEDS,
             fractions: Sequence[float] = DEMO_FRACTIONS) -> ResultsDocument:
    """Run the offline demo into `out_dir` (its own SQLite store there unless `db` is given).

    `seeds` and `fractions` (the dose-response curve; () for none) make a smaller demo for tests.
    """
    from rewardlab.data.sources import read_source
    from rewardlab.flags.flagging import flag_dataset
    from rewardlab.store.store import Store

    out_dir.mkdir(parents=True, exist_ok=True)
    url = db or os.environ.get("REWARDLAB_DB") or f"sqlite:///{(out_dir / 'rewardlab.db').resolve()}"
    store = Store(url)
    name = f"synthetic-n{n}-noise{noise:g}-seed{seed}"
    config = CompareConfig(
        train=f"synthetic:n={n},noise={noise:g},seed={seed}",
        conditions=("unfiltered", "clean", "random"), treatments=("remove", "flip"),
        detectors=(FlagSpec("oof_margin"),), max_pairs=0, seeds=seeds, name=name,
        rank_by="oof_margin" if fractions else None, fractions=tuple(fractions) or None,
        training=preset_training(model="bow"))
    # ensemble_strength does not define "flagged" here, but its precision/recall is reported.
    store.ingest(name, read_source(config.train))
    if "ensemble_strength" not in store.latest_runs(name):
        flag_dataset(store, name, detectors=["ensemble_strength"], progress=progress)
    return run_comparison(config, out_dir, store=store, progress=progress,
                          teaching=_teaching(config, store, name, out_dir, noise, seed))
