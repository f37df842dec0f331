"""Paired statistics for "is condition A's reward model better than B's?", and the verdicts.

All conditions of one experiment are scored on the same test pairs in the same order, so the tests
are *paired*: exact McNemar per seed (only pairs where the two models disagree carry information),
a Cochran–Mantel–Haenszel test pooling the seeds (each test pair of each seed one matched stratum),
and a paired bootstrap over test pairs pooled across seeds. A verdict only says "better" or "worse"
when the bootstrap 95% CI of the accuracy difference excludes zero, and says "no detectable
difference" otherwise. Curves of differences (dose-response) get a sign-flip permutation test;
many tests get Holm's correction (`holm_adjust`). Power: `rewardlab.evaluation.power`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, NotRequired, TypedDict

import numpy as np
from scipy import stats as sps

from rewardlab.evaluation.metrics import bootstrap_accuracy_ci, wilson_interval
from rewardlab.evaluation.power import ALPHA, PowerEstimate, power_estimate
from rewardlab.evaluation.verdict import overall_verdict

__all__ = [
    "ALPHA",
    "McNemarResult",
    "SeedMcNemar",
    "BootstrapDiff",
    "CMHResult",
    "PooledTest",
    "SignFlipTest",
    "Multiplicity",
    "RunSummary",
    "Comparison",
    "NotebookRow",
    "mcnemar_exact",
    "paired_bootstrap_diff",
    "cmh_test",
    "pooled_paired_test",
    "sign_flip_test",
    "holm_adjust",
    "correct_for_multiplicity",
    "mean_ci",
    "verdict_sentence",
    "format_p",
    "run_correct",
    "summarize_runs",
    "compare_runs",
    "overall_verdict",
    "notebook_table",
]

_EXACT_SIGN_FLIPS = 16  # up to 2**16 sign patterns are enumerated; more are sampled
_BOOT_CHUNK = 500  # bootstrap replicates per batch: bounds memory at 500 x n_pairs indices


class McNemarResult(TypedDict):
    b: int  # pairs A got right and B wrong
    c: int  # pairs B got right and A wrong
    n_discordant: int
    p: float


class SeedMcNemar(McNemarResult):
    seed: int


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


class Multiplicity(TypedDict):
    """Holm's correction over every test a report makes (`correct_for_multiplicity`)."""

    method: str
    alpha: float
    tests: int
    significant: int  # p < alpha before the correction
    significant_holm: int  # after it
    labels: list[str]  # one per test, in the order of p and p_holm
    p: list[float]
    p_holm: list[float]


class RunSummary(TypedDict):
    """A condition's "summary" block (`summarize_runs`); None where no run had the value."""

    accuracy_mean: float | None
    accuracy_std: float | None
    accuracy_ci: list[float | None]  # [lo, hi]
    accuracy_ci_kind: str  # "bootstrap over test pairs, seeds averaged" (or, without per-pair
    # rewards, "Wilson over test pairs (1 seed)" / "t over seeds")
    n_seeds: int
    reward_gap_mean: float | None
    nll_mean: float | None
    ece_mean: float | None
    train_pairs: int | None


class Comparison(TypedDict):
    """One "comparisons" entry (`compare_runs`)."""

    treated: str
    baseline: str
    mcnemar: list[SeedMcNemar]  # one per seed both conditions ran
    bootstrap: BootstrapDiff
    pooled: NotRequired[PooledTest]  # CMH over the seeds (results.json since 0.2)
    power: NotRequired[PowerEstimate]  # test pairs / seeds that would resolve the difference
    p_holm: NotRequired[float]  # pooled p after Holm's correction over all tests of the report
    verdict: str


class NotebookRow(TypedDict):
    """One row of the original notebook's table (`notebook_table`): means over seeds."""

    condition: str
    training_examples: float | None
    train_accuracy: float | None
    train_loss: float | None
    test_accuracy: float | None
    correct: float | None
    total: float | None
    avg_reward_gap: float | None


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemarResult:
    """Exact two-sided McNemar test on paired right/wrong vectors.

    `b` counts pairs A got right and B got wrong, `c` the reverse; under "no difference" each
    discordant pair is a fair coin, so p is a two-sided binomial test of b out of b + c.

    >>> mcnemar_exact(np.array([1, 1, 1, 0]), np.array([0, 0, 1, 0]))
    {'b': 2, 'c': 0, 'n_discordant': 2, 'p': 0.5}
    """
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    n_b, n_c = int((a & ~b).sum()), int((~a & b).sum())
    n = n_b + n_c
    p = 1.0 if n == 0 else float(sps.binomtest(n_b, n, 0.5, alternative="two-sided").pvalue)
    return {"b": n_b, "c": n_c, "n_discordant": n, "p": min(1.0, p)}


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
    Mantel-Haenszel odds ratio are R's `mantelhaen.test` (tests/test_stats_pooled.py checks
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


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): controls the chance of any
    false "significant" among all the tests at α.

    >>> holm_adjust([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = p.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])  # (m,) (m - rank) * p in rank order
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return [round(float(x), 15) for x in adjusted]


