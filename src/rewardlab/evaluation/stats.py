"""Paired statistics for "is condition A's reward model better than B's?", and the verdicts.

All conditions of one experiment are scored on the same test pairs in the same order, so every
comparison is paired over test pairs. The decision is `pair_unit_test` (`evaluation.crossed`): the
test pair is the unit and seed-to-seed variance is in the uncertainty, so S seeds scored on the
same P pairs count as P units, not S·P. A verdict says "better" or "worse" only when that test's
95% CI excludes 0 (equivalently its p < 0.05) and "no detectable difference" otherwise; Holm's
correction (`holm_adjust`) runs over every test a report makes. Exact McNemar per seed stays as
per-seed detail. Power: `rewardlab.evaluation.power`.

Kept for reference, not used for verdicts: the Cochran–Mantel–Haenszel test pooling the seeds
(`cmh_test`, `pooled_paired_test`) takes each (seed, pair) cell as an independent stratum and so
counts pairs shared by S seeds S times (tests/evaluation/test_calibration_sim.py shows it rejecting a true
null far more often than α); the pair bootstrap (`paired_bootstrap_diff`) and the sign-flip test
over dose-response cells (`sign_flip_test`) leave out the seeds' variance. docs/statistics.md.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, NotRequired, TypedDict

import numpy as np
from scipy import stats as sps

from rewardlab.evaluation.crossed import (
    PairUnitTest,
    accuracy_interval,
    direction,
    format_p,
    pair_unit_test,
)
from rewardlab.evaluation.metrics import wilson_interval
from rewardlab.evaluation.pooled import (  # kept for reference and older results.json
    BootstrapDiff,
    CMHResult,
    PooledTest,
    SignFlipTest,
    cmh_test,
    paired_bootstrap_diff,
    pooled_paired_test,
    sign_flip_test,
)
from rewardlab.evaluation.power import ALPHA, PowerEstimate, power_estimate
from rewardlab.evaluation.verdict import overall_verdict

__all__ = [
    "ALPHA",
    "McNemarResult",
    "SeedMcNemar",
    "BootstrapDiff",
    "CMHResult",
    "PooledTest",
    "PairUnitTest",
    "SignFlipTest",
    "Multiplicity",
    "RunSummary",
    "Comparison",
    "NotebookRow",
    "mcnemar_exact",
    "pair_unit_test",
    "paired_bootstrap_diff",
    "cmh_test",
    "pooled_paired_test",
    "sign_flip_test",
    "holm_adjust",
    "correct_for_multiplicity",
    "with_multiplicity",
    "mean_ci",
    "verdict_sentence",
    "format_p",
    "run_correct",
    "summarize_runs",
    "compare_correct",
    "compare_runs",
    "overall_verdict",
    "notebook_table",
]


class McNemarResult(TypedDict):
    b: int  # pairs A got right and B wrong
    c: int  # pairs B got right and A wrong
    n_discordant: int
    p: float


class SeedMcNemar(McNemarResult):
    seed: int


class Multiplicity(TypedDict):
    """Holm's correction over every test a report makes (`correct_for_multiplicity`)."""

    method: str
    alpha: float
    tests: int
    significant: int  # 95% CI excludes 0 (= p < alpha) before the correction
    significant_holm: int  # and still p < alpha after it: what the verdict may claim
    labels: list[str]  # one per test, in the order of p and p_holm
    p: list[float]
    p_holm: list[float]
    unit: NotRequired[str]  # what each test counts as independent (the test pair)


class RunSummary(TypedDict):
    """A condition's "summary" block (`summarize_runs`); None where no run had the value."""

    accuracy_mean: float | None
    accuracy_std: float | None
    accuracy_ci: list[float | None]  # [lo, hi]
    accuracy_ci_kind: str  # "t over test pairs and seeds (crossed)" (or, without per-pair
    # rewards, "Wilson over test pairs (1 seed)" / "t over seeds")
    n_seeds: int
    reward_gap_mean: float | None
    nll_mean: float | None
    ece_mean: float | None
    train_pairs: int | None


