"""What an experiment can resolve: power for the comparisons' own test, in its own unit.

Every comparison is decided by `pair_unit_test` (`evaluation.crossed`): test pairs are the unit and
seed-to-seed variance is in the uncertainty. Its power therefore depends on both: more test pairs
shrink σ²_pair / P and the seed × pair noise, more seeds shrink σ²_seed / S and that noise, and
neither alone can remove the other's term. `power_estimate` reads the variance components off the
comparison's own S × P tables and answers, for the same test (Clark's min F′, Satterthwaite df):

- the smallest difference this experiment finds with 80% power at α = 0.05 (`detectable_diff`);
- the test pairs (at these seeds) and the seeds (at these test pairs) that would find the observed
  difference (None when the other term alone is too large: then only the other helps).

The test's variance estimate and its Satterthwaite df are random (very much so with 3 seeds), so
`pair_unit_power` averages over draws of the mean squares from their χ² laws rather than plugging
in one df; tests/evaluation/test_calibration_sim.py checks the stated power against simulated experiments.

McNemar's sample size (Connor 1987) and the paired t-test's power (noncentral t, as G*Power) stay
for the per-seed detail and as building blocks:

>>> mcnemar_sample_size(0.10, 0.05)
469
>>> paired_t_sample_size(0.5, 1.0)
34
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypedDict

import numpy as np
from scipy import optimize
from scipy import stats as sps

from rewardlab.evaluation.crossed import METHOD, SeedGroup, VarianceParts, variance_parts

__all__ = [
    "ALPHA",
    "POWER",
    "PowerEstimate",
    "mcnemar_sample_size",
    "mcnemar_power",
    "mcnemar_detectable_difference",
    "paired_t_power",
    "paired_t_sample_size",
    "pair_unit_power",
    "stated_power",
    "power_estimate",
]

ALPHA = 0.05
POWER = 0.8
_MAX_SEEDS = 100_000  # beyond this a seed count is no plan; reported as None
_MAX_PAIRS = 100_000_000
_DRAWS = 4000  # draws of the test's mean squares per power value: Monte Carlo s.e. < 0.8 points


class PowerEstimate(TypedDict):
    """What this experiment can resolve with the comparison's own test (`power_estimate`)."""

    alpha: float
    power: float
    method: str  # the test the power is for (`evaluation.crossed.METHOD`)
    diff: float | None  # observed acc(A) - acc(B), mean over seeds and pairs
    discordance: float | None  # share of test pairs one seed's two models disagree on (mean over
    # seeds); None when the seeds are not paired
    test_pairs: int  # test pairs in this experiment
    test_pairs_needed: int | None  # at these seeds, for the observed diff; None when diff = 0 or
    # the seeds' variance alone keeps it out of reach
    detectable_diff: float | None  # smallest |diff| found with `power` at this size
    seeds: int  # seeds per condition (the smaller side)
    seeds_needed: int | None  # at these test pairs; None when diff = 0, with one seed (no seed
    # variance estimated), or out of reach

def _z(q: float) -> float:
    return float(sps.norm.ppf(q))


def mcnemar_sample_size(p10: float, p01: float, *, alpha: float = ALPHA,
                        power: float = POWER) -> int | None:
    """Test pairs for McNemar's test to find p10 ≠ p01 (Connor 1987), rounded up; None if equal.

    n = (z_{1-α/2} √ψ + z_{power} √(ψ − δ²))² / δ²  with ψ = p10 + p01, δ = p10 − p01.
    """
    psi, delta = p10 + p01, p10 - p01
    if delta == 0 or psi <= 0:
        return None
    root = _z(1 - alpha / 2) * math.sqrt(psi) + _z(power) * math.sqrt(max(psi - delta**2, 0.0))
    return math.ceil(root**2 / delta**2 - 1e-9)  # the tolerance keeps an exact integer exact


