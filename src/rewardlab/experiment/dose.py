"""Dose-response curves and per-detector ablation: which pairs are treated, against which control.

- `run_dose_response`: at each fraction f, treat (remove / flip / label-smooth) the top f of the
  training pool ranked by one detector's score, and, as the control, the same number of pairs at
  random (nested across fractions, as the detector's top k are); train both over the seeds.
- `run_ablation`: each detector's own flagged pairs treated vs as many random pairs, so a detector
  is judged on its own flags, not on the union the clean conditions act on.

Training is the caller's (`TrainRun`: selection, seed, run tag → run record), so these functions
only choose pairs and assemble the results blocks; `train_over_seeds` runs and logs one per seed,
here and for compare's conditions. The statistics are `rewardlab.evaluation.dose`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import SelectionError
from rewardlab.evaluation.dose import TREATED, TREATMENT_VERBS, curve_test, dose_verdict
from rewardlab.evaluation.stats import compare_runs, summarize_runs
from rewardlab.flags.selection import (
    Selection,
    random_order,
    rank_pairs,
    treat_positions,
    treated_count,
)

if TYPE_CHECKING:
    from rewardlab.report.results import (
        AblationEntry,
        ArmBlock,
        ConditionBlock,
        DosePoint,
        DoseResponse,
        RunRecord,
    )

__all__ = ["TrainRun", "RunCounter", "parse_fractions", "train_over_seeds", "run_dose_response",
           "run_ablation"]

log = logging.getLogger("rewardlab")

# (what to train on, seed, a short tag for checkpoints and logs) -> the run's record
TrainRun = Callable[[Selection, int, str], "RunRecord"]


def parse_fractions(text: str, *, flag: str = "--fractions") -> list[float]:
    """'0.05,0.1,0.2' → [0.05, 0.1, 0.2]: each in (0, 1), increasing, no repeats; else one line.

    >>> parse_fractions("0.05, 0.1,0.3")
    [0.05, 0.1, 0.3]
    """
    values = []
    for item in (t.strip() for t in text.split(",")):
        try:
            value = float(item)
        except ValueError:
            raise SelectionError(f"{flag}: {item!r} is not a number (expected e.g. "
                                 "0.05,0.1,0.2,0.3)") from None
        if not 0.0 < value < 1.0:
            raise SelectionError(f"{flag}: {item} is outside (0, 1); fractions are shares of "
                                 "the training pairs, e.g. 0.1 for 10%")
        values.append(value)
    if not values:
        raise SelectionError(f"{flag} is empty (expected e.g. 0.05,0.1,0.2,0.3)")
    if len(set(values)) != len(values):
        raise SelectionError(f"{flag}: {text} repeats a fraction")
    if values != sorted(values):
        raise SelectionError(f"{flag}: {text} is not increasing (write them smallest first)")
    return values


def _arm(runs: list[RunRecord], description: str) -> ArmBlock:
    return {"description": description, "runs": runs, "summary": summarize_runs(runs)}


@dataclass
class RunCounter:
    """Numbers one batch of training runs in the log: "[done/total]"."""

    total: int
    done: int = 0


def train_over_seeds(selections: Mapping[int, Selection], tag: str, train: TrainRun,
                     counter: RunCounter) -> list[RunRecord]:
    """One run per seed on that seed's selection, in the mapping's order, each logged."""
    runs = []
    for seed, selection in selections.items():
        counter.done += 1
        log.info("[%d/%d] %s, seed %d", counter.done, counter.total, tag, seed)
        runs.append(train(selection, seed, tag))
        log.info("    test accuracy %.4f on %d pairs (%.0f s)", runs[-1]["test"]["accuracy"],
                 runs[-1]["test"]["n"], runs[-1]["seconds"])
    return runs


def _random_arm(pool: Sequence[PreferencePair], k: int, *, treatment: str, seeds: Sequence[int],
                tag: str, train: TrainRun, counter: RunCounter) -> list[RunRecord]:
    """The size-matched control: per seed, the first k of that seed's random order treated."""
    return train_over_seeds({s: treat_positions(pool, random_order(len(pool), seed=s)[:k],
                                                treatment=treatment, mode="matched-random")
                             for s in seeds}, tag, train, counter)


def _point(pool: Sequence[PreferencePair], ranked: list[int], fraction: float, *,
           rank_by: str, treatment: str, flagged_ids: set[int], seeds: Sequence[int],
           train: TrainRun, counter: RunCounter) -> DosePoint:
    k = treated_count(fraction, len(pool))
    top = ranked[:k]  # the same for every seed: seeds vary training, not the choice
    flagged_among = sum(pool[i].example_id in flagged_ids for i in top)
    det_note = f"top {100 * fraction:g}% ({k} pairs) by {rank_by} {TREATED[treatment]}"
    rand_note = f"{k} random pairs {TREATED[treatment]} (control for top {100 * fraction:g}%)"
    tag = f"{rank_by}-{treatment}-{fraction:g}"
    det = train_over_seeds({s: treat_positions(pool, top, treatment=treatment) for s in seeds},
                           tag, train, counter)
    rand = _random_arm(pool, k, treatment=treatment, seeds=seeds,
                       tag=f"random-{treatment}-{fraction:g}", train=train, counter=counter)
    comparison = compare_runs(f"top {100 * fraction:g}% by {rank_by}", det,
                              f"{k} random pairs", rand)
    return {"fraction": fraction, "count": k, "flagged_among": flagged_among,
            "detector": _arm(det, det_note), "random": _arm(rand, rand_note),
            "comparison": comparison}


