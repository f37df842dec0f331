"""Dose-response statistics: does treating the pairs a detector ranks most suspect beat treating as
many pairs chosen at random, across the whole curve of fractions?

At every fraction f and seed s the two arms train on the same pool with the same count of pairs
treated (removed, flipped or label-smoothed), so each (seed, fraction) cell gives one paired
accuracy difference d = acc(detector) − acc(random) on the shared test pairs. The whole-curve test:

- p: a sign-flip permutation test of mean(d) = 0 over the S × F cells (exact up to 16 cells). It
  treats the cells as exchangeable; cells that share a seed or the test pairs are not independent,
  so read p together with
- the CI: a paired bootstrap over test pairs that resamples the same pairs for every cell at once
  (so the test-set luck they share is in it), which also decides the verdict's direction;
- pooled: the CMH test over (seed, fraction, test pair) strata, reported alongside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

import numpy as np
from scipy import stats as sps

from rewardlab.evaluation.power import ALPHA
from rewardlab.evaluation.stats import (
    Comparison,
    PooledTest,
    format_p,
    paired_bootstrap_diff,
    pooled_paired_test,
    run_correct,
    sign_flip_test,
)

__all__ = ["CurveTest", "TREATMENT_VERBS", "TREATED", "curve_test", "dose_verdict"]

# "removing the top 10%" / "flipping the top 10%" / "label-smoothing the top 10%"
TREATMENT_VERBS = {"remove": "removing", "flip": "flipping", "soft": "label-smoothing"}
# "top 10% removed" / "... flipped" / "... label-smoothed"
TREATED = {"remove": "removed", "flip": "flipped", "soft": "label-smoothed"}


class CurveTest(TypedDict):
    """The whole dose-response curve, detector arm vs random arm (`curve_test`)."""

    method: str
    cells: int  # (seed, fraction) pairs of runs
    seeds: int
    fractions: int
    diff: float | None  # mean over cells of acc(detector) - acc(random)
    ci: list[float | None]  # paired bootstrap over test pairs, all cells resampled together
    n_boot: int
    p: float  # sign-flip permutation test over the cells
    exact: bool
    p_t: float | None  # one-sample t over the cells, for reference (None with < 2 cells)
    per_seed: list[float]  # each seed's mean difference over the fractions
    pooled: PooledTest  # CMH over (seed, fraction, test pair) strata
    p_holm: NotRequired[float]  # after Holm over every test of the report


METHOD = ("sign-flip permutation test of the mean paired accuracy difference over the seed × "
          "fraction cells; 95% CI: paired bootstrap over test pairs, every cell resampled together")


def _paired_cells(detector: Sequence[Sequence[Mapping[str, Any]]],
                  random: Sequence[Sequence[Mapping[str, Any]]]
                  ) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(seed, detector correct, random correct) for every fraction × seed both arms ran."""
    cells = []
    for det_runs, rand_runs in zip(detector, random):
        by_seed = {r["seed"]: r for r in rand_runs}
        cells += [(int(r["seed"]), run_correct(r), run_correct(by_seed[r["seed"]]))
                  for r in det_runs if r["seed"] in by_seed]
    return cells


def curve_test(detector: Sequence[Sequence[Mapping[str, Any]]],
               random: Sequence[Sequence[Mapping[str, Any]]], *, n_boot: int = 10_000,
               seed: int = 0) -> CurveTest:
    """Test the detector curve against the random curve; runs given as [fraction][seed run]."""
    cells = _paired_cells(detector, random)
    a = np.stack([c[1] for c in cells]) if cells else np.zeros((0, 0), bool)  # (C, P)
    b = np.stack([c[2] for c in cells]) if cells else np.zeros((0, 0), bool)
    diffs = a.mean(axis=1) - b.mean(axis=1) if cells else np.zeros(0)  # (C,)
    boot = paired_bootstrap_diff(a, b, n_boot=n_boot, seed=seed) if cells else \
        {"diff": None, "ci": [None, None], "n_boot": n_boot}
    flips = sign_flip_test(diffs, seed=seed)
    p_t = (float(sps.ttest_1samp(diffs, 0.0).pvalue)
           if diffs.size > 1 and np.ptp(diffs) > 0 else None)
    seeds = sorted({s for s, _, _ in cells})
    per_seed = [float(np.mean([d for (s, _, _), d in zip(cells, diffs) if s == k])) for k in seeds]
    return {"method": METHOD, "cells": len(cells), "seeds": len(seeds),
            "fractions": sum(1 for runs in detector if runs), "diff": boot["diff"],
            "ci": boot["ci"], "n_boot": n_boot, "p": flips["p"], "exact": flips["exact"],
            "p_t": p_t, "per_seed": per_seed,
            "pooled": pooled_paired_test(a, b, over="seed × fraction cells")}


def _span(fractions: Sequence[float]) -> str:
    """[0.05, 0.1, 0.3] → '5–30%'."""
    low, high = f"{100 * fractions[0]:g}", f"{100 * fractions[-1]:g}"
    return f"{low}%" if len(fractions) == 1 else f"{low}–{high}%"


def _excluding_zero(fractions: Sequence[float], comparisons: Sequence[Comparison]) -> str:
    """'; per fraction, the 95% CI excludes 0 at 10% and 20% (above)' or ''."""
    marks = []
    for f, comp in zip(fractions, comparisons):
        lo, hi = comp["bootstrap"]["ci"]
        if lo is not None and hi is not None and (lo > 0 or hi < 0):
            marks.append(f"{100 * f:g}% ({'above' if lo > 0 else 'below'})")
    if not marks:
        return ""
    return f"; per fraction, the 95% CI excludes 0 at {', '.join(marks)}"


def dose_verdict(*, rank_by: str, treatment: str, fractions: Sequence[float],
                 comparisons: Sequence[Comparison], curve: CurveTest) -> str:
    """One sentence on the whole curve; "above"/"below" only when its 95% CI excludes 0."""
    verb = TREATMENT_VERBS.get(treatment, treatment)
    lead = (f"Dose-response: {verb} the top {_span(fractions)} of training pairs {rank_by} ranks "
            f"most suspect vs {verb} as many random pairs ({curve['fractions']} fraction"
            f"{'s' if curve['fractions'] != 1 else ''} × {curve['seeds']} seed"
            f"{'s' if curve['seeds'] != 1 else ''})")
    diff, (lo, hi) = curve["diff"], curve["ci"]
    if diff is None or lo is None or hi is None:
        return f"{lead}: not compared (no paired runs)."
    limit = ""
    if curve["exact"] and curve["cells"] and 2 / 2 ** curve["cells"] >= ALPHA:
        limit = (f"; with only {curve['cells']} paired differences the permutation test cannot "
                 f"reach p < {ALPHA}")
    evidence = (f"95% CI {100 * lo:+.1f} to {100 * hi:+.1f}; sign-flip permutation "
                f"{format_p(curve['p'])} over {curve['cells']} paired differences; pooled CMH "
                f"{format_p(curve['pooled']['p'])}{limit}{_excluding_zero(fractions, comparisons)}")
    if lo <= 0 <= hi:
        caveat = (f"; the permutation p < {ALPHA} takes the cells as independent, though they "
                  "share the test pairs; the bootstrap CI, which does not, decides"
                  if curve["p"] < ALPHA else "")
        return (f"{lead}: no detectable difference between the detector's curve and the random "
                f"curve ({100 * diff:+.1f} points on average, {evidence}{caveat}).")
    where = "above" if lo > 0 else "below"
    return (f"{lead}: the detector's curve lies {where} the random curve by "
            f"{100 * abs(diff):.1f} points on average ({evidence}).")