class Comparison(TypedDict):
    """One "comparisons" entry (`compare_runs`): `test` is the one source of its diff, CI and p."""

    treated: str
    baseline: str
    mcnemar: list[SeedMcNemar]  # one per seed both conditions ran (per-seed detail)
    test: PairUnitTest  # the decision: test pairs the unit, seed variance included
    bootstrap: NotRequired[BootstrapDiff]  # results.json before the pair-unit test
    pooled: NotRequired[PooledTest]  # CMH over the seeds (results.json 0.2 until the same)
    power: NotRequired[PowerEstimate]  # what this experiment can resolve, for `test`
    p_holm: NotRequired[float]  # test's p after Holm's correction over all tests of the report
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
                     ci: Sequence[float | None], p: float | None = None,
                     p_values: Sequence[float] = ()) -> str:
    """One sentence that never overstates: "better"/"worse" only when the 95% CI excludes 0, else
    "no detectable difference"; always the effect size with its CI and the test's `p` (test pairs
    the unit); the per-seed McNemar count as detail when given.

    >>> print(verdict_sentence("A", "B", diff=0.03, ci=(0.01, 0.05), p=0.004, p_values=[0.01, 0.2]))
    A is better than B by 3.0 points (95% CI +1.0 to +5.0, p = 0.004; McNemar p < 0.05 in 1 of 2 seeds).
    """
    lo, hi = ci  # None when there were no test pairs
    if diff is None or lo is None or hi is None:
        return f"{treated} vs {baseline}: not compared (no test pairs)."
    tested = "" if p is None else f", {format_p(p)}"
    seeds = f"; {_mcnemar_phrase(p_values)}" if p_values else ""
    evidence = f"95% CI {100 * lo:+.1f} to {100 * hi:+.1f}{tested}{seeds}"
    if lo <= 0 <= hi:
        return (f"{treated} vs {baseline}: no detectable difference "
                f"({100 * diff:+.1f} points, {evidence}).")
    word = "better" if lo > 0 else "worse"
    return f"{treated} is {word} than {baseline} by {_points(abs(diff))} points ({evidence})."


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


CROSSED_KIND = "t over test pairs and seeds (crossed)"


def summarize_runs(runs: Sequence[Mapping[str, Any]]) -> RunSummary:
    """The "summary" block of one condition from its runs (one per seed).

    `accuracy_ci` has the comparisons' two variance terms (`evaluation.crossed.accuracy_interval`):
    the test pairs (each pair's correctness averaged over the seeds) and the seeds' scatter beyond
    that. Runs without per-pair rewards (hand-made results) fall back to the one run's Wilson
    interval, or the t-interval over several (`accuracy_ci_kind` says which).
    """
    accs = [float(r["test"]["accuracy"]) for r in runs if r["test"].get("accuracy") is not None]
    mean, std, lo, hi = mean_ci(accs) if accs else (None, None, None, None)
    kind = "t over seeds"
    if lo is not None and hi is not None:
        lo, hi = max(lo, 0.0), min(hi, 1.0)  # an accuracy cannot leave [0, 1]; t knows nothing of it
    sizes = {len(r.get("test_chosen_rewards") or []) for r in runs}
    if accs and len(sizes) == 1 and 0 not in sizes:
        lo, hi = accuracy_interval(np.stack([run_correct(r) for r in runs]))
        kind = CROSSED_KIND if len(runs) > 1 else "t over test pairs (1 seed: no seed variance)"
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


def compare_correct(treated: str, a: np.ndarray, baseline: str, b: np.ndarray, *,
                    paired: bool = True, seeds: Sequence[int] = (),
                    with_power: bool = True) -> Comparison:
    """One "comparisons" entry from (S_A, P) and (S_B, P) right/wrong arrays: the pair-unit test,
    McNemar per seed when the rows are paired by seed (`seeds` names them), power, the verdict."""
    test = pair_unit_test(a, b, paired=paired)
    mcnemar: list[SeedMcNemar] = ([{"seed": int(s), **mcnemar_exact(x, y)}
                                   for s, x, y in zip(seeds, a, b)] if paired else [])
    verdict = verdict_sentence(treated, baseline, diff=test["diff"], ci=tuple(test["ci"]),
                               p=test["p"], p_values=[m["p"] for m in mcnemar])
    out: Comparison = {"treated": treated, "baseline": baseline, "mcnemar": mcnemar,
                       "test": test, "verdict": verdict}
    if with_power and test["diff"] is not None:
        out["power"] = power_estimate(a, b, paired=paired)
    return out


