"""Tests kept for reference, not used for verdicts: each one misses a source of variance.

- `cmh_test` / `pooled_paired_test`: Cochran–Mantel–Haenszel over (seed, pair) strata, McNemar's
  test on the disagreements summed over seeds. It takes each (seed, pair) cell as an independent
  coin, but seeds share the test pairs (and what a training set does to each pair), so S seeds
  count a pair about S times: under no effect it rejects far more often than α
  (tests/evaluation/test_calibration_sim.py::test_the_old_cmh_over_seeds_overstates). rewardlab ≤ 0.2 used it
  for every comparison; the report reads such older results.json files.
- `paired_bootstrap_diff`: resamples test pairs with the seeds averaged; right for the test pairs,
  blind to the seeds' variance.
- `sign_flip_test`: a permutation test over paired differences; over dose-response cells that share
  the test pairs it treats dependent cells as exchangeable.

The comparisons' test is `evaluation.crossed.pair_unit_test` (docs/statistics.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

import numpy as np
from scipy import stats as sps

__all__ = ["BootstrapDiff", "CMHResult", "PooledTest", "SignFlipTest", "paired_bootstrap_diff",
           "cmh_test", "pooled_paired_test", "sign_flip_test"]

_EXACT_SIGN_FLIPS = 16  # up to 2**16 sign patterns are enumerated; more are sampled
_BOOT_CHUNK = 500  # bootstrap replicates per batch: bounds memory at 500 x n_pairs indices


class BootstrapDiff(TypedDict):
    """acc(A) - acc(B) with its 95% CI; None when there were no test pairs."""

    diff: float | None
    ci: list[float | None]  # [lo, hi]
    n_boot: int


class CMHResult(TypedDict):
    """Cochran–Mantel–Haenszel test of a common odds ratio of 1 over K 2×2 tables (`cmh_test`)."""

    statistic: float  # MH chi-square, 1 df
    p: float
    odds_ratio: float | None  # Mantel-Haenszel common odds ratio; None when infinite or 0/0
    odds_ratio_ci: list[float | None]  # 95%, Robins-Breslow-Greenland variance
    strata: int  # tables that carried information (n ≥ 2)


class PooledTest(CMHResult):
    """`pooled_paired_test`: the CMH test over the seeds of two conditions, on per-pair correctness.

    Every test pair of every seed is one matched stratum, so the statistic is McNemar's on the
    discordant pairs summed over seeds, (|b − c| − 1)² / (b + c).
    """

    method: str
    replicates: int  # rows pooled: seeds (a dose-response curve: seed × fraction cells)
    b: int  # (replicate, pair) cells only A got right, summed over replicates
    c: int  # only B got right


class SignFlipTest(TypedDict):
    """`sign_flip_test`: is the mean of paired differences 0? Exact or Monte Carlo permutation."""

    n: int  # differences
    mean: float | None
    p: float
    exact: bool  # every sign pattern enumerated (else `n_perm` random ones)
    n_perm: int


def _per_pair_accuracy(correct: np.ndarray) -> np.ndarray:
    """(P,) mean correctness per test pair, averaging over seeds when given (S, P)."""
    arr = np.asarray(correct, dtype=float)
    return arr.mean(axis=0) if arr.ndim == 2 else arr


def paired_bootstrap_diff(a_correct: np.ndarray, b_correct: np.ndarray, *, n_boot: int = 10_000,
                          seed: int = 0) -> BootstrapDiff:
    """Accuracy difference acc(A) - acc(B) with a 95% percentile CI from resampling test pairs.

    Inputs are (P,) or (S, P) right/wrong arrays (S seeds x P pairs). With seeds, every replicate
    resamples the same pair indices for all seeds and averages over them, so the CI reflects which
    test pairs we happened to have while pooling the seeds' evidence.

    >>> paired_bootstrap_diff(np.array([1, 1, 0, 1]), np.array([1, 1, 0, 1]), n_boot=100)
    {'diff': 0.0, 'ci': [0.0, 0.0], 'n_boot': 100}
    """
    # Averaging per pair first is exact: the same indices are drawn for every seed.
    d = _per_pair_accuracy(a_correct) - _per_pair_accuracy(b_correct)  # (P,)
    if d.size == 0:
        return {"diff": None, "ci": [None, None], "n_boot": n_boot}
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_CHUNK):
        size = min(_BOOT_CHUNK, n_boot - start)
        idx = rng.integers(0, d.size, size=(size, d.size))  # (size, P) resampled pair indices
        means[start:start + size] = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"diff": float(d.mean()), "ci": [float(lo), float(hi)], "n_boot": n_boot}


def cmh_test(tables: np.ndarray, *, correction: bool = True, level: float = 0.95) -> CMHResult:
    """Cochran–Mantel–Haenszel test on K 2×2 tables `[[a, b], [c, d]]` (shape (K, 2, 2)).

    The statistic, its continuity correction and the Robins-Breslow-Greenland interval of the
    Mantel-Haenszel odds ratio are R's `mantelhaen.test` (tests/evaluation/test_stats_pooled.py checks
    R's UCBAdmissions numbers). Tables with fewer than 2 observations carry no information.
    """
    t = np.asarray(tables, dtype=float).reshape(-1, 2, 2)
    n = t.sum(axis=(1, 2))
    t, n = t[n >= 2], n[n >= 2]
    a, b, c, d = t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1]
    row1, row2, col1, col2 = a + b, c + d, a + c, b + d
    delta = float(np.sum(a - row1 * col1 / n))
    variance = float(np.sum(row1 * row2 * col1 * col2 / (n**2 * (n - 1))))
    yates = 0.5 if correction and abs(delta) >= 0.5 else 0.0
    stat = (abs(delta) - yates) ** 2 / variance if variance > 0 else 0.0
    p = float(sps.chi2.sf(stat, df=1)) if variance > 0 else 1.0
    r, s = a * d / n, b * c / n  # (K,) the MH weights
    big_r, big_s = float(r.sum()), float(s.sum())
    if big_r == 0 or big_s == 0:  # 0 or infinite (not JSON), or 0/0: no finite estimate
        ratio = 0.0 if big_r == 0 and big_s > 0 else None
        return {"statistic": float(stat), "p": p, "odds_ratio": ratio,
                "odds_ratio_ci": [None, None], "strata": int(n.size)}
    pp, qq = (a + d) / n, (b + c) / n
    var_log = (float(np.sum(pp * r)) / (2 * big_r**2)
               + float(np.sum(pp * s + qq * r)) / (2 * big_r * big_s)
               + float(np.sum(qq * s)) / (2 * big_s**2))
    ratio = big_r / big_s
    half = float(sps.norm.ppf(0.5 + level / 2)) * math.sqrt(var_log)
    return {"statistic": float(stat), "p": p, "odds_ratio": ratio,
            "odds_ratio_ci": [ratio * math.exp(-half), ratio * math.exp(half)],
            "strata": int(n.size)}


def pooled_paired_test(a_correct: np.ndarray, b_correct: np.ndarray, *,
                       over: str = "seeds") -> PooledTest:
    """CMH test stratified by seed and test pair on (S, P) right/wrong arrays of A and B.

    `over` names what the S rows are, for the record ("seeds", "seed × fraction cells").

    The (seed, pair) strata are matched pairs, so this is McNemar's test on the discordant pairs
    summed over seeds: it pools the seeds' evidence while keeping every comparison paired. It
    treats each (seed, pair) cell as its own coin flip under "no difference"; the paired
    bootstrap, which resamples test pairs for all seeds at once, is the more cautious interval.
    The odds ratio b / c is how many more pairs only A got right than only B got right.
    """
    a = np.atleast_2d(np.asarray(a_correct, dtype=bool)).reshape(-1)  # (S·P,)
    b = np.atleast_2d(np.asarray(b_correct, dtype=bool)).reshape(-1)
    rows = int(np.atleast_2d(np.asarray(a_correct)).shape[0])
    tables = np.stack([np.stack([a, ~a], axis=1), np.stack([b, ~b], axis=1)], axis=1)  # (S·P, 2, 2)
    return {"method": f"Cochran-Mantel-Haenszel over {over}, each test pair a matched stratum",
            "replicates": rows, "b": int((a & ~b).sum()), "c": int((~a & b).sum()),
            **cmh_test(tables.astype(float))}


def sign_flip_test(diffs: Sequence[float] | np.ndarray, *, n_perm: int = 20_000,
                   seed: int = 0) -> SignFlipTest:
    """Two-sided sign-flip permutation test of mean(diffs) = 0 for paired differences.

    Under "no difference" each paired difference is as likely to have either sign, so its sign is
    flipped at random and the observed |mean| is ranked among the flipped ones. Up to 16
    differences every one of the 2**n patterns is enumerated (exact p); beyond that `n_perm`
    random patterns give p = (1 + hits) / (1 + n_perm).

    >>> sign_flip_test([1.0, 2.0, 3.0])["p"]  # only +++ and --- reach |mean| 2: 2 of 8
    0.25
    """
    d = np.asarray(diffs, dtype=float).reshape(-1)  # (n,)
    if d.size == 0:
        return {"n": 0, "mean": None, "p": 1.0, "exact": True, "n_perm": 0}
    observed = abs(float(d.mean())) - 1e-12  # ties with the observed value count as hits
    if d.size <= _EXACT_SIGN_FLIPS:
        codes = np.arange(2**d.size)[:, None]  # (2^n, 1)
        signs = 1.0 - 2.0 * ((codes >> np.arange(d.size)) & 1)  # (2^n, n) every ± pattern
        hits = int((np.abs(signs @ d) / d.size >= observed).sum())
        return {"n": int(d.size), "mean": float(d.mean()), "p": hits / signs.shape[0],
                "exact": True, "n_perm": int(signs.shape[0])}
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_perm, d.size))  # (n_perm, n)
    hits = int((np.abs(signs @ d) / d.size >= observed).sum())
    return {"n": int(d.size), "mean": float(d.mean()), "p": (1 + hits) / (1 + n_perm),
            "exact": False, "n_perm": n_perm}


