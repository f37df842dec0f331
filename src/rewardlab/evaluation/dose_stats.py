"""Dose-response statistics: does treating the pairs a detector ranks most suspect beat treating as
many pairs chosen at random, across the whole curve of fractions?

At every fraction f and seed s the two arms train on the same pool with the same count of pairs
treated (removed, flipped or label-smoothed), and every run is scored on the same test pairs. The
cells of the curve therefore share test pairs (and, per seed, the random arm's nested choices), so
they are not independent replicates: the whole-curve test averages each seed's per-pair
differences over the fractions and applies the comparisons' own test (`evaluation.crossed`) to
that S × P table, the test pair the unit and the seeds' variance included. Its 95% CI decides
the verdict's direction and its p enters Holm's correction, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired

import numpy as np

from rewardlab.evaluation.crossed import PairUnitTest, format_p, interval_of, pair_unit_test
from rewardlab.evaluation.stats import Comparison, run_correct

__all__ = ["CurveTest", "TREATMENT_VERBS", "TREATED", "curve_test", "curve_test_correct",
           "dose_verdict"]

# "removing the top 10%" / "flipping the top 10%" / "label-smoothing the top 10%"
TREATMENT_VERBS = {"remove": "removing", "flip": "flipping", "soft": "label-smoothing"}
# "top 10% removed" / "... flipped" / "... label-smoothed"
TREATED = {"remove": "removed", "flip": "flipped", "soft": "label-smoothed"}


class CurveTest(PairUnitTest):
    """The whole dose-response curve, detector arm vs random arm (`curve_test`): the pair-unit
    test of the fraction-averaged per-pair differences; its own fields plus the curve's shape."""

    cells: int  # (seed, fraction) pairs of runs that entered
    fractions: int
    per_seed: list[float]  # each seed's mean difference over the fractions
    p_holm: NotRequired[float]  # after Holm over every test of the report


CURVE_METHOD = ("pair-unit test of the per-pair differences averaged over the fractions: t over "
                "test pairs plus the seeds' variance (Clark's min F', Satterthwaite df)")


def curve_test_correct(detector: np.ndarray, random: np.ndarray) -> CurveTest:
    """The whole-curve test on (F, S, P) right/wrong arrays, row s of every fraction one seed.

    >>> det = np.ones((2, 2, 4), bool); rand = det.copy(); rand[:, :, 0] = False
    >>> out = curve_test_correct(det, rand)
    >>> out["diff"], out["cells"], out["per_seed"]
    (0.25, 4, [0.25, 0.25])
    """
    det = np.asarray(detector, dtype=float)  # (F, S, P)
    rand = np.asarray(random, dtype=float)
    test = pair_unit_test(det.mean(axis=0), rand.mean(axis=0))  # (S, P) fraction-averaged
    per_seed = (det - rand).mean(axis=(0, 2))  # (S,)
    return {"method": CURVE_METHOD, "diff": test["diff"], "ci": test["ci"], "se": test["se"],
            "df": test["df"], "p": test["p"], "pairs": test["pairs"], "seeds": test["seeds"],
            "seed_design": test["seed_design"], "var_pairs": test["var_pairs"],
            "var_seeds": test["var_seeds"], "seed_check_p": test["seed_check_p"],
            "cells": int(det.shape[0] * det.shape[1]), "fractions": int(det.shape[0]),
            "per_seed": [float(x) for x in per_seed]}


def _complete_cells(detector: Sequence[Sequence[Mapping[str, Any]]],
                    random: Sequence[Sequence[Mapping[str, Any]]]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(F, S, P) right/wrong of both arms over the seeds that ran at every fraction in both."""
    fractions = [(d, r) for d, r in zip(detector, random) if d and r]
    seeds = set.intersection(*({run["seed"] for run in d} & {run["seed"] for run in r}
                               for d, r in fractions)) if fractions else set()
    order = sorted(seeds)

    def table(runs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        by_seed = {run["seed"]: run for run in runs}
        return np.stack([run_correct(by_seed[s]) for s in order])  # (S, P)

    if not order:
        return np.zeros((0, 0, 0), bool), np.zeros((0, 0, 0), bool)
    return (np.stack([table(d) for d, _ in fractions]),
            np.stack([table(r) for _, r in fractions]))


def curve_test(detector: Sequence[Sequence[Mapping[str, Any]]],
               random: Sequence[Sequence[Mapping[str, Any]]]) -> CurveTest:
    """Test the detector curve against the random curve; runs given as [fraction][seed run]."""
    det, rand = _complete_cells(detector, random)
    if det.size == 0:
        return {"method": CURVE_METHOD, "diff": None, "ci": [None, None], "se": None, "df": None,
                "p": 1.0, "pairs": 0, "seeds": [0, 0], "seed_design": "none",
                "var_pairs": None, "var_seeds": None, "seed_check_p": None, "cells": 0,
                "fractions": 0, "per_seed": []}
    return curve_test_correct(det, rand)


def _span(fractions: Sequence[float]) -> str:
    """[0.05, 0.1, 0.3] → '5–30%'."""
    low, high = f"{100 * fractions[0]:g}", f"{100 * fractions[-1]:g}"
    return f"{low}%" if len(fractions) == 1 else f"{low}–{high}%"


def _excluding_zero(fractions: Sequence[float], comparisons: Sequence[Comparison]) -> str:
    """'; per fraction, the 95% CI excludes 0 at 10% and 20% (above)' or ''."""
    marks = []
    for f, comp in zip(fractions, comparisons):
        lo, hi = interval_of(comp)[1]
        if lo is not None and hi is not None and (lo > 0 or hi < 0):
            marks.append(f"{100 * f:g}% ({'above' if lo > 0 else 'below'})")
    if not marks:
        return ""
    return (f"; per fraction, the 95% CI excludes 0 at {', '.join(marks)}, each before "
            f"correcting for the report's other tests")


def _seed_count(curve: Mapping[str, Any]) -> int:
    seeds = curve.get("seeds") or 0
    return int(seeds[0]) if isinstance(seeds, list) else int(seeds)  # older files: an int


def dose_verdict(*, rank_by: str, treatment: str, fractions: Sequence[float],
                 comparisons: Sequence[Comparison], curve: CurveTest) -> str:
    """One sentence on the whole curve; "above"/"below" only when its 95% CI excludes 0."""
    verb = TREATMENT_VERBS.get(treatment, treatment)
    n_seeds = _seed_count(curve)
    lead = (f"Dose-response: {verb} the top {_span(fractions)} of training pairs {rank_by} ranks "
            f"most suspect vs {verb} as many random pairs ({curve['fractions']} fraction"
            f"{'s' if curve['fractions'] != 1 else ''} × {n_seeds} seed"
            f"{'s' if n_seeds != 1 else ''})")
    diff, (lo, hi) = curve["diff"], curve["ci"]
    if diff is None or lo is None or hi is None:
        return f"{lead}: not compared (no paired runs)."
    evidence = (f"95% CI {100 * lo:+.1f} to {100 * hi:+.1f}, {format_p(curve['p'])}, the "
                f"{curve['pairs']:,} test pairs the unit and the seeds' variance included"
                f"{_excluding_zero(fractions, comparisons)}")
    if lo <= 0 <= hi:
        return (f"{lead}: no detectable difference between the detector's curve and the random "
                f"curve ({100 * diff:+.1f} points on average, {evidence}).")
    where = "above" if lo > 0 else "below"
    return (f"{lead}: the detector's curve lies {where} the random curve by "
            f"{100 * abs(diff):.1f} points on average ({evidence}).")
