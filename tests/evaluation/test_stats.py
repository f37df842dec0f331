"""Paired statistics and verdicts against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from rewardlab.evaluation.crossed import accuracy_interval, pair_unit_test
from rewardlab.evaluation.metrics import preference_metrics
from rewardlab.evaluation.stats import (
    compare_runs,
    mcnemar_exact,
    mean_ci,
    notebook_table,
    overall_verdict,
    paired_bootstrap_diff,
    summarize_runs,
    verdict_sentence,
)


def _table(b: int, c: int, both: int = 5, neither: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Right/wrong vectors with b pairs only A got right and c pairs only B got right."""
    a = np.array([1] * b + [0] * c + [1] * both + [0] * neither, dtype=bool)
    bb = np.array([0] * b + [1] * c + [1] * both + [0] * neither, dtype=bool)
    return a, bb


# ---------------------------------------------------------------- McNemar

def test_mcnemar_known_table() -> None:
    a, b = _table(10, 2)
    expected = 2 * sum(math.comb(12, k) for k in range(3)) / 2**12  # 158/4096 = 0.0386
    out = mcnemar_exact(a, b)
    assert out == {"b": 10, "c": 2, "n_discordant": 12, "p": pytest.approx(expected)}
    assert expected == pytest.approx(0.03857, abs=1e-5)
    assert mcnemar_exact(b, a)["p"] == pytest.approx(expected)  # symmetric


def test_mcnemar_no_evidence_gives_p_one() -> None:
    a, b = _table(0, 0)
    assert mcnemar_exact(a, b) == {"b": 0, "c": 0, "n_discordant": 0, "p": 1.0}
    assert mcnemar_exact(*_table(4, 4))["p"] == 1.0


# ---------------------------------------------------------------- bootstrap

def test_bootstrap_identical_and_dominant() -> None:
    v = np.array([1, 0, 1, 1, 0], dtype=bool)
    assert paired_bootstrap_diff(v, v, n_boot=500) == {"diff": 0.0, "ci": [0.0, 0.0],
                                                       "n_boot": 500}
    ones, zeros = np.ones(20, bool), np.zeros(20, bool)
    assert paired_bootstrap_diff(ones, zeros, n_boot=500) == {"diff": 1.0, "ci": [1.0, 1.0],
                                                              "n_boot": 500}


def test_bootstrap_ci_contains_or_excludes_zero() -> None:
    a, b = _table(2, 2, both=100, neither=50)  # one-for-one disagreements: no signal
    out = paired_bootstrap_diff(a, b, n_boot=2000)
    assert out["diff"] == 0.0 and out["ci"][0] < 0 < out["ci"][1]
    a, b = _table(40, 5, both=100, neither=50)  # A wins 40 disagreements, loses 5
    out = paired_bootstrap_diff(a, b, n_boot=2000)
    assert out["diff"] == pytest.approx(35 / 195) and out["ci"][0] > 0


def test_bootstrap_matches_normal_approximation() -> None:
    a, b = _table(60, 30, both=300, neither=110)
    d = a.astype(float) - b.astype(float)
    half = 1.96 * d.std(ddof=0) / math.sqrt(d.size)
    out = paired_bootstrap_diff(a, b, n_boot=10_000, seed=1)
    assert out["ci"] == pytest.approx([d.mean() - half, d.mean() + half], abs=0.006)
    assert paired_bootstrap_diff(a, b, n_boot=300, seed=7) == paired_bootstrap_diff(
        a, b, n_boot=300, seed=7)  # seeded: reproducible


def test_bootstrap_pools_seeds_with_shared_indices() -> None:
    # Each pair is right in exactly one of the two seeds, so every replicate that resamples the
    # same pairs for both seeds averages to exactly 0.5; independent resampling would not.
    a = np.array([[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]], dtype=bool)
    b = np.zeros((2, 6), dtype=bool)
    assert paired_bootstrap_diff(a, b, n_boot=1000) == {"diff": 0.5, "ci": [0.5, 0.5],
                                                        "n_boot": 1000}


# ---------------------------------------------------------------- the pair-unit test

def test_pair_unit_test_without_seed_scatter_is_the_t_test_over_pairs() -> None:
    a = np.array([[1, 1, 1, 0, 1, 1], [1, 1, 0, 1, 1, 1]], bool)
    b = np.array([[0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 1, 0]], bool)
    out = pair_unit_test(a, b)
    # per pair over the seeds: [1, .5, 0, .5, 0, 1], mean .5, variance 0.2; both seeds +3/6
    d = np.array([1, 0.5, 0, 0.5, 0, 1])
    assert out["diff"] == 0.5 and out["var_pairs"] == pytest.approx(0.2 / 6)
    assert out["var_seeds"] == 0.0 and out["df"] == pytest.approx(5)
    assert out["p"] == pytest.approx(float(sps.ttest_1samp(d, 0.0).pvalue))
    half = sps.t.ppf(0.975, 5) * math.sqrt(0.2 / 6)
    assert out["ci"] == pytest.approx([0.5 - half, 0.5 + half])
    assert out["seed_design"] == "paired by seed" and out["seeds"] == [2, 2]