def run_dose_response(pool: Sequence[PreferencePair], scores: Mapping[int, float], *,
                      rank_by: str, treatment: str, fractions: Sequence[float],
                      seeds: Sequence[int], train: TrainRun, flagged_ids: set[int],
                      baseline: str | None = None) -> DoseResponse:
    """One dose-response block: 2 × len(fractions) × len(seeds) training runs.

    `scores` maps example ids to the detector's score (higher = more suspect); `flagged_ids` are
    the pairs it flagged (counted among the treated ones); `baseline` names the condition drawn as
    the fraction-0 point (usually "unfiltered").
    """
    ranked = rank_pairs(pool, scores)
    counter = RunCounter(2 * len(fractions) * len(seeds))
    log.info("dose-response: %s by %s at %s (%d runs)", treatment, rank_by,
             ", ".join(f"{f:g}" for f in fractions), counter.total)
    points = [_point(pool, ranked, f, rank_by=rank_by, treatment=treatment,
                     flagged_ids=flagged_ids, seeds=seeds, train=train, counter=counter)
              for f in fractions]
    curve = curve_test([p["detector"]["runs"] for p in points],
                       [p["random"]["runs"] for p in points])
    scored = sum(1 for p in pool if p.example_id is not None
                 and math.isfinite(scores.get(p.example_id, math.nan)))
    return {"rank_by": rank_by, "treatment": treatment, "fractions": list(fractions),
            "pool": len(pool), "scored": scored, "baseline": baseline,
            "ranking": "score descending; ties in a seeded random order; unscored pairs last",
            "points": points, "curve_test": curve,
            "verdict": dose_verdict(rank_by=rank_by, treatment=treatment, fractions=fractions,
                                    comparisons=[p["comparison"] for p in points], curve=curve)}


def _reused(flagged: set[int], union: set[int], treatment: str,
            conditions: Mapping[str, ConditionBlock]) -> tuple[ArmBlock, ArmBlock] | None:
    """The main clean/random runs when they are exactly this detector's ablation."""
    clean = conditions.get(f"clean-{treatment}")
    random_block = conditions.get("random")
    if flagged != union or treatment != "remove" or clean is None or random_block is None:
        return None
    return (_arm(clean["runs"], clean["description"]),
            _arm(random_block["runs"], random_block["description"]))


def run_ablation(pool: Sequence[PreferencePair], flagged_by: Mapping[str, set[int]], *,
                 treatment: str, seeds: Sequence[int], train: TrainRun,
                 conditions: Mapping[str, ConditionBlock]) -> list[AblationEntry]:
    """Each detector's own flags (in the pool) treated vs as many random pairs, over the seeds.

    Detectors that flagged nothing in the pool are skipped (their clean set is the full data);
    a detector whose flags are the union the main conditions used reuses those runs.
    """
    pool_ids = {p.example_id for p in pool}
    union = set().union(*flagged_by.values()) & pool_ids if flagged_by else set()
    active = {d: ids & pool_ids for d, ids in flagged_by.items() if ids & pool_ids}
    reused = {d: _reused(ids, union, treatment, conditions) for d, ids in active.items()}
    counter = RunCounter(2 * sum(arms is None for arms in reused.values()) * len(seeds))
    verb = TREATMENT_VERBS[treatment]
    entries: list[AblationEntry] = []
    for det, ids in active.items():
        k = len(ids)
        treated, control = f"{verb} {det}'s {k} flags", f"{verb} {k} random pairs"
        arms = reused[det]
        if arms is None:
            positions = [i for i, p in enumerate(pool) if p.example_id in ids]
            own = {s: treat_positions(pool, positions, treatment=treatment, mode="clean")
                   for s in seeds}
            clean = _arm(train_over_seeds(own, f"ablation-{det}", train, counter), treated)
            rand = _arm(_random_arm(pool, k, treatment=treatment, seeds=seeds,
                                    tag=f"ablation-{det}-random", train=train, counter=counter),
                        control)
        else:
            clean, rand = arms
        entries.append({"detector": det, "treatment": treatment, "flagged": k,
                        "reused": arms is not None, "clean": clean, "random": rand,
                        "comparison": compare_runs(treated, clean["runs"], control,
                                                   rand["runs"])})
    return entries