def mean_ci(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sample std, lo, hi) with a Student-t interval; one value gives std 0 and lo = hi.

    >>> [round(x, 3) for x in mean_ci([1.0, 2.0, 3.0])]
    [2.0, 1.0, -0.484, 4.484]
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    if x.size == 1:
        return mean, 0.0, mean, mean
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, df=x.size - 1)) * std / math.sqrt(x.size)
    return mean, std, mean - half, mean + half


def _points(x: float) -> str:
    return f"{100 * x:.1f}"


def _mcnemar_phrase(p_values: Sequence[float]) -> str:
    k = sum(p < ALPHA for p in p_values)
    return f"McNemar p < {ALPHA} in {k} of {len(p_values)} seed{'s' if len(p_values) != 1 else ''}"


def verdict_sentence(treated: str, baseline: str, *, diff: float | None,
                     ci: Sequence[float | None], p_values: Sequence[float],
                     pooled_p: float | None = None) -> str:
    """One sentence that never overstates: "better"/"worse" only when the 95% CI excludes 0, else
    "no detectable difference"; always the effect size with its CI. `pooled_p` (the CMH test over
    several seeds) is quoted when given.

    >>> print(verdict_sentence("A", "B", diff=0.03, ci=(0.01, 0.05), p_values=[0.01, 0.2]))
    A is better than B by 3.0 points (95% CI +1.0 to +5.0; McNemar p < 0.05 in 1 of 2 seeds).
    """
    lo, hi = ci  # None when there were no test pairs
    if diff is None or lo is None or hi is None:
        return f"{treated} vs {baseline}: not compared (no test pairs)."
    pooled = "" if pooled_p is None else f"; pooled over seeds {format_p(pooled_p)} (CMH)"
    evidence = f"95% CI {100 * lo:+.1f} to {100 * hi:+.1f}; {_mcnemar_phrase(p_values)}{pooled}"
    if lo <= 0 <= hi:
        return (f"{treated} vs {baseline}: no detectable difference "
                f"({100 * diff:+.1f} points, {evidence}).")
    word = "better" if lo > 0 else "worse"
    return f"{treated} is {word} than {baseline} by {_points(abs(diff))} points ({evidence})."


def format_p(p: float) -> str:
    """A p-value for a sentence: 'p < 0.001', 'p = 0.042' or 'p = 1' (from 0.995 up)."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.995 else "p = 1"


def run_correct(run: Mapping[str, Any]) -> np.ndarray:
    """(P,) bool: the run's test predictions, correct when chosen reward > rejected (ties wrong)."""
    chosen = np.asarray(run["test_chosen_rewards"], dtype=float)
    rejected = np.asarray(run["test_rejected_rewards"], dtype=float)
    return chosen > rejected