def mcnemar_power(n: int, p10: float, p01: float, *, alpha: float = ALPHA) -> float:
    """Approximate power of McNemar's test on `n` pairs (the inverse of `mcnemar_sample_size`)."""
    psi, delta = p10 + p01, abs(p10 - p01)
    spread = math.sqrt(max(psi - delta**2, 1e-300))
    return float(sps.norm.cdf((math.sqrt(n) * delta - _z(1 - alpha / 2) * math.sqrt(psi)) / spread))


def mcnemar_detectable_difference(n: int, psi: float, *, alpha: float = ALPHA,
                                  power: float = POWER) -> float | None:
    """Smallest |p10 − p01| McNemar's test finds with `power` on `n` pairs at discordance `psi`.

    None when even the largest difference the discordance allows (|δ| = ψ) is not found.
    """
    if n < 1 or psi <= 0:
        return None

    def shortfall(delta: float) -> float:
        return mcnemar_power(n, (psi + delta) / 2, (psi - delta) / 2, alpha=alpha) - power

    if shortfall(psi) < 0:
        return None
    return float(optimize.brentq(shortfall, 1e-12, psi, xtol=1e-10))


def paired_t_power(n: int, effect: float, *, alpha: float = ALPHA) -> float:
    """Power of the two-sided one-sample (paired) t-test on `n` differences, effect = mean / sd."""
    if n < 2:
        return 0.0
    df, crit = n - 1, float(sps.t.ppf(1 - alpha / 2, n - 1))
    nc = effect * math.sqrt(n)
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


def paired_t_sample_size(mean: float, sd: float, *, alpha: float = ALPHA,
                         power: float = POWER) -> int | None:
    """Smallest n ≥ 2 at which the paired t-test reaches `power` (noncentral t, as G*Power).

    None when the mean is 0 or the spread is 0 / unknown, or when it would take over 100,000.
    """
    if mean == 0 or not sd > 0 or not math.isfinite(sd):
        return None
    effect = abs(mean) / sd
    # the normal approximation brackets the answer; the t-test needs a few more
    guess = max(2, math.ceil(((_z(1 - alpha / 2) + _z(power)) / effect) ** 2))
    if guess > _MAX_SEEDS:
        return None
    n = guess
    while paired_t_power(n, effect, alpha=alpha) < power:
        n += 1
    while n > 2 and paired_t_power(n - 1, effect, alpha=alpha) >= power:
        n -= 1
    return n


def _at_design(parts: VarianceParts, pairs: int, seeds: int | None = None) -> VarianceParts:
    """The expected variance parts of the same comparison run with `pairs` test pairs and `seeds`
    seeds per side (None: as run): σ²_pair, σ²_seed and σ²_res are estimated once, then rescaled.

    A seed scatter below the pair noise counts as no seed variance (as the test counts it).
    """
    per_pair = max(0.0, parts.pair_var - sum(g.ms_res / g.seeds for g in parts.groups))  # σ²_pair
    groups = tuple(SeedGroup(seeds=seeds or g.seeds, ms_res=g.ms_res,
                             ms_seed=g.ms_res + pairs * max(0.0, g.ms_seed - g.ms_res) / parts.pairs)
                   for g in parts.groups)
    pair_var = per_pair + sum(g.ms_res / g.seeds for g in groups)
    return VarianceParts(diff=parts.diff, pairs=pairs, pair_var=pair_var, groups=groups)


