"""Reward-model test metrics: accuracy with a CI, reward gap, NLL, calibration, length baselines.

`preference_metrics` turns two reward vectors (chosen, rejected; same pair order) into one plain,
JSON-serializable dict. Undefined values (no pairs, constant lengths) are `None`, never NaN, so the
dict round-trips through `json.dumps` unchanged.

Conventions (the report states them too):
- a pair is *correct* when `chosen > rejected`; a tie counts as wrong, as in the original notebook;
- the model's probability that chosen is preferred is the Bradley-Terry `sigma(r_c - r_r)`;
- lengths are whatever unit the caller passes (rewardlab passes characters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

# scipy is imported where it is used: `rewardlab train` and `rewardlab serve` import this module
# for the metrics' types, and scipy.stats costs ~0.5 s of their start (issue 34)

__all__ = [
    "sigmoid",
    "ECE_BINS",
    "PreferenceMetrics",
    "Reliability",
    "SubsetAccuracy",
    "preference_metrics",
    "wilson_interval",
    "bootstrap_accuracy_ci",
    "expected_calibration_error",
    "reliability_bins",
    "length_baselines",
    "safe_pearson",
]

ECE_BINS = 10


class Reliability(TypedDict):
    """Equal-width bins over P(chosen > rejected); `confidence`/`accuracy` are None for empty bins."""

    bin_edges: list[float]  # (n_bins + 1,)
    confidence: list[float | None]  # (n_bins,) mean probability in the bin
    accuracy: list[float | None]  # (n_bins,) share of the bin's orientations that were right
    count: list[int]  # (n_bins,) pair-orientations, 2 per pair


class SubsetAccuracy(TypedDict):
    n: int
    accuracy: float


class PreferenceMetrics(TypedDict):
    """`preference_metrics`' result; None where undefined (no pairs, constant lengths)."""

    n: int
    correct: int
    accuracy: float | None
    accuracy_ci: list[float]  # [lo, hi], Wilson 95%
    reward_gap_mean: float | None
    reward_gap_std: float | None
    nll: float | None
    ece: float | None
    reliability: Reliability
    accuracy_by_subset: dict[str, SubsetAccuracy]
    longer_wins_accuracy: float | None
    shorter_wins_accuracy: float | None
    length_reward_corr: float | None  # Pearson r of reward vs length over all 2N responses
    length_gap_corr: float | None  # Pearson r of the gap vs the length difference


def wilson_interval(correct: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; `(0.0, 1.0)` when `n == 0`.

    Wilson rather than the normal approximation because it stays inside [0, 1] and is accurate
    at the small test sets and extreme accuracies reward models produce.

    >>> [round(x, 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    """
    from scipy import stats as sps

    if n == 0:
        return 0.0, 1.0
    z = float(sps.norm.ppf(0.5 + level / 2))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_accuracy_ci(correct: np.ndarray, *, n_boot: int = 10_000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the seed-averaged accuracy from resampling test pairs.

    `correct` is (P,) or (S, P) right/wrong (S seeds × P test pairs). Every replicate draws the
    same pair indices for all seeds, so averaging each pair over the seeds first is exact: the
    interval says how far the accuracy would move on another test set of this size, with every
    seed's evidence pooled. Unlike a t-interval over 2 seeds (multiplier 12.7) it is as narrow as
    the test set allows. `(0.0, 1.0)` without pairs.

    >>> bootstrap_accuracy_ci(np.ones((2, 5)), n_boot=50)
    (1.0, 1.0)
    """
    arr = np.asarray(correct, dtype=float)
    per_pair = arr.mean(axis=0) if arr.ndim == 2 else arr  # (P,)
    if per_pair.size == 0:
        return 0.0, 1.0
    rng = np.random.default_rng(seed)
    means = np.concatenate([  # chunks of 500 replicates bound memory at 500 × P indices
        per_pair[rng.integers(0, per_pair.size, size=(min(500, n_boot - start), per_pair.size))]
        .mean(axis=1) for start in range(0, n_boot, 500)])
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), the one sigmoid of the package (reward gap → P(chosen ≻ rejected))."""
    # scipy's expit is overflow-safe for large |gap| where 1/(1+exp(-x)) warns.
    from scipy.special import expit

    return np.asarray(expit(x), dtype=float)


def _symmetrized(prob_chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) with every pair in both orders: (p, 1) and (1 - p, 0).

    Pairs always arrive chosen-first, so the raw label "chosen is preferred" is constantly 1 and a
    calibration curve on it would be degenerate. Scoring each pair in both orders is what a random
    presentation order would give; the resulting ECE equals the usual top-label ECE on
    `max(p, 1 - p)`, and the reliability diagram is symmetric about 0.5.
    """
    probs = np.concatenate([prob_chosen, 1.0 - prob_chosen])
    labels = np.concatenate([np.ones_like(prob_chosen), np.zeros_like(prob_chosen)])
    return probs, labels


def reliability_bins(prob_chosen: np.ndarray, *, n_bins: int = ECE_BINS) -> Reliability:
    """Equal-width bins over P(chosen > rejected) on the symmetrized pairs (see `_symmetrized`).

    Returns `{bin_edges, confidence, accuracy, count}`; `count` is in pair-orientations (2 per
    pair), and `confidence`/`accuracy` are `None` for empty bins.

    >>> reliability_bins(np.array([0.75]), n_bins=2)["accuracy"]
    [0.0, 1.0]
    """
    probs, labels = _symmetrized(np.asarray(prob_chosen, dtype=float))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-open bins except the last, so p == 1.0 lands in the top bin.
    idx = np.clip(np.digitize(probs, edges[1:-1], right=False), 0, n_bins - 1)
    conf: list[float | None] = []
    acc: list[float | None] = []
    count: list[int] = []
    for b in range(n_bins):
        mask = idx == b
        k = int(mask.sum())
        count.append(k)
        conf.append(float(probs[mask].mean()) if k else None)
        acc.append(float(labels[mask].mean()) if k else None)
    return {"bin_edges": [round(float(e), 10) for e in edges], "confidence": conf, "accuracy": acc,
            "count": count}


def expected_calibration_error(reliability: Reliability) -> float | None:
    """ECE = sum over bins of (bin share) * |accuracy - confidence|; `None` when nothing was binned.

    >>> rel = {"confidence": [0.2, 0.8], "accuracy": [0.0, 1.0], "count": [1, 1]}
    >>> expected_calibration_error(rel)
    0.2
    """
    total = sum(reliability["count"])
    if total == 0:
        return None
    # a bin has an accuracy and a confidence exactly when its count is non-zero
    gaps = (abs(a - c) * k / total for a, c, k in
            zip(reliability["accuracy"], reliability["confidence"], reliability["count"])
            if k and a is not None and c is not None)
    return float(round(sum(gaps), 12))


def length_baselines(chosen_lengths: np.ndarray,
                     rejected_lengths: np.ndarray) -> tuple[float | None, float | None]:
    """Accuracy of "the longer response wins" and "the shorter response wins".

    These are data baselines, not model scores: a reward model that merely rewards length scores
    about `longer_wins_accuracy`. Equal lengths count as half right for both (a coin flip), so the
    two always sum to 1.

    >>> length_baselines(np.array([5, 1, 3]), np.array([2, 4, 3]))
    (0.5, 0.5)
    """
    n = len(chosen_lengths)
    if n == 0:
        return None, None
    diff = np.asarray(chosen_lengths, dtype=float) - np.asarray(rejected_lengths, dtype=float)
    ties = float((diff == 0).sum()) / 2
    longer = (float((diff > 0).sum()) + ties) / n
    shorter = (float((diff < 0).sum()) + ties) / n
    return longer, shorter


def safe_pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson r, or `None` when undefined (fewer than 2 points, a constant input, non-finite).

    >>> safe_pearson(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 7.0])) > 0.98
    True
    >>> safe_pearson(np.array([1.0, 1.0]), np.array([0.0, 1.0])) is None
    True
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    r = float(np.corrcoef(x, y)[0, 1])
    return r if math.isfinite(r) else None