def _mean_of(runs: Sequence[Mapping[str, Any]], key: str, *, test: bool = True) -> float | None:
    """Mean of `run["test"][key]` (or `run[key]`) over runs, ignoring missing/None values."""
    raw = [(r.get("test", {}) if test else r).get(key) for r in runs]
    vals = [float(v) for v in raw if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def summarize_runs(runs: Sequence[Mapping[str, Any]]) -> RunSummary:
    """The "summary" block of one condition from its runs (one per seed).

    `accuracy_ci` resamples the test pairs with every seed's predictions averaged per pair
    (`bootstrap_accuracy_ci`): a t-interval over 2 or 3 seeds is mostly its multiplier (12.7 for
    2). Runs without per-pair rewards (hand-made results) fall back to the one run's Wilson
    interval, or the t-interval over several (`accuracy_ci_kind` says which).
    """
    accs = [float(r["test"]["accuracy"]) for r in runs if r["test"].get("accuracy") is not None]
    mean, std, lo, hi = mean_ci(accs) if accs else (None, None, None, None)
    kind = "t over seeds"
    if lo is not None and hi is not None:
        lo, hi = max(lo, 0.0), min(hi, 1.0)  # an accuracy cannot leave [0, 1]; t knows nothing of it
    sizes = {len(r.get("test_chosen_rewards") or []) for r in runs}
    if accs and len(sizes) == 1 and 0 not in sizes:
        lo, hi = bootstrap_accuracy_ci(np.stack([run_correct(r) for r in runs]))
        kind = "bootstrap over test pairs, seeds averaged"
    elif len(accs) == 1:
        lo, hi = wilson_interval(runs[0]["test"]["correct"], runs[0]["test"]["n"])
        kind = "Wilson over test pairs (1 seed)"
    train_pairs = [r["train_pairs"] for r in runs if r.get("train_pairs") is not None]
    return {
        "accuracy_mean": mean, "accuracy_std": std, "accuracy_ci": [lo, hi],
        "accuracy_ci_kind": kind, "n_seeds": len(runs),
        "reward_gap_mean": _mean_of(runs, "reward_gap_mean"),
        "nll_mean": _mean_of(runs, "nll"), "ece_mean": _mean_of(runs, "ece"),
        "train_pairs": int(round(float(np.mean(train_pairs)))) if train_pairs else None,
    }


def compare_runs(treated: str, treated_runs: Sequence[Mapping[str, Any]], baseline: str,
                 baseline_runs: Sequence[Mapping[str, Any]], *, n_boot: int = 10_000,
                 seed: int = 0) -> Comparison:
    """One "comparisons" entry: McNemar per seed (paired by seed), the CMH test pooling the seeds,
    the pooled bootstrap, the power estimate and the verdict.

    Seeds present in both conditions are paired; if none match, the bootstrap still compares the
    seed-averaged predictions of each side and there are no McNemar rows, no pooled test and no
    power estimate (nothing is paired).
    """
    by_seed = {r["seed"]: r for r in baseline_runs}
    matched = [(r, by_seed[r["seed"]]) for r in treated_runs if r["seed"] in by_seed]
    mcnemar: list[SeedMcNemar] = [{"seed": t["seed"], **mcnemar_exact(run_correct(t), run_correct(b))}
                                  for t, b in matched]
    if matched:
        a = np.stack([run_correct(t) for t, _ in matched])  # (S, P) same seeds on both sides
        b = np.stack([run_correct(b) for _, b in matched])
    else:
        a = np.stack([run_correct(r) for r in treated_runs])
        b = np.stack([run_correct(r) for r in baseline_runs])
    boot = paired_bootstrap_diff(a, b, n_boot=n_boot, seed=seed)
    pooled = pooled_paired_test(a, b) if matched else None
    verdict = verdict_sentence(treated, baseline, diff=boot["diff"], ci=tuple(boot["ci"]),
                               p_values=[m["p"] for m in mcnemar],
                               pooled_p=pooled["p"] if pooled and len(matched) > 1 else None)
    out: Comparison = {"treated": treated, "baseline": baseline, "mcnemar": mcnemar,
                       "bootstrap": boot, "verdict": verdict}
    if pooled is not None:
        out["pooled"] = pooled
        out["power"] = power_estimate(a, b)
    return out


def notebook_table(conditions: Mapping[str, Mapping[str, Any]]) -> list[NotebookRow]:
    """The original notebook's results table, one row per condition, means over seeds.

    >>> run = {"train_pairs": 10, "train_accuracy": 0.7, "train_loss": 0.6,
    ...        "test": {"accuracy": 0.5, "correct": 2, "n": 4, "reward_gap_mean": 0.1}}
    >>> notebook_table({"unfiltered": {"runs": [run]}})[0]["correct"]
    2.0
    """
    rows: list[NotebookRow] = []
    for name, cond in conditions.items():
        runs = cond.get("runs", [])
        rows.append({
            "condition": name,
            "training_examples": _mean_of(runs, "train_pairs", test=False),
            "train_accuracy": _mean_of(runs, "train_accuracy", test=False),
            "train_loss": _mean_of(runs, "train_loss", test=False),
            "test_accuracy": _mean_of(runs, "accuracy"),
            "correct": _mean_of(runs, "correct"),
            "total": _mean_of(runs, "n"),
            "avg_reward_gap": _mean_of(runs, "reward_gap_mean"),
        })
    return rows


def _tests_of(results: Mapping[str, Any]) -> list[tuple[str, MutableMapping[str, Any], float]]:
    """(label, the record to annotate, p) for every paired test the results hold."""
    found: list[tuple[str, MutableMapping[str, Any], float]] = []

    def add(comp: MutableMapping[str, Any], label: str) -> None:
        if comp.get("pooled") is not None:
            found.append((label, comp, float(comp["pooled"]["p"])))

    for comp in results.get("comparisons", []):
        add(comp, f"{comp['treated']} vs {comp['baseline']}")
    for dose in results.get("dose_response", []):
        for point in dose.get("points", []):
            add(point["comparison"], f"{dose['rank_by']} top {100 * point['fraction']:g}% "
                                     f"vs random ({dose['treatment']})")
        curve = dose.get("curve_test")
        if curve and curve.get("p") is not None:
            found.append((f"{dose['rank_by']} curve vs random ({dose['treatment']})", curve,
                          float(curve["p"])))
    for entry in results.get("ablation", []):
        if not entry.get("reused"):  # the same runs as a clean vs random comparison above
            add(entry["comparison"], f"ablation {entry['detector']} vs its random control")
    return found


def correct_for_multiplicity(results: Mapping[str, Any], *, alpha: float = ALPHA) -> Multiplicity:
    """Holm over every test in `results` (comparisons, dose-response points and curves,
    ablations); writes each test's adjusted p as `p_holm` next to it and returns the summary.

    The p of a comparison is its pooled (CMH) test; a curve's is its sign-flip test.
    """
    tests = _tests_of(results)
    adjusted = holm_adjust([p for _, _, p in tests])
    for (_, record, _), p_holm in zip(tests, adjusted):
        record["p_holm"] = p_holm
    return {"method": "Holm", "alpha": alpha, "tests": len(tests),
            "significant": sum(p < alpha for _, _, p in tests),
            "significant_holm": sum(p < alpha for p in adjusted),
            "labels": [label for label, _, _ in tests], "p": [p for _, _, p in tests],
            "p_holm": adjusted}
