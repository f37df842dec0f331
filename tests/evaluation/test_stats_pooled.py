"""Pooled statistics, multiplicity and power against published values and hand computations."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from rewardlab.evaluation.crossed import format_p, pair_unit_test, variance_parts
from rewardlab.evaluation.power import (
    _at_design,
    mcnemar_detectable_difference,
    mcnemar_power,
    mcnemar_sample_size,
    pair_unit_power,
    paired_t_power,
    paired_t_sample_size,
    power_estimate,
    stated_power,
)
from rewardlab.evaluation.stats import (
    cmh_test,
    compare_runs,
    correct_for_multiplicity,
    holm_adjust,
    pooled_paired_test,
    sign_flip_test,
    with_multiplicity,
)

# R's datasets::UCBAdmissions, one 2×2 table per department: [[admitted M, admitted F],
# [rejected M, rejected F]]. `mantelhaen.test(UCBAdmissions)` prints X-squared = 1.4269 (with
# R's default continuity correction), p = 0.2323, common odds ratio 0.9046968, 95% CI
# 0.7719074 to 1.0603298; with correct = FALSE, X-squared = 1.5246, p = 0.2169.
UCB = np.array([[[512, 89], [313, 19]], [[353, 17], [207, 8]], [[120, 202], [205, 391]],
                [[138, 131], [279, 244]], [[53, 94], [138, 299]], [[22, 24], [351, 317]]])


def test_cmh_matches_r_on_ucb_admissions() -> None:
    out = cmh_test(UCB)
    assert out["statistic"] == pytest.approx(1.4269, abs=5e-5)
    assert out["p"] == pytest.approx(0.2323, abs=5e-5)
    assert out["odds_ratio"] == pytest.approx(0.9046968, abs=1e-7)
    assert out["odds_ratio_ci"] == pytest.approx([0.7719074, 1.0603298], abs=1e-7)
    assert out["strata"] == 6
    plain = cmh_test(UCB, correction=False)
    assert (plain["statistic"], plain["p"]) == pytest.approx((1.5246, 0.2169), abs=5e-5)


def _pairs(b: int, c: int, both: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * b + [0] * c + [1] * both + [0] * neither, dtype=bool)
    other = np.array([0] * b + [1] * c + [1] * both + [0] * neither, dtype=bool)
    return a, other


def test_pooled_test_is_mcnemar_on_the_summed_discordant_pairs() -> None:
    # seed 0: 9 pairs only A got right, 3 only B; seed 1: 7 vs 4. Pooled: b = 16, c = 7.
    a0, b0 = _pairs(9, 3, 50, 20)
    a1, b1 = _pairs(7, 4, 52, 19)
    out = pooled_paired_test(np.stack([a0, a1]), np.stack([b0, b1]))
    by_hand = (abs(16 - 7) - 1) ** 2 / (16 + 7)  # McNemar with continuity correction = 64/23
    assert (out["b"], out["c"], out["replicates"]) == (16, 7, 2)
    assert out["statistic"] == pytest.approx(by_hand)
    assert out["p"] == pytest.approx(float(sps.chi2.sf(64 / 23, 1)))
    assert out["p"] == pytest.approx(0.09521, abs=1e-4)
    assert out["odds_ratio"] == pytest.approx(16 / 7)  # matched pairs: MH odds ratio = b / c
    lo, hi = out["odds_ratio_ci"]
    half = 1.959964 * math.sqrt(1 / 16 + 1 / 7)
    assert (lo, hi) == pytest.approx((16 / 7 * math.exp(-half), 16 / 7 * math.exp(half)), rel=1e-5)


def test_pooled_test_without_disagreements() -> None:
    a, _ = _pairs(0, 0, 10, 5)
    out = pooled_paired_test(a[None], a[None])
    assert (out["b"], out["c"], out["p"], out["statistic"]) == (0, 0, 1.0, 0.0)
    assert out["odds_ratio"] is None
    a, b = _pairs(4, 0, 10, 5)  # only A ever wins: an infinite ratio, kept out of the JSON
    out = pooled_paired_test(a[None], b[None])
    assert out["odds_ratio"] is None and out["odds_ratio_ci"] == [None, None]
    assert out["p"] == pytest.approx(float(sps.chi2.sf(9 / 4, 1)))  # (|4 − 0| − 1)² / 4


def test_sign_flip_exact_by_enumeration() -> None:
    diffs = [0.02, 0.03, -0.01, 0.04, 0.01]
    observed = abs(np.mean(diffs))
    hits = sum(abs(np.mean(np.multiply(signs, diffs))) >= observed - 1e-12
               for signs in itertools.product([1, -1], repeat=5))
    out = sign_flip_test(diffs)
    assert out["exact"] and out["n_perm"] == 32
    # |d| sum to 0.11; a pattern reaches |mean| ≥ 0.09/5 when it costs at most 0.02: all signs
    # agreeing, or only one of the two 0.01s against them: 3 patterns × their mirror = 6 of 32
    assert out["p"] == hits / 32 == 6 / 32
    assert sign_flip_test([0.1] * 4)["p"] == 2 / 16  # the smallest p four differences allow
    assert sign_flip_test([])["p"] == 1.0


def test_sign_flip_monte_carlo_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(3)
    diffs = rng.normal(0.3, 1.0, 40)  # (40,) too many cells to enumerate
    out = sign_flip_test(diffs, n_perm=40_000)
    # the permutation distribution of the mean is ≈ normal with sd sqrt(sum d²)/n
    z = abs(diffs.mean()) / (math.sqrt(np.sum(diffs**2)) / diffs.size)
    assert not out["exact"] and out["p"] == pytest.approx(2 * sps.norm.sf(z), abs=0.01)


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.02, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.04, 0.06, 0.06, 0.04 → monotone
    assert holm_adjust([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([]) == []


# ---------------------------------------------------------------- power

def test_paired_t_sample_size_matches_g_power() -> None:
    # G*Power 3, one-sample / matched-pairs t-test, two tails, α = 0.05, power 0.80:
    # d = 0.5 → N = 34 (actual power 0.808), d = 0.8 → 15, d = 0.2 → 199
    assert paired_t_sample_size(0.5, 1.0) == 34
    assert paired_t_sample_size(0.8, 1.0) == 15
    assert paired_t_sample_size(-0.02, 0.1) == 199  # sign and scale do not matter
    assert paired_t_power(34, 0.5) == pytest.approx(0.808, abs=1e-3)
    assert paired_t_power(33, 0.5) < 0.8
    assert paired_t_sample_size(0.0, 1.0) is None and paired_t_sample_size(0.1, 0.0) is None


def test_mcnemar_sample_size_by_hand_and_by_simulation() -> None:
    # Connor (1987): n = (z.975 √ψ + z.8 √(ψ − δ²))² / δ², ψ = 0.15, δ = 0.05
    root = 1.959964 * math.sqrt(0.15) + 0.841621 * math.sqrt(0.15 - 0.05**2)
    assert root**2 / 0.05**2 == pytest.approx(468.57, abs=0.01)
    n = mcnemar_sample_size(0.10, 0.05)
    assert n == 469 and mcnemar_sample_size(0.05, 0.10) == 469
    assert mcnemar_power(n, 0.10, 0.05) == pytest.approx(0.8, abs=2e-3)
    # simulate the (uncorrected) McNemar test on n pairs: it rejects in ~80% of experiments
    rng = np.random.default_rng(0)
    counts = rng.multinomial(n, [0.10, 0.05, 0.85], size=20_000)  # (sims, [b, c, concordant])
    b, c = counts[:, 0], counts[:, 1]
    reject = sps.chi2.sf((b - c) ** 2 / (b + c), 1) < 0.05
    assert reject.mean() == pytest.approx(0.80, abs=0.015)
    assert mcnemar_sample_size(0.1, 0.1) is None


def test_detectable_difference_inverts_the_sample_size() -> None:
    delta = mcnemar_detectable_difference(469, 0.15)
    assert delta is not None and delta == pytest.approx(0.05, abs=2e-4)
    assert mcnemar_detectable_difference(3, 0.01) is None  # even |δ| = ψ is out of reach


def test_power_estimate_is_for_the_pair_unit_test() -> None:
    rng = np.random.default_rng(5)
    shared = rng.random(400) < 0.6  # (P,) pair difficulty both conditions share
    a = np.stack([shared ^ (rng.random(400) < 0.12) for _ in range(3)])  # (3, 400)
    b = np.stack([shared ^ (rng.random(400) < 0.12) for _ in range(3)])
    out = power_estimate(a, b)
    assert out["method"] == pair_unit_test(a, b)["method"]
    assert out["diff"] == pytest.approx(a.mean() - b.mean())
    assert out["test_pairs"] == 400 and out["seeds"] == 3
    assert out["discordance"] == pytest.approx(float((a != b).mean()))
    # the detectable difference is where the stated power reaches 80%
    found = out["detectable_diff"]
    assert found is not None and 0.01 < found < 0.2
    assert stated_power(a, b, found) == pytest.approx(0.8, abs=0.01)
    assert stated_power(a, b, found / 2) < 0.5
    # test pairs needed for the observed difference: enough at that size, not at 0.9 of it
    diff, needed = out["diff"], out["test_pairs_needed"]
    if diff and needed:
        parts = variance_parts(a, b)
        assert pair_unit_power(_at_design(parts, needed), diff) >= 0.8
        assert pair_unit_power(_at_design(parts, int(0.9 * needed)), diff) < 0.8


def test_more_test_pairs_cannot_remove_seed_variance() -> None:
    # every pair alike within a seed, but the seeds disagree: only more seeds help
    a = np.array([[1] * 300 + [0] * 100, [1] * 240 + [0] * 160, [1] * 270 + [0] * 130], bool)
    b = np.array([[1] * 230 + [0] * 170, [1] * 260 + [0] * 140, [1] * 250 + [0] * 150], bool)
    rng = np.random.default_rng(2)
    order = rng.permutation(400)
    out = power_estimate(a[:, order], b[:, order])
    assert out["test_pairs_needed"] is None  # the seed term alone keeps 80% out of reach
    assert out["seeds_needed"] is not None and out["seeds_needed"] > 3


# ---------------------------------------------------------------- comparisons and multiplicity

def _run(seed: int, correct: np.ndarray) -> dict:
    return {"seed": seed, "test_chosen_rewards": correct.astype(float).tolist(),
            "test_rejected_rewards": [0.5] * correct.size}


def test_compare_runs_reports_the_pair_unit_test_and_power() -> None:
    a0, b0 = _pairs(9, 3, 50, 20)
    a1, b1 = _pairs(7, 4, 52, 19)
    comp = compare_runs("clean", [_run(0, a0), _run(1, a1)], "unfiltered",
                        [_run(0, b0), _run(1, b1)])
    want = pair_unit_test(np.stack([a0, a1]), np.stack([b0, b1]))
    assert comp["test"] == want and "pooled" not in comp and "bootstrap" not in comp
    assert f"{format_p(want['p'])}; McNemar p < 0.05 in 0 of 2 seeds" in comp["verdict"]
    assert comp["power"]["test_pairs"] == 82 and comp["power"]["seeds"] == 2
    # the CMH path would have said p = 0.095 here, counting the 82 pairs twice
    assert pooled_paired_test(np.stack([a0, a1]), np.stack([b0, b1]))["p"] < want["p"]
    unpaired = compare_runs("clean", [_run(0, a0)], "unfiltered", [_run(5, b0)])
    assert unpaired["mcnemar"] == [] and unpaired["test"]["seed_design"] == "one seed"


def test_holm_runs_over_every_test_of_the_results() -> None:
    def test(p: float) -> dict:  # a CI excluding 0 exactly when p < 0.05, as the test gives
        return {"p": p, "diff": 0.01, "ci": [0.001, 0.02] if p < 0.05 else [-0.01, 0.03]}

    def comp(p: float) -> dict:
        return {"treated": "t", "baseline": "b", "test": test(p)}

    results = {"comparisons": [comp(0.005), comp(0.04)],
               "dose_response": [{"rank_by": "d", "treatment": "remove",
                                  "points": [{"fraction": 0.1, "comparison": comp(0.03)}],
                                  "curve_test": test(0.02)}],
               "ablation": [{"detector": "x", "reused": True, "comparison": comp(0.5)},
                            {"detector": "y", "reused": False, "comparison": comp(0.2)}]}
    before = copy.deepcopy(results)
    out = correct_for_multiplicity(results)
    assert out["tests"] == 5 and out["p"] == [0.005, 0.04, 0.03, 0.02, 0.2]  # reused x left out
    # sorted 0.005, 0.02, 0.03, 0.04, 0.2 × 5, 4, 3, 2, 1 = 0.025, 0.08, 0.09, 0.08, 0.2
    assert out["p_holm"] == pytest.approx([0.025, 0.09, 0.09, 0.08, 0.2])
    assert out["significant"] == 4 and out["significant_holm"] == 1
    annotated = with_multiplicity(results)
    assert results == before  # issue 28: no statistic writes into what it was given
    assert annotated["multiplicity"] == out and list(annotated)[-1] == "multiplicity"
    assert annotated["comparisons"][0]["p_holm"] == pytest.approx(0.025)
    assert list(annotated["comparisons"][0]) == ["treated", "baseline", "test", "p_holm"]
    assert annotated["dose_response"][0]["curve_test"]["p_holm"] == pytest.approx(0.08)
    assert "p_holm" not in annotated["ablation"][0]["comparison"]
    assert annotated["ablation"][1]["comparison"]["p_holm"] == pytest.approx(0.2)


def test_a_p_whose_own_ci_includes_0_is_not_counted() -> None:
    """Issue 29: '30% vs random' was counted significant after Holm while its CI included 0
    (an older file: CMH p beside a bootstrap CI). A count only counts CIs that exclude 0."""
    old = {"treated": "top 30%", "baseline": "random", "pooled": {"p": 0.001},
           "bootstrap": {"diff": 0.01, "ci": [-0.002, 0.02], "n_boot": 10_000}}
    out = correct_for_multiplicity({"comparisons": [old]})
    assert out["p"] == [0.001] and out["significant"] == out["significant_holm"] == 0
