"""evaluation/ranking.py: values and intervals computed by hand here, and the interval's coverage
on simulated data (seeded; 200 simulations per metric, coverage inside a binomial band)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rewardlab.evaluation.ranking import best_of_k_accuracy, kendall_tau, tie_accuracy, tie_nll

T975 = {1: 12.706204736174705, 2: 4.302652729911275, 3: 3.182446305284263}  # t quantiles, tables


def test_tie_accuracy_pools_pairs_and_clusters_the_interval_by_prompt():
    probs = [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3],  # prompt a: right, wrong
             [0.1, 0.2, 0.7],  # prompt b: right
             [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]  # prompt c: right, right, wrong
    outcomes = [0, 2, 2, 1, 0, 1]
    result = tie_accuracy(probs, outcomes, ["a", "a", "b", "c", "c", "c"])
    # sums (1, 1, 2) over counts (2, 1, 3): m = 4/6; residuals (-1/3, 1/3, 0)
    se = math.sqrt(3 / 2 * (1 / 9 + 1 / 9)) / 6
    assert result.value == pytest.approx(4 / 6)
    assert (result.ci_low, result.ci_high) == pytest.approx((4 / 6 - T975[2] * se, 4 / 6 + T975[2] * se))
    assert (result.n_prompts, result.n_items) == (3, 6)


def test_tie_nll_is_the_mean_minus_log_probability_of_what_happened():
    probs = [[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]
    result = tie_nll(probs, [1, 1, 2], ["x", "y", "z"])
    values = [-math.log(0.25), -math.log(0.8), -math.log(0.6)]
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert result.value == pytest.approx(mean)
    assert result.ci_high - mean == pytest.approx(T975[2] * sd / math.sqrt(3))


def test_tie_metrics_reject_probabilities_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        tie_accuracy([[0.5, 0.5]], [0], ["a"])


def test_kendall_tau_b_handles_ties_and_skips_prompts_without_an_order():
    rewards = [[1, 2, 3, 4], [4, 3, 2, 1], [1, 2, 3]]
    truths = [[1, 1, 2, 3], [1, 2, 3, 4], [5, 5, 5]]
    result = kendall_tau(rewards, truths)
    # prompt 1: 5 concordant pairs, 0 discordant, one pair tied in the truth: 5 / sqrt(6 * 5)
    first, second = 5 / math.sqrt(30), -1.0
    mean = (first + second) / 2
    assert result.value == pytest.approx(mean)
    half = T975[1] * abs(first - second) / math.sqrt(2) / math.sqrt(2)
    assert result.ci_low == pytest.approx(mean - half)
    assert (result.n_prompts, result.n_items) == (2, 3)


def test_best_of_k_counts_a_prompt_when_the_top_reward_is_a_true_best():
    rewards = [[0.1, 0.9, 0.3], [0.5, 0.2, 0.1], [0.0, 0.1, 0.7], [2.0, 1.0, 0.0]]
    truths = [[1.0, 3.0, 2.0], [3.0, 3.0, 0.0], [3.0, 1.0, 2.0], [1.0, 0.0, 0.0]]
    result = best_of_k_accuracy(rewards, truths)
    hits = [1.0, 1.0, 0.0, 1.0]
    sd = math.sqrt(sum((h - 0.75) ** 2 for h in hits) / 3)
    assert result.value == 0.75
    assert result.ci_high == pytest.approx(0.75 + T975[3] * sd / 2)


def _covers(result, truth: float) -> bool:
    return result.ci_low <= truth <= result.ci_high


def _band(sims: int) -> tuple[float, float]:
    """95% coverage +/- 3 binomial standard deviations over `sims` simulations."""
    sd = math.sqrt(0.95 * 0.05 / sims)
    return 0.95 - 3 * sd, min(1.0, 0.95 + 3 * sd)


def test_tie_accuracy_interval_covers_the_truth_about_95_percent_with_clustered_prompts():
    """Each prompt has its own chance of being right (Beta, mean 0.7) and 1-5 pairs; the truth
    is 0.7. A per-pair interval would under-cover here; the per-prompt one must not."""
    rng = np.random.default_rng(11)
    sims, covered = 200, 0
    for _ in range(sims):
        sizes = rng.integers(1, 6, size=60)
        chance = rng.beta(1.4, 0.6, size=60)  # mean 0.7, spread widely between prompts
        right = rng.random(sizes.sum()) < np.repeat(chance, sizes)
        outcome = np.where(right, 0, 1)
        probs = np.tile([0.6, 0.3, 0.1], (sizes.sum(), 1))
        covered += _covers(tie_accuracy(probs, outcome, np.repeat(np.arange(60), sizes)), 0.7)
    low, high = _band(sims)
    assert low <= covered / sims <= high


def test_best_of_k_interval_covers_the_truth_about_95_percent():
    """K=4 true qualities N(0,1), rewards = quality + N(0,1) noise; the truth comes from one
    million simulated prompts (its own Monte Carlo error, ~0.0005, is negligible here)."""
    rng = np.random.default_rng(5)
    big = rng.normal(size=(1_000_000, 4))
    truth = float(np.mean(np.argmax(big + rng.normal(size=big.shape), axis=1) == np.argmax(big, axis=1)))
    sims, covered = 200, 0
    for _ in range(sims):
        quality = rng.normal(size=(80, 4))
        rewards = quality + rng.normal(size=quality.shape)
        covered += _covers(best_of_k_accuracy(rewards.tolist(), quality.tolist()), truth)
    low, high = _band(sims)
    assert low <= covered / sims <= high
