"""Paired statistics and verdicts against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

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
    up = verdict_sentence("clean", "unfiltered", diff=0.034, ci=(0.012, 0.055),
                          p_values=[0.01, 0.2])
    assert up == ("clean is better than unfiltered by 3.4 points (95% CI +1.2 to +5.5; "
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
    comp = compare_runs("clean", treated, "unfiltered", baseline, n_boot=500)
    assert [m["seed"] for m in comp["mcnemar"]] == [0, 1]
    assert comp["mcnemar"][0]["b"] == 10 and comp["mcnemar"][0]["c"] == 2
    assert comp["bootstrap"]["diff"] == pytest.approx(8 / 192)
    assert comp["verdict"].startswith("clean is better than unfiltered")
    assert "2 of 2 seeds" in comp["verdict"]


def test_summarize_runs_and_notebook_table() -> None:
    treated, _ = _runs(10, 2, seeds=(0, 1, 2), train_pairs=90)
    s = summarize_runs(treated)
    assert s["accuracy_mean"] == pytest.approx(130 / 192) and s["accuracy_std"] == 0.0
    # identical seeds: no seed spread, yet the bootstrap over test pairs keeps the test-set width
    lo, hi = s["accuracy_ci"]
    assert s["accuracy_ci_kind"].startswith("bootstrap") and s["train_pairs"] == 90
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
               "comparisons": [compare_runs("clean-remove", clean, "unfiltered", unf, n_boot=500),
                               compare_runs("clean-remove", clean2, "random", rand, n_boot=500)]}
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