def test_pair_unit_test_adds_the_seeds_scatter_with_satterthwaite_df() -> None:
    # a − b = [[1, 1, 0, 1], [0, 0, −1, 0]]: seed 0 is +3/4, seed 1 −1/4, no seed × pair residual
    a = np.array([[1, 1, 0, 1], [0, 0, 0, 0]], bool)
    b = np.array([[0, 0, 0, 0], [0, 0, 1, 0]], bool)
    out = pair_unit_test(a, b)
    # pairs: d = [.5, .5, −.5, .5], Var_p = 0.25 → 0.25 / 4; seeds: MS_seed = 4 · 0.5 = 2,
    # MS_res = 0 → (2 − 0) / (2 · 4) = 0.25. Satterthwaite: V² / (0.0625² / 3 + 0.25² / 1)
    var = 0.0625 + 0.25
    df = var**2 / (0.0625**2 / 3 + 0.25**2)
    assert (out["var_pairs"], out["var_seeds"]) == pytest.approx((0.0625, 0.25))
    assert out["df"] == pytest.approx(df) and df < 2  # the two seeds disagree: few df
    assert out["p"] == pytest.approx(2 * sps.t.sf(0.25 / math.sqrt(var), df))
    assert out["seed_check_p"] is None  # no residual to compare the seeds with
    # the test over pairs alone would say p ≈ 0.39; with the seeds' scatter, far less sure
    assert out["p"] > 0.6


def test_pair_unit_test_edges_and_independent_seeds() -> None:
    v = np.array([[1, 0, 1, 1, 0]], bool)
    assert pair_unit_test(v, v)["p"] == 1.0 and pair_unit_test(v, v)["ci"] == [0.0, 0.0]
    ones, zeros = np.ones((2, 20), bool), np.zeros((2, 20), bool)
    assert pair_unit_test(ones, zeros)["ci"] == [1.0, 1.0] and pair_unit_test(ones, zeros)["p"] == 0
    assert pair_unit_test(v, ~v)["seed_design"] == "one seed"
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 300)) < 0.6, rng.random((2, 300)) < 0.55  # other seeds, other counts
    out = pair_unit_test(a, b, paired=False)
    assert out["seed_design"] == "independent seeds" and out["seeds"] == [3, 2]
    assert out["diff"] == pytest.approx(a.mean() - b.mean())
    d = a.mean(axis=0) - b.mean(axis=0)
    assert out["var_pairs"] == pytest.approx(d.var(ddof=1) / 300)


def test_accuracy_interval_has_both_terms() -> None:
    assert accuracy_interval(np.ones((2, 5), bool)) == (1.0, 1.0)
    rng = np.random.default_rng(1)
    same = np.tile(rng.random(400) < 0.6, (3, 1))  # (3, 400) seeds that agree on every pair
    lo, hi = accuracy_interval(same)
    p = same.mean()
    assert (hi - lo) / 2 == pytest.approx(1.966 * math.sqrt(p * (1 - p) / 400), rel=0.01)
    shifted = same.copy()
    shifted[0, :150] = True  # one seed gets ~60 more pairs right: seed scatter, wider interval
    lo2, hi2 = accuracy_interval(shifted)
    assert hi2 - lo2 > 2 * (hi - lo)


# ---------------------------------------------------------------- mean_ci

def test_mean_ci_matches_hand_formula() -> None:
    t_975_df2 = 4.302652729911275  # Student t quantile, 2 degrees of freedom (table value 4.303)
    mean, std, lo, hi = mean_ci([0.60, 0.62, 0.64])
    half = t_975_df2 * 0.02 / math.sqrt(3)
    assert (mean, std) == pytest.approx((0.62, 0.02))
    assert (lo, hi) == pytest.approx((0.62 - half, 0.62 + half))
    assert mean_ci([0.7]) == (0.7, 0.0, 0.7, 0.7)
    with pytest.raises(ValueError):
        mean_ci([])


# ---------------------------------------------------------------- verdict sentences

@pytest.mark.parametrize("diff, ci", [(0.05, (-0.001, 0.1)), (0.0, (0.0, 0.02)),
                                      (-0.03, (-0.06, 0.0)), (0.2, (-0.01, 0.41))])
def test_verdict_never_overstates(diff: float, ci: tuple[float, float]) -> None:
    text = verdict_sentence("clean", "unfiltered", diff=diff, ci=ci, p_values=[0.001, 0.002])
    assert "no detectable difference" in text
    assert "better" not in text and "worse" not in text


def test_verdict_direction_and_numbers() -> None:
    up = verdict_sentence("clean", "unfiltered", diff=0.034, ci=(0.012, 0.055), p=0.004,
                          p_values=[0.01, 0.2])
    assert up == ("clean is better than unfiltered by 3.4 points (95% CI +1.2 to +5.5, p = 0.004; "
                  "McNemar p < 0.05 in 1 of 2 seeds).")
    down = verdict_sentence("flip", "random", diff=-0.02, ci=(-0.03, -0.01), p_values=[0.04])
    assert down.startswith("flip is worse than random by 2.0 points") and "1 of 1 seed)" in down


