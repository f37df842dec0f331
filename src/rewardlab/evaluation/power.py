"""How many test pairs or seeds would resolve an observed accuracy difference (power analysis).

A comparison that finds "no detectable difference" still says something useful: how large an
experiment would have had to be. Two sources of noise, two answers:

- test pairs: a paired comparison of two models on the same pairs only learns from the pairs where
  they disagree. Connor's (1987) sample size for McNemar's test gives the number of test pairs at
  which a difference `delta = p10 - p01` with discordance `psi = p10 + p01` is found with 80%
  power at α = 0.05 (normal approximation, two-sided).
- seeds: on one fixed test set, the per-seed accuracy differences scatter from training noise;
  the paired t-test's power (noncentral t) gives the seeds at which their mean is resolved.

>>> mcnemar_sample_size(0.10, 0.05)
469
>>> paired_t_sample_size(0.5, 1.0)
34
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
from scipy import optimize
from scipy import stats as sps

__all__ = [
    "ALPHA",
    "POWER",
    "PowerEstimate",
    "mcnemar_sample_size",
    "mcnemar_power",
    "mcnemar_detectable_difference",
    "paired_t_power",
    "paired_t_sample_size",
    "power_estimate",
]

ALPHA = 0.05
POWER = 0.8
_MAX_SEEDS = 100_000  # beyond this a seed count is no plan; reported as None


class PowerEstimate(TypedDict):
    """What it would take to resolve one comparison's observed difference (`power_estimate`)."""

    alpha: float
    power: float
    diff: float | None  # observed acc(A) - acc(B), mean over seeds
    discordance: float | None  # share of test pairs the two models disagree on (mean over seeds)
    test_pairs: int  # test pairs in this experiment
    test_pairs_needed: int | None  # for one seed's McNemar test; None when diff = 0
    detectable_diff: float | None  # smallest |diff| resolved at this test-set size
    seeds: int
    seeds_needed: int | None  # paired t over seeds on this test set; None without seed spread


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


def power_estimate(a_correct: np.ndarray, b_correct: np.ndarray, *, alpha: float = ALPHA,
                   power: float = POWER) -> PowerEstimate:
    """Test pairs and seeds that would resolve acc(A) − acc(B), from (S, P) right/wrong arrays.

    Uses the observed per-seed discordance (p10, p01 averaged over the S seeds) for the test-pair
    count, and the spread of the S per-seed differences for the seed count (S ≥ 2).
    """
    a = np.atleast_2d(np.asarray(a_correct, dtype=bool))  # (S, P)
    b = np.atleast_2d(np.asarray(b_correct, dtype=bool))
    n_seeds, n_pairs = a.shape
    if n_pairs == 0:
        return {"alpha": alpha, "power": power, "diff": None, "discordance": None,
                "test_pairs": 0, "test_pairs_needed": None, "detectable_diff": None,
                "seeds": n_seeds, "seeds_needed": None}
    p10 = float((a & ~b).mean())  # over seeds and pairs = mean over seeds of each seed's share
    p01 = float((~a & b).mean())
    per_seed = a.mean(axis=1) - b.mean(axis=1)  # (S,)
    sd = float(per_seed.std(ddof=1)) if n_seeds > 1 else math.nan
    return {"alpha": alpha, "power": power, "diff": p10 - p01, "discordance": p10 + p01,
            "test_pairs": n_pairs,
            "test_pairs_needed": mcnemar_sample_size(p10, p01, alpha=alpha, power=power),
            "detectable_diff": mcnemar_detectable_difference(n_pairs, p10 + p01, alpha=alpha,
                                                             power=power),
            "seeds": n_seeds,
            "seeds_needed": paired_t_sample_size(p10 - p01, sd, alpha=alpha, power=power)}