def compare_runs(treated: str, treated_runs: Sequence[Mapping[str, Any]], baseline: str,
                 baseline_runs: Sequence[Mapping[str, Any]], *,
                 with_power: bool = True) -> Comparison:
    """One "comparisons" entry from two conditions' runs (`compare_correct`).

    Runs with the same seed on both sides are paired by seed; when no seed matches (the A/A
    control trains its own seeds) the two sides are independent seeds, and the test adds both
    sides' seed variance.
    """
    by_seed = {r["seed"]: r for r in baseline_runs}
    matched = [(r, by_seed[r["seed"]]) for r in treated_runs if r["seed"] in by_seed]
    if matched:
        a = np.stack([run_correct(t) for t, _ in matched])  # (S, P) same seeds on both sides
        b = np.stack([run_correct(b) for _, b in matched])
        return compare_correct(treated, a, baseline, b, seeds=[t["seed"] for t, _ in matched],
                               with_power=with_power)
    a = np.stack([run_correct(r) for r in treated_runs])  # (S_A, P)
    b = np.stack([run_correct(r) for r in baseline_runs])  # (S_B, P)
    return compare_correct(treated, a, baseline, b, paired=False, with_power=with_power)


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


def _p_of(record: Mapping[str, Any]) -> float | None:
    """The decisive p of a comparison or curve: its pair-unit test's (older files: the pooled
    CMH p of a comparison, a curve's own p)."""
    block = record.get("test") or record.get("pooled") or record
    p = block.get("p")
    return None if p is None else float(p)


def _tests_of(results: Mapping[str, Any]) -> list[tuple[str, MutableMapping[str, Any], float]]:
    """(label, the record to annotate, p) for every paired test the results hold."""
    found: list[tuple[str, MutableMapping[str, Any], float]] = []

    def add(record: MutableMapping[str, Any], label: str) -> None:
        p = _p_of(record)
        if p is not None and ("test" in record or "pooled" in record or "ci" in record):
            found.append((label, record, p))

    for comp in results.get("comparisons", []):
        add(comp, f"{comp['treated']} vs {comp['baseline']}")
    for dose in results.get("dose_response", []):
        for point in dose.get("points", []):
            add(point["comparison"], f"{dose['rank_by']} top {100 * point['fraction']:g}% "
                                     f"vs random ({dose['treatment']})")
        if dose.get("curve_test"):
            add(dose["curve_test"], f"{dose['rank_by']} curve vs random ({dose['treatment']})")
    for entry in results.get("ablation", []):
        if not entry.get("reused"):  # the same runs as a clean vs random comparison above
            add(entry["comparison"], f"ablation {entry['detector']} vs its random control")
    return found


def correct_for_multiplicity(results: Mapping[str, Any], *, alpha: float = ALPHA) -> Multiplicity:
    """Holm over every test in `results` (comparisons, the A/A control, dose-response points and
    curves, ablations): the summary, `results` untouched (`with_multiplicity` also writes each
    test's adjusted p beside it, in a copy). Every p is a pair-unit test's, so a count here is a
    count of CIs excluding 0.

    A test counts as significant only when its 95% CI excludes 0 too (for the pair-unit test the
    same thing as p < α; the check keeps older records, whose CI and p came from different
    methods, from being counted on their p alone).
    """
    tests = _tests_of(results)
    adjusted = holm_adjust([p for _, _, p in tests])
    excludes = [direction(record) != 0 for _, record, _ in tests]
    return {"method": "Holm", "alpha": alpha, "tests": len(tests),
            "significant": sum(x and p < alpha for x, (_, _, p) in zip(excludes, tests)),
            "significant_holm": sum(x and p < alpha for x, p in zip(excludes, adjusted)),
            "labels": [label for label, _, _ in tests], "p": [p for _, _, p in tests],
            "p_holm": adjusted,
            "unit": "the test pair (seed-averaged), with seed-to-seed variance"}


def with_multiplicity(results: Mapping[str, Any], *, alpha: float = ALPHA) -> dict[str, Any]:
    """A copy of `results` with each test's Holm-adjusted p as `p_holm` beside it (the record's
    last key) and the summary as `"multiplicity"` (the last key); `results` stays as it was.

    >>> comp = {"treated": "clean", "baseline": "random", "test": {"p": 0.01, "ci": [0.1, 0.2]}}
    >>> out = with_multiplicity({"comparisons": [comp, {**comp, "test": {"p": 0.04, "ci": [0, 1]}}]})
    >>> [c["p_holm"] for c in out["comparisons"]], "p_holm" in comp, out["multiplicity"]["tests"]
    ([0.02, 0.04], False, 2)
    """
    summary = correct_for_multiplicity(results, alpha=alpha)
    copied = copy.deepcopy(dict(results))  # the records to annotate are nested: copy them all
    for (_, record, _), p_holm in zip(_tests_of(copied), summary["p_holm"]):
        record["p_holm"] = p_holm
    return {**copied, "multiplicity": summary}
