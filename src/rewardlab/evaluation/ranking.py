"""Metrics for ties and rankings (issue 32), each with a 95% CI whose unit is the prompt.

Pairs of one prompt are not independent (they share responses), so every interval treats the
prompt as the unit. The interval is a cluster-robust t interval, deterministic (no bootstrap seed):
with per-prompt sums S_g over n_g items and the pooled value m = sum S_g / sum n_g,

    se^2 = G / (G - 1) * sum_g (S_g - m n_g)^2 / (sum_g n_g)^2,   m +/- t_{0.975, G-1} se

over G prompts. For per-prompt metrics (Kendall's tau, best-of-K) n_g = 1 and this is the plain
t interval of the mean over prompts. When every prompt gives the same value the interval has zero
width (a sample of G prompts cannot show spread it does not have).

>>> result = best_of_k_accuracy([[0.9, 0.1], [0.2, 0.8]], [[1.0, 0.0], [1.0, 0.0]])
>>> result.value, result.n_prompts
(0.5, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "RankingMetric",
    "tie_accuracy",
    "tie_nll",
    "kendall_tau",
    "best_of_k_accuracy",
]

FloatRows = Sequence[Sequence[float]] | np.ndarray


@dataclass(frozen=True)
class RankingMetric:
    """A metric's value with its 95% CI over prompts; `n_items` counts pairs or prompts scored."""

    value: float
    ci_low: float
    ci_high: float
    n_prompts: int
    n_items: int


def _cluster_interval(sums: np.ndarray, counts: np.ndarray) -> RankingMetric:
    """Pooled mean of per-prompt sums over counts, with the cluster-robust t interval."""
    g = len(sums)
    total = float(counts.sum())
    value = float(sums.sum()) / total
    if g < 2:
        return RankingMetric(value, math.nan, math.nan, g, int(total))
    residual = sums - value * counts  # (G,)
    se = math.sqrt(g / (g - 1) * float(np.sum(residual ** 2))) / total
    half = float(stats.t.ppf(0.975, g - 1)) * se
    return RankingMetric(value, value - half, value + half, g, int(total))


def _per_prompt(values: np.ndarray, prompt_ids: Sequence[object]) -> RankingMetric:
    """(N,) per-item values grouped by prompt id → pooled value with its interval."""
    _, group = np.unique(np.asarray(prompt_ids, dtype=object).astype(str), return_inverse=True)
    sums = np.bincount(group, weights=values)
    counts = np.bincount(group).astype(float)
    return _cluster_interval(sums, counts)


def _check_probs(probs: np.ndarray, outcomes: np.ndarray) -> None:
    if probs.ndim != 2 or probs.shape[1] != 3 or len(outcomes) != len(probs):
        raise ValueError(f"probs must be (N, 3) P(win), P(tie), P(loss) with N outcomes; got "
                         f"{probs.shape} and {len(outcomes)} outcomes")


def tie_accuracy(probs: FloatRows, outcomes: Sequence[int], prompt_ids: Sequence[object]) -> RankingMetric:
    """3-way accuracy: the most probable of win / tie / loss (columns 0, 1, 2) is the outcome.

    >>> r = tie_accuracy([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]], [0, 0, 2], ["a", "a", "b"])
    >>> round(r.value, 4), r.n_prompts, r.n_items
    (0.6667, 2, 3)
    """
    p, y = np.asarray(probs, dtype=float), np.asarray(outcomes, dtype=int)
    _check_probs(p, y)
    return _per_prompt((p.argmax(axis=1) == y).astype(float), prompt_ids)


def tie_nll(probs: FloatRows, outcomes: Sequence[int], prompt_ids: Sequence[object]) -> RankingMetric:
    """Mean -log P(outcome) under the tie model (nats per pair; ln 3 = 1.0986 is a uniform guess).

    >>> round(tie_nll([[0.5, 0.25, 0.25]], [1], ["a"]).value, 4)
    1.3863
    """
    p, y = np.asarray(probs, dtype=float), np.asarray(outcomes, dtype=int)
    _check_probs(p, y)
    chosen = np.clip(p[np.arange(len(y)), y], 1e-12, 1.0)  # a 0 would make the mean infinite
    return _per_prompt(-np.log(chosen), prompt_ids)


def kendall_tau(rewards: Sequence[Sequence[float]], truths: Sequence[Sequence[float]]) -> RankingMetric:
    """Mean over prompts of Kendall's tau-b between rewards and true scores of its K responses.

    tau-b corrects for ties in either ranking (scipy.stats.kendalltau). A prompt whose truths are
    all equal (or with fewer than 2 responses) has no tau and is left out: `n_prompts` counts
    the prompts used, `n_items` the prompts given.

    >>> kendall_tau([[3, 2, 1], [1, 2, 3]], [[3, 2, 1], [3, 2, 1]]).value
    0.0
    """
    taus = []
    for reward, truth in zip(rewards, truths, strict=True):
        if len(truth) < 2 or len(set(truth)) < 2:
            continue
        taus.append(float(stats.kendalltau(reward, truth).statistic))
    used = np.nan_to_num(np.asarray(taus, dtype=float))  # constant rewards: tau undefined → 0
    if len(used) == 0:
        raise ValueError("kendall_tau: no prompt has two responses with different true scores")
    result = _cluster_interval(used, np.ones(len(used)))
    return RankingMetric(result.value, result.ci_low, result.ci_high, len(used), len(truths))


def best_of_k_accuracy(rewards: Sequence[Sequence[float]],
                       truths: Sequence[Sequence[float]]) -> RankingMetric:
    """Share of prompts whose highest-reward response is a best one by the truth (ties: any best).

    >>> best_of_k_accuracy([[0.1, 0.5, 0.4]], [[2.0, 2.0, 1.0]]).value
    1.0
    """
    hits = []
    for reward, truth in zip(rewards, truths, strict=True):
        truth_arr = np.asarray(truth, dtype=float)
        hits.append(float(truth_arr[int(np.argmax(reward))] == truth_arr.max()))
    return _cluster_interval(np.asarray(hits), np.ones(len(hits)))