# ---------------------------------------------------------------- run-level helpers

def _run(seed: int, correct: np.ndarray, *, train_pairs: int = 100) -> dict:
    chosen = np.where(correct, 1.0, 0.0)
    rejected = np.full(correct.size, 0.5)
    lengths = np.arange(correct.size) + 10
    test = preference_metrics(chosen, rejected, chosen_lengths=lengths, rejected_lengths=lengths,
                              subsets=["s"] * correct.size)
    return {"seed": seed, "train_pairs": train_pairs, "train_loss": 0.6 + seed / 100,
            "train_accuracy": 0.7, "test": test, "test_chosen_rewards": chosen.tolist(),
            "test_rejected_rewards": rejected.tolist()}


def _runs(b: int, c: int, seeds=(0, 1), **kw) -> tuple[list[dict], list[dict]]:
    a, bb = _table(b, c, both=120, neither=60)
    return [_run(s, a, **kw) for s in seeds], [_run(s, bb) for s in reversed(seeds)]


def test_compare_runs_pairs_by_seed() -> None:
    treated, baseline = _runs(10, 2)
    comp = compare_runs("clean", treated, "unfiltered", baseline)
    assert [m["seed"] for m in comp["mcnemar"]] == [0, 1]
    assert comp["mcnemar"][0]["b"] == 10 and comp["mcnemar"][0]["c"] == 2
    assert comp["test"]["diff"] == pytest.approx(8 / 192)
    assert comp["verdict"].startswith("clean is better than unfiltered")
    assert "2 of 2 seeds" in comp["verdict"]


def test_summarize_runs_and_notebook_table() -> None:
    treated, _ = _runs(10, 2, seeds=(0, 1, 2), train_pairs=90)
    s = summarize_runs(treated)
    assert s["accuracy_mean"] == pytest.approx(130 / 192) and s["accuracy_std"] == 0.0
    # identical seeds: no seed spread, yet the interval over test pairs keeps the test-set width
    lo, hi = s["accuracy_ci"]
    assert s["accuracy_ci_kind"].startswith("t over test pairs") and s["train_pairs"] == 90
    assert lo < 130 / 192 < hi and (hi - lo) / 2 == pytest.approx(
        1.96 * (130 / 192 * 62 / 192 / 192) ** 0.5, rel=0.15)
    bare = [{k: v for k, v in r.items() if k != "test_chosen_rewards"} for r in treated[:1]]
    one = summarize_runs(bare)  # no per-pair rewards: the one run's Wilson interval
    assert one["accuracy_ci_kind"].startswith("Wilson")
    assert one["accuracy_ci"][0] < one["accuracy_mean"] < one["accuracy_ci"][1]
    row = notebook_table({"clean": {"runs": treated}})[0]
    assert row == pytest.approx({
        "condition": "clean", "training_examples": 90, "train_accuracy": 0.7, "train_loss": 0.61,
        "test_accuracy": 130 / 192, "correct": 130, "total": 192,
        "avg_reward_gap": 130 / 192 - 0.5})  # rewards are 1/0 vs 0.5: gap = accuracy - 0.5


def _results(clean_vs_unf: tuple[int, int], clean_vs_rand: tuple[int, int], **teaching) -> dict:
    clean, unf = _runs(*clean_vs_unf)
    clean2, rand = _runs(*clean_vs_rand)
    conds = {"unfiltered": unf, "clean-remove": clean, "random": rand}
    results = {"config": {"seeds": [0, 1]}, "data": {"test": {"pairs": 192}},
               "conditions": {k: {"runs": v, "summary": summarize_runs(v)}
                              for k, v in conds.items()},
               "comparisons": [compare_runs("clean-remove", clean, "unfiltered", unf),
                               compare_runs("clean-remove", clean2, "random", rand)]}
    if teaching:
        results["teaching"] = teaching
    return results


def test_overall_verdict_cleaning_beats_control() -> None:
    text = overall_verdict(_results((30, 2), (25, 3)))
    assert text.startswith("Yes") and "better data from less data" in text
    assert "which pairs were cleaned" in text


def test_overall_verdict_gain_explained_by_less_data() -> None:
    text = overall_verdict(_results((30, 2), (3, 3)))
    assert text.startswith("Yes") and "cannot tell cleaner data from merely less data" in text


def test_overall_verdict_no_difference_never_says_yes() -> None:
    text = overall_verdict(_results((3, 3), (2, 2), noise=0.2, recovered_fraction=0.8))
    assert text.startswith("No evidence that it does") and "better than" not in text
    assert "intervals are about ±" in text and "2 seeds and 192 test pairs" in text
    assert "20% of labels flipped" in text
    assert "recovered an estimated 80% of the accuracy lost" in text
