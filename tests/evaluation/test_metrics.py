"""preference_metrics against hand-computed cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rewardlab.evaluation.metrics import (
    expected_calibration_error,
    length_baselines,
    preference_metrics,
    reliability_bins,
    safe_pearson,
    wilson_interval,
)

CONTRACT_KEYS = {
    "n", "correct", "accuracy", "accuracy_ci", "reward_gap_mean", "reward_gap_std", "nll", "ece",
    "reliability", "accuracy_by_subset", "longer_wins_accuracy", "shorter_wins_accuracy",
    "length_reward_corr", "length_gap_corr",
}


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _metrics(chosen, rejected, *, c_len=None, r_len=None, subsets=None) -> dict:
    chosen, rejected = np.asarray(chosen, float), np.asarray(rejected, float)
    n = len(chosen)
    return preference_metrics(
        chosen, rejected,
        chosen_lengths=np.asarray(c_len if c_len is not None else np.arange(n) + 1),
        rejected_lengths=np.asarray(r_len if r_len is not None else np.arange(n) + 2),
        subsets=subsets if subsets is not None else ["s"] * n,
    )


def test_keys_and_plain_json_types() -> None:
    rng = np.random.default_rng(0)
    m = _metrics(rng.normal(1, 1, 50), rng.normal(0, 1, 50),
                 c_len=rng.integers(5, 90, 50), r_len=rng.integers(5, 90, 50))
    assert set(m) == CONTRACT_KEYS
    assert set(m["reliability"]) == {"bin_edges", "confidence", "accuracy", "count"}
    assert json.loads(json.dumps(m, allow_nan=False)) == m  # plain floats/ints/lists only
    assert len(m["reliability"]["bin_edges"]) == 11 and sum(m["reliability"]["count"]) == 100


def test_accuracy_counts_ties_as_wrong() -> None:
    m = _metrics([2.0, 1.0, 0.0, 3.0], [1.0, 1.0, 1.0, 0.0])
    assert (m["n"], m["correct"], m["accuracy"]) == (4, 2, 0.5)
    assert m["reward_gap_mean"] == pytest.approx(0.75)
    assert m["reward_gap_std"] == pytest.approx(np.std([1, 0, -1, 3], ddof=1))


def test_wilson_known_values() -> None:
    # Published Wilson 95% intervals: 8/10 -> (0.4902, 0.9433); 0/10 -> (0, 0.2775).
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    z = 1.959963984540054  # hand formula for 287/462
    p, n = 287 / 462, 462
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson_interval(287, 462) == pytest.approx((centre - half, centre + half))
    m = _metrics([1.0] * 8 + [0.0] * 2, [0.0] * 10)
    assert m["accuracy_ci"] == pytest.approx([0.4902, 0.9433], abs=1e-4)


def test_nll_is_bradley_terry() -> None:
    assert _metrics([0.0], [0.0])["nll"] == pytest.approx(math.log(2))
    gaps = np.array([2.0, -1.0, 0.5])
    expected = float(np.mean([-math.log(1 / (1 + math.exp(-g))) for g in gaps]))
    assert _metrics(gaps, np.zeros(3))["nll"] == pytest.approx(expected)
    big = _metrics([1000.0, -1000.0], [0.0, 0.0])  # no overflow for huge gaps
    assert big["nll"] == pytest.approx(500.0) and big["ece"] == pytest.approx(0.5)


def test_ece_zero_when_perfectly_calibrated() -> None:
    # Model says 75% for 4 pairs and is right on 3; says 95% for 20 pairs and is right on 19.
    g75, g95 = _logit(0.75), _logit(0.95)
    gaps = [g75] * 3 + [-g75] + [g95] * 19 + [-g95]
    m = _metrics(gaps, np.zeros(len(gaps)))
    assert m["ece"] == pytest.approx(0.0, abs=1e-9)
    rel = m["reliability"]
    assert rel["confidence"][7] == pytest.approx(0.75) and rel["accuracy"][7] == pytest.approx(0.75)
    assert rel["count"][5] == 0 and rel["confidence"][5] is None


def test_ece_known_miscalibration() -> None:
    # Claims 85% but is right half the time -> |0.5 - 0.85| = 0.35 (0.85: far from a bin edge).
    g = _logit(0.85)
    assert _metrics([g] * 5 + [-g] * 5, np.zeros(10))["ece"] == pytest.approx(0.35)
    # Always right while claiming 70% -> underconfident by 0.3.
    assert _metrics([_logit(0.7)] * 6, np.zeros(6))["ece"] == pytest.approx(0.3)


def test_reliability_is_symmetric_by_construction() -> None:
    rel = reliability_bins(np.array([0.62, 0.81, 0.33, 0.97]))
    assert rel["count"] == rel["count"][::-1]
    for lo, hi in zip(rel["accuracy"], rel["accuracy"][::-1]):
        assert (lo is None and hi is None) or lo == pytest.approx(1 - hi)
    empty = {"confidence": [None], "accuracy": [None], "count": [0]}
    assert expected_calibration_error(empty) is None


def test_length_baselines_and_ties_half() -> None:
    assert length_baselines(np.array([10, 2, 5, 7]), np.array([3, 9, 5, 1])) == (0.625, 0.375)
    m = _metrics([1.0, 1.0], [0.0, 0.0], c_len=[4, 4], r_len=[4, 4])
    assert m["longer_wins_accuracy"] == 0.5 and m["shorter_wins_accuracy"] == 0.5
    assert m["length_gap_corr"] is None  # length difference is constant


def test_length_correlations() -> None:
    lengths_c, lengths_r = np.array([10, 20, 30, 40]), np.array([15, 5, 35, 25])
    m = _metrics(lengths_c * 0.1, lengths_r * 0.1, c_len=lengths_c, r_len=lengths_r)
    assert m["length_reward_corr"] == pytest.approx(1.0)  # reward is exactly proportional to length
    assert m["length_gap_corr"] == pytest.approx(1.0)
    assert safe_pearson(np.array([1.0, np.nan, 3.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(1)
    assert safe_pearson(np.array([1.0]), np.array([2.0])) is None


def test_accuracy_by_subset() -> None:
    m = _metrics([1, 0, 1, 1], [0, 1, 0, 2], subsets=["harmless", "helpful", "harmless", "helpful"])
    assert m["accuracy_by_subset"] == {"harmless": {"n": 2, "accuracy": 1.0},
                                       "helpful": {"n": 2, "accuracy": 0.0}}


def test_empty_input_is_graceful() -> None:
    m = _metrics([], [])
    assert set(m) == CONTRACT_KEYS
    assert m["n"] == 0 and m["accuracy"] is None and m["accuracy_ci"] == [0.0, 1.0]
    assert m["nll"] is None and m["ece"] is None and m["accuracy_by_subset"] == {}
    json.dumps(m, allow_nan=False)
