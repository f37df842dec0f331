"""Paired statistics for "is condition A's reward model better than B's?", and the verdicts.

All conditions of one experiment are scored on the same test pairs in the same order, so the tests
are *paired*: exact McNemar per seed (only pairs where the two models disagree carry information)
and a paired bootstrap over test pairs pooled across seeds. A verdict only says "better" or "worse"
when the bootstrap 95% CI of the accuracy difference excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any, TypedDict

import numpy as np
from scipy import stats as sps

from rewardlab.evaluation.metrics import wilson_interval

__all__ = [
    "ALPHA",
    "McNemarResult",
    "SeedMcNemar",
    "BootstrapDiff",
    "RunSummary",
    "Comparison",
    "NotebookRow",
    "mcnemar_exact",
    "paired_bootstrap_diff",
    "mean_ci",
    "verdict_sentence",
    "run_correct",
    "summarize_runs",
    "compare_runs",
    "overall_verdict",
    "notebook_table",
]

ALPHA = 0.05
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


class RunSummary(TypedDict):
    """A condition's "summary" block (`summarize_runs`); None where no run had the value."""

    accuracy_mean: float | None
    accuracy_std: float | None
    accuracy_ci: list[float | None]  # [lo, hi]
    accuracy_ci_kind: str  # "t over seeds" or "Wilson over test pairs (1 seed)"
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
                     ci: Sequence[float | None], p_values: Sequence[float]) -> str:
    """One sentence that never overstates: "better"/"worse" only when the 95% CI excludes 0.

    >>> print(verdict_sentence("A", "B", diff=0.03, ci=(0.01, 0.05), p_values=[0.01, 0.2]))
    A is better than B by 3.0 points (95% CI +1.0 to +5.0; McNemar p < 0.05 in 1 of 2 seeds).
    """
    lo, hi = ci  # None when there were no test pairs
    if diff is None or lo is None or hi is None:
        return f"{treated} vs {baseline}: not compared (no test pairs)."
    evidence = f"95% CI {100 * lo:+.1f} to {100 * hi:+.1f}; {_mcnemar_phrase(p_values)}"
    if lo <= 0 <= hi:
        return (f"{treated} vs {baseline}: no significant difference "
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


def summarize_runs(runs: Sequence[Mapping[str, Any]]) -> RunSummary:
    """The "summary" block of one condition from its runs (one per seed).

    `accuracy_ci` is a t-interval across seeds; with a single seed there is no seed spread, so it
    falls back to that run's Wilson interval over test pairs (`accuracy_ci_kind` says which).
    """
    accs = [float(r["test"]["accuracy"]) for r in runs if r["test"].get("accuracy") is not None]
    mean, std, lo, hi = mean_ci(accs) if accs else (None, None, None, None)
    kind = "t over seeds"
    if lo is not None and hi is not None:
        lo, hi = max(lo, 0.0), min(hi, 1.0)  # an accuracy cannot leave [0, 1]; t knows nothing of it
    if len(accs) == 1:
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
    """One "comparisons" entry: McNemar per seed (paired by seed), pooled bootstrap, verdict.

    Seeds present in both conditions are paired; if none match, the bootstrap still compares the
    seed-averaged predictions of each side and there are no McNemar rows.
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
    verdict = verdict_sentence(treated, baseline, diff=boot["diff"], ci=tuple(boot["ci"]),
                               p_values=[m["p"] for m in mcnemar])
    return {"treated": treated, "baseline": baseline, "mcnemar": mcnemar, "bootstrap": boot,
            "verdict": verdict}


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


# ---------------------------------------------------------------- the overall verdict paragraph

def _find(comparisons: Sequence[Mapping[str, Any]], treated: str, baseline: str
          ) -> dict[str, Any] | None:
    return next((dict(c) for c in comparisons
                 if c["treated"] == treated and c["baseline"] == baseline), None)


def _direction(comp: Mapping[str, Any] | None) -> int:
    """+1 significantly better, -1 significantly worse, 0 no significant difference / missing."""
    if comp is None or comp["bootstrap"]["ci"][0] is None:
        return 0
    lo, hi = comp["bootstrap"]["ci"]
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _treatment_names(results: Mapping[str, Any]) -> list[str]:
    """Conditions that clean the data: everything except the unfiltered baseline and the control."""
    return [c for c in results.get("conditions", {}) if c not in ("unfiltered", "random")]


def _best_treatment(results: Mapping[str, Any]) -> str | None:
    conds = results.get("conditions", {})
    scored = [(conds[c]["summary"].get("accuracy_mean"), c) for c in _treatment_names(results)]
    scored = [(a, c) for a, c in scored if a is not None]
    return max(scored)[1] if scored else None


def _headline(results: Mapping[str, Any], comps: Sequence[Mapping[str, Any]]) -> str:
    """The direct answer, driven by the treatments' comparisons against unfiltered data."""
    dirs = {t: _direction(_find(comps, t, "unfiltered")) for t in _treatment_names(results)}
    better = [t for t, d in dirs.items() if d > 0]
    worse = [t for t, d in dirs.items() if d < 0]
    if better:
        return f"Yes, on this test set: {', '.join(better)} beat training on unfiltered data."
    if worse and len(worse) == len(dirs):
        return "No: every cleaning treatment made the reward model worse than unfiltered data."
    if worse:
        return (f"No improvement was shown: {', '.join(worse)} made the model worse and the other "
                f"treatments were indistinguishable from unfiltered data.")
    return ("No evidence that it does: no cleaning treatment differed significantly from "
            "training on unfiltered data.")


def _control_treatment(results: Mapping[str, Any], comps: Sequence[Mapping[str, Any]]
                       ) -> str | None:
    """The treatment to judge against the control: one that beat unfiltered, else the best."""
    with_control = [t for t in _treatment_names(results) if _find(comps, t, "random")]
    winners = [t for t in with_control if _direction(_find(comps, t, "unfiltered")) > 0]
    conds = results["conditions"]
    pool = winners or with_control
    return max(pool, key=lambda t: conds[t]["summary"].get("accuracy_mean") or 0.0, default=None)


_CONTROL_MEANING = {  # (vs random, vs unfiltered) -> what the control says
    (1, 1): "so the gain comes from which pairs were cleaned, not from training on fewer pairs",
    (0, 1): "so this run cannot tell cleaner data from merely less data",
    (-1, 1): "so a random subset of the same size did even better: less data, not cleaner data, "
             "explains the gain",
    (1, 0): "so the cleaned data beat a random subset of the same size, though not the full data",
    (1, -1): "so the cleaned data beat a random subset of the same size, though not the full data",
}


def _control_sentence(results: Mapping[str, Any], comps: Sequence[Mapping[str, Any]]) -> str:
    """Why the random control exists, and what it says here."""
    if "random" not in results.get("conditions", {}):
        return ("There was no random-subset control, so a gain from cleaning cannot be told apart "
                "from a gain from simply training on fewer pairs.")
    lead = ("The random control removes as many pairs as cleaning does, but at random: clean vs "
            "random tells better data from less data.")
    treated = _control_treatment(results, comps)
    if treated is None:
        return lead
    comp = _find(comps, treated, "random")
    if comp is None:
        return lead
    key = (_direction(comp), _direction(_find(comps, treated, "unfiltered")))
    meaning = _CONTROL_MEANING.get(key, "so the cleaned data did not beat a random subset of the "
                                        "same size" if key[0] <= 0 else "")
    return f"{lead} {comp['verdict'][:-1]}; {meaning}." if meaning else f"{lead} {comp['verdict']}"


def _resolution_sentence(comps: Sequence[Mapping[str, Any]], results: Mapping[str, Any]) -> str:
    """How small a difference this experiment can resolve: the typical CI half-width."""
    halves = [(c["bootstrap"]["ci"][1] - c["bootstrap"]["ci"][0]) / 2 for c in comps
              if c["bootstrap"]["ci"][0] is not None]
    if not halves:
        return ""
    seeds = len(results.get("config", {}).get("seeds", [])) or None
    n_test = results.get("data", {}).get("test", {}).get("pairs")
    setup = " and ".join(x for x in (f"{seeds} seed{'s' if seeds != 1 else ''}" if seeds else "",
                                     f"{n_test} test pairs" if n_test else "") if x)
    return (f"With {setup or 'this setup'}, the 95% intervals are about ±{_points(median(halves))} "
            f"points wide: effects smaller than that need more test pairs or seeds to resolve.")


def _teaching_sentence(results: Mapping[str, Any]) -> str:
    teaching = results.get("teaching") or {}
    frac = teaching.get("recovered_fraction")
    if frac is None:
        return ""
    best = teaching.get("best_treatment") or _best_treatment(results) or "the best treatment"
    noise = teaching.get("noise")
    where = f"with {100 * noise:.0f}% of labels flipped" if noise is not None else "label noise"
    if frac <= 0:
        return (f"In this synthetic demo ({where}), {best} recovered none of the accuracy lost to "
                f"noise.")
    return (f"In this synthetic demo ({where}), {best} recovered an estimated {100 * frac:.0f}% of "
            f"the accuracy lost to noise (point estimate, mean over seeds).")


def overall_verdict(results: Mapping[str, Any]) -> str:
    """A paragraph answering "does cleaning my preference data give me a better reward model?".

    Built only from the comparisons' bootstrap CIs, so it never claims more than they support.
    """
    comps = results.get("comparisons", [])
    parts = [_headline(results, comps)]
    parts += [c["verdict"] for c in comps
              if c["baseline"] == "unfiltered" and c["treated"] in _treatment_names(results)]
    parts += [_control_sentence(results, comps), _resolution_sentence(comps, results),
              _teaching_sentence(results)]
    return " ".join(p for p in parts if p)