def pair_unit_power(truth: VarianceParts, diff: float, *, alpha: float = ALPHA,
                    draws: int = _DRAWS, seed: int = 0) -> float:
    """Power of `pair_unit_test` when the true difference is `diff` and the variance parts are
    `truth` (expected mean squares).

    The test's estimated variance and its Satterthwaite df are random too (few seeds: very), so
    power is averaged over `draws` draws of the mean squares from their scaled χ² laws (normal
    theory); for each draw the chance that the normal estimate of the difference clears the
    critical value is exact.
    """
    rng = np.random.default_rng(seed)  # fixed: the same draws for every diff (smooth in diff)
    p = truth.pairs
    if p < 2:
        return 0.0
    var = truth.var_pairs * rng.chisquare(p - 1, draws) / (p - 1)  # (draws,)
    den = var**2 / (p - 1)
    for g in truth.groups:
        term = truth.seed_term(g) * rng.chisquare(g.seeds - 1, draws) / (g.seeds - 1)
        var = var + term
        den = den + term**2 / (g.seeds - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(den > 0, var**2 / den, np.inf)
    crit = sps.t.ppf(1 - alpha / 2, df) * np.sqrt(var)  # (draws,) |diff| the test needs
    sd = math.sqrt(truth.expected_variance)  # the true spread of the estimated difference
    if sd == 0:
        return float(np.mean(abs(diff) > crit))
    return float(np.mean(sps.norm.cdf((diff - crit) / sd) + sps.norm.cdf((-diff - crit) / sd)))


def _detectable(truth: VarianceParts, *, alpha: float, power: float) -> float | None:
    """Smallest |diff| found with `power` (None when even a difference of 1 is not)."""
    if pair_unit_power(truth, 1.0, alpha=alpha) < power:
        return None
    return float(optimize.brentq(lambda d: pair_unit_power(truth, d, alpha=alpha) - power,
                                 0.0, 1.0, xtol=1e-6))


def _smallest(reaches: Callable[[int], bool], low: int, high: int) -> int | None:
    """Smallest n in [low, high] with reaches(n) (taken as monotone), else None."""
    if not reaches(high):
        return None
    top = low
    while not reaches(top):  # doubling keeps the search to ~log2(high) evaluations
        low, top = top + 1, min(2 * top, high)
    while low < top:
        mid = (low + top) // 2
        low, top = (low, mid) if reaches(mid) else (mid + 1, top)
    return top


def power_estimate(a_correct: np.ndarray, b_correct: np.ndarray, *, paired: bool = True,
                   alpha: float = ALPHA, power: float = POWER) -> PowerEstimate:
    """What this experiment can resolve, for the comparison's own test (`pair_unit_test`):
    the smallest difference found with `power` at this size, and the test pairs (these seeds) or
    seeds (these test pairs) that would find the observed difference. (S, P) right/wrong arrays.
    """
    a = np.atleast_2d(np.asarray(a_correct, dtype=bool))  # (S_A, P)
    b = np.atleast_2d(np.asarray(b_correct, dtype=bool))  # (S_B, P)
    parts = variance_parts(a, b, paired=paired)
    n_pairs, n_seeds = parts.pairs, min(a.shape[0], b.shape[0])
    out: PowerEstimate = {"alpha": alpha, "power": power, "method": METHOD,
                          "diff": None, "discordance": None, "test_pairs": n_pairs,
                          "test_pairs_needed": None, "detectable_diff": None, "seeds": n_seeds,
                          "seeds_needed": None}
    if n_pairs < 2:
        return out
    truth = _at_design(parts, n_pairs)
    diff = parts.diff
    out["diff"] = diff
    if paired:  # the share of test pairs one seed's two models disagree on, mean over seeds
        out["discordance"] = float((a != b).mean())
    out["detectable_diff"] = _detectable(truth, alpha=alpha, power=power)
    if diff == 0:
        return out

    def found(design: VarianceParts) -> bool:
        return pair_unit_power(design, diff, alpha=alpha) >= power

    out["test_pairs_needed"] = _smallest(
        lambda n: found(_at_design(parts, n)), 2, _MAX_PAIRS)
    if parts.groups:  # seed variance was estimated: more seeds can be planned
        out["seeds_needed"] = _smallest(
            lambda s: found(_at_design(parts, n_pairs, s)), 2, _MAX_SEEDS)
    return out


def stated_power(a_correct: np.ndarray, b_correct: np.ndarray, diff: float, *,
                 paired: bool = True, alpha: float = ALPHA) -> float:
    """The power an experiment's own (S, P) tables state for a true difference `diff`: its
    variance parts at its own size through `pair_unit_power` (`detectable_diff` inverts it)."""
    parts = variance_parts(a_correct, b_correct, paired=paired)
    if parts.pairs < 2:
        return 0.0
    return pair_unit_power(_at_design(parts, parts.pairs), diff, alpha=alpha)
