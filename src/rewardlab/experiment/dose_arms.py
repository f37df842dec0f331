"""Dose-response curves and per-detector ablation: which pairs are treated, against which control.

- dose-response: at each fraction f, treat (remove / flip / label-smooth) the top f of the
  training pool ranked by one detector's score, and, as the control, the same number of pairs at
  random (nested across fractions, as the detector's top k are); both arms run over the seeds.
- ablation: each detector's own flagged pairs treated vs as many random pairs, so a detector is
  judged on its own flags, not on the union the clean conditions act on.

Each part comes in two halves: `dose_arms` / `ablation_arms` lay out the arms (which fractions,
which detectors, which seeds; the experiment's plan, `experiment/plan.py`, turns them into runs),
and `dose_response_block` / `ablation_block` assemble the results blocks from the finished runs.
Which pairs an arm treats and how (ranking, the random control, treatments) is
`rewardlab.flags.selection`'s; the statistics are `rewardlab.evaluation.dose_stats`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import SelectionError
from rewardlab.evaluation.dose_stats import TREATED, TREATMENT_VERBS, curve_test, dose_verdict
from rewardlab.evaluation.stats import compare_runs, summarize_runs
from rewardlab.flags.selection import (
    RANKING_RULE,
    Selection,
    matched_random,
    rank_pairs,
    select_training_pairs,
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

__all__ = ["Arm", "ArmKey", "parse_fractions", "dose_arms", "dose_response_block",
           "ablation_arms", "ablation_block"]

# Where a run's record goes in the results: (stage, tag, fraction, arm); conditions are
# ("condition", name, None, None).
ArmKey = tuple[str, str, float | None, str | None]


@dataclass(frozen=True)
class Arm:
    """One arm of training runs: one choice of pairs treated one way, a selection per seed."""

    stage: str  # "dose" | "ablation"
    tag: str  # names the log lines and checkpoint folders, e.g. "random-remove-0.1"
    fraction: float | None
    arm: str  # "detector" | "random" (dose), "clean" | "random" (ablation)
    selections: Mapping[int, Selection]  # seed -> what that seed's run trains on

    @property
    def key(self) -> ArmKey:
        return (self.stage, self.tag, self.fraction, self.arm)


def parse_fractions(text: str, *, flag: str = "--fractions") -> list[float]:
    """'0.05,0.1,0.2' → [0.05, 0.1, 0.2]: each in (0, 1), increasing, no repeats; else one line.

    >>> parse_fractions("0.05, 0.1,0.3")
    [0.05, 0.1, 0.3]
    """
    values = []
    for item in (t.strip() for t in text.split(",")):
        try:
            values.append(float(item))
        except ValueError:
            raise SelectionError(f"{flag}: {item!r} is not a number (expected e.g. "
                                 "0.05,0.1,0.2,0.3)") from None
    return check_fractions(values, flag=flag, text=text)


def check_fractions(values: Sequence[float], *, flag: str = "--fractions",
                    text: str | None = None) -> list[float]:
    """`values` as a list when each is in (0, 1), increasing, no repeats; else one line quoting
    `text` (the option as given; default: the values, comma-joined).

    >>> check_fractions((0.1, 0.2))
    [0.1, 0.2]
    """
    text = text if text is not None else ",".join(f"{v:g}" for v in values)
    for value in values:
        if not 0.0 < value < 1.0:  # NaN fails this too
            raise SelectionError(f"{flag}: {value:g} is outside (0, 1); fractions are shares of "
                                 "the training pairs, e.g. 0.1 for 10%")
    if not values:
        raise SelectionError(f"{flag} is empty (expected e.g. 0.05,0.1,0.2,0.3)")
    if len(set(values)) != len(values):
        raise SelectionError(f"{flag}: {text} repeats a fraction")
    if list(values) != sorted(values):
        raise SelectionError(f"{flag}: {text} is not increasing (write them smallest first)")
    return list(values)


def _arm_block(runs: list[RunRecord], description: str) -> ArmBlock:
    return {"description": description, "runs": runs, "summary": summarize_runs(runs)}


def _random_selections(pool: Sequence[PreferencePair], k: int, *, treatment: str,
                       seeds: Sequence[int]) -> dict[int, Selection]:
    """The size-matched control arm: per seed, its own k random pairs (`matched_random`)."""
    return {s: matched_random(pool, k, treatment=treatment, seed=s) for s in seeds}


def _dose_tags(rank_by: str, treatment: str, fraction: float) -> tuple[str, str]:
    return f"{rank_by}-{treatment}-{fraction:g}", f"random-{treatment}-{fraction:g}"


def dose_arms(pool: Sequence[PreferencePair], scores: Mapping[int, float], *, rank_by: str,
              treatment: str, fractions: Sequence[float], seeds: Sequence[int]) -> list[Arm]:
    """Per fraction, the detector's arm (its top k treated, the same pairs for every seed: seeds
    vary training, not the choice) and then the random arm: 2 × len(fractions) arms.

    `scores` maps example ids to the detector's score (higher = more suspect).
    """
    ranked = rank_pairs(pool, scores)
    arms = []
    for f in fractions:
        k = treated_count(f, len(pool))
        det_tag, rand_tag = _dose_tags(rank_by, treatment, f)
        arms.append(Arm("dose", det_tag, f, "detector",
                        {s: treat_positions(pool, ranked[:k], treatment=treatment) for s in seeds}))
        arms.append(Arm("dose", rand_tag, f, "random",
                        _random_selections(pool, k, treatment=treatment, seeds=seeds)))
    return arms


def _point(pool: Sequence[PreferencePair], ranked: list[int], fraction: float, *, rank_by: str,
           treatment: str, flagged_ids: set[int], runs: Mapping[ArmKey, list[RunRecord]]
           ) -> DosePoint:
    k = treated_count(fraction, len(pool))
    flagged_among = sum(pool[i].example_id in flagged_ids for i in ranked[:k])
    det_note = f"top {100 * fraction:g}% ({k} pairs) by {rank_by} {TREATED[treatment]}"
    rand_note = f"{k} random pairs {TREATED[treatment]} (control for top {100 * fraction:g}%)"
    det_tag, rand_tag = _dose_tags(rank_by, treatment, fraction)
    det = runs[("dose", det_tag, fraction, "detector")]
    rand = runs[("dose", rand_tag, fraction, "random")]
    comparison = compare_runs(f"top {100 * fraction:g}% by {rank_by}", det,
                              f"{k} random pairs", rand)
    return {"fraction": fraction, "count": k, "flagged_among": flagged_among,
            "detector": _arm_block(det, det_note), "random": _arm_block(rand, rand_note),
            "comparison": comparison}


def dose_response_block(pool: Sequence[PreferencePair], scores: Mapping[int, float], *,
                        rank_by: str, treatment: str, fractions: Sequence[float],
                        flagged_ids: set[int], runs: Mapping[ArmKey, list[RunRecord]],
                        baseline: str | None = None) -> DoseResponse:
    """One dose-response block from the runs of `dose_arms` (keyed by `Arm.key`).

    `flagged_ids` are the pairs the detector flagged (counted among the treated ones);
    `baseline` names the condition drawn as the fraction-0 point (usually "unfiltered").
    """
    ranked = rank_pairs(pool, scores)
    points = [_point(pool, ranked, f, rank_by=rank_by, treatment=treatment,
                     flagged_ids=flagged_ids, runs=runs) for f in fractions]
    curve = curve_test([p["detector"]["runs"] for p in points],
                       [p["random"]["runs"] for p in points])
    scored = sum(1 for p in pool if p.example_id is not None
                 and math.isfinite(scores.get(p.example_id, math.nan)))
    return {"rank_by": rank_by, "treatment": treatment, "fractions": list(fractions),
            "pool": len(pool), "scored": scored, "baseline": baseline,
            "ranking": RANKING_RULE,
            "points": points, "curve_test": curve,
            "verdict": dose_verdict(rank_by=rank_by, treatment=treatment, fractions=fractions,
                                    comparisons=[p["comparison"] for p in points], curve=curve)}


def _active(pool: Sequence[PreferencePair], flagged_by: Mapping[str, set[int]]
            ) -> tuple[set[int], dict[str, set[int]]]:
    """(the union of the flags in the pool, each detector's flags in the pool where it has any).
    Detectors that flagged nothing in the pool are left out: their clean set is the full data."""
    pool_ids = {p.example_id for p in pool if p.example_id is not None}
    union = set().union(*flagged_by.values()) & pool_ids if flagged_by else set()
    return union, {d: ids & pool_ids for d, ids in flagged_by.items() if ids & pool_ids}


def _reuses_conditions(flagged: set[int], union: set[int], treatment: str,
                       conditions: Collection[str]) -> bool:
    """The main clean/random runs are exactly this detector's ablation: it reuses them."""
    return (flagged == union and treatment == "remove" and f"clean-{treatment}" in conditions
            and "random" in conditions)


def _ablation_tags(detector: str) -> tuple[str, str]:
    return f"ablation-{detector}", f"ablation-{detector}-random"


def ablation_arms(pool: Sequence[PreferencePair], flagged_by: Mapping[str, set[int]], *,
                  treatment: str, seeds: Sequence[int], conditions: Collection[str]
                  ) -> list[Arm]:
    """Per detector with flags in the pool, its own flags treated and as many random pairs: two
    arms, none for a detector whose flags are the union the main conditions (names) act on."""
    union, active = _active(pool, flagged_by)
    arms = []
    for det, ids in active.items():
        if _reuses_conditions(ids, union, treatment, conditions):
            continue
        own_tag, random_tag = _ablation_tags(det)
        arms.append(Arm("ablation", own_tag, None, "clean",  # the clean selection of its flags
                        {s: select_training_pairs(pool, ids, mode="clean", treatment=treatment)
                         for s in seeds}))
        arms.append(Arm("ablation", random_tag, None, "random",
                        _random_selections(pool, len(ids), treatment=treatment, seeds=seeds)))
    return arms


def ablation_block(pool: Sequence[PreferencePair], flagged_by: Mapping[str, set[int]], *,
                   treatment: str, conditions: Mapping[str, ConditionBlock],
                   runs: Mapping[ArmKey, list[RunRecord]]) -> list[AblationEntry]:
    """Each detector's ablation entry from the runs of `ablation_arms` (or the main conditions'
    runs, for a detector whose flags are their union)."""
    union, active = _active(pool, flagged_by)
    verb = TREATMENT_VERBS[treatment]
    entries: list[AblationEntry] = []
    for det, ids in active.items():
        k = len(ids)
        treated, control = f"{verb} {det}'s {k} flags", f"{verb} {k} random pairs"
        reused = _reuses_conditions(ids, union, treatment, conditions)
        if reused:
            main_clean, main_random = conditions[f"clean-{treatment}"], conditions["random"]
            clean = _arm_block(main_clean["runs"], main_clean["description"])
            rand = _arm_block(main_random["runs"], main_random["description"])
        else:
            own_tag, random_tag = _ablation_tags(det)
            clean = _arm_block(runs[("ablation", own_tag, None, "clean")], treated)
            rand = _arm_block(runs[("ablation", random_tag, None, "random")], control)
        entries.append({"detector": det, "treatment": treatment, "flagged": k, "reused": reused,
                        "clean": clean, "random": rand,
                        "comparison": compare_runs(treated, clean["runs"], control,
                                                   rand["runs"])})
    return entries