def _accuracy_by_subset(correct: np.ndarray, subsets: Sequence[str]) -> dict[str, SubsetAccuracy]:
    """`{subset: {n, accuracy}}` in sorted subset order (stable JSON, stable report tables)."""
    labels = np.asarray(list(subsets), dtype=object)
    out: dict[str, SubsetAccuracy] = {}
    for name in sorted(set(labels.tolist())):
        mask = labels == name
        out[str(name)] = {"n": int(mask.sum()), "accuracy": float(correct[mask].mean())}
    return out


def _bt_nll(gap: np.ndarray) -> float | None:
    """Mean Bradley-Terry negative log-likelihood, -log sigma(gap), computed stably."""
    if len(gap) == 0:
        return None
    # -log sigma(x) = log(1 + exp(-x)) = logaddexp(0, -x): no overflow for very negative gaps.
    return float(np.logaddexp(0.0, -gap).mean())


def preference_metrics(chosen: np.ndarray, rejected: np.ndarray, *, chosen_lengths: np.ndarray,
                       rejected_lengths: np.ndarray, subsets: Sequence[str]) -> PreferenceMetrics:
    """All test metrics for one reward model on one set of pairs (all inputs in the same order).

    >>> m = preference_metrics(np.array([2.0, 0.0]), np.array([1.0, 1.0]),
    ...                        chosen_lengths=np.array([10, 3]), rejected_lengths=np.array([5, 8]),
    ...                        subsets=["a", "b"])
    >>> m["n"], m["correct"], m["accuracy"], m["accuracy_by_subset"]["b"]
    (2, 1, 0.5, {'n': 1, 'accuracy': 0.0})
    """
    c = np.asarray(chosen, dtype=float).reshape(-1)
    r = np.asarray(rejected, dtype=float).reshape(-1)
    c_len = np.asarray(chosen_lengths, dtype=float).reshape(-1)
    r_len = np.asarray(rejected_lengths, dtype=float).reshape(-1)
    n = len(c)
    gap = c - r  # (N,) positive = model agrees with the label
    correct = gap > 0  # ties are wrong, as in the original notebook's `chosen > rejected`
    k = int(correct.sum())
    reliability = reliability_bins(sigmoid(gap))
    longer, shorter = length_baselines(c_len, r_len)
    return {
        "n": n,
        "correct": k,
        "accuracy": k / n if n else None,
        "accuracy_ci": list(wilson_interval(k, n)),
        "reward_gap_mean": float(gap.mean()) if n else None,
        "reward_gap_std": float(gap.std(ddof=1)) if n > 1 else None,
        "nll": _bt_nll(gap),
        "ece": expected_calibration_error(reliability),
        "reliability": reliability,
        "accuracy_by_subset": _accuracy_by_subset(correct, subsets) if n else {},
        "longer_wins_accuracy": longer,
        "shorter_wins_accuracy": shorter,
        "length_reward_corr": safe_pearson(np.concatenate([c, r]), np.concatenate([c_len, r_len])),
        "length_gap_corr": safe_pearson(gap, c_len - r_len),
    }
