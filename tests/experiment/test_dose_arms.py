"""Dose-response and ablation arms lay out fractions, detectors and seeds; which pairs each arm
treats, and how, comes from `flags.selection` (the ranking, the matched random control, the
clean selection of a detector's own flags)."""

from __future__ import annotations

from rewardlab.data.pairs import PreferencePair
from rewardlab.experiment.dose_arms import ablation_arms, dose_arms
from rewardlab.flags.selection import matched_random, rank_pairs, select_training_pairs


def _pairs(n: int) -> list[PreferencePair]:
    return [PreferencePair(i, "train", f"p{i}", f"good{i}", f"bad{i}", example_id=100 + i)
            for i in range(n)]


def test_dose_and_ablation_arms_choose_their_pairs_through_selection() -> None:
    pairs = _pairs(20)
    scores = {100 + i: float(i) for i in range(20)}  # the last pairs are the most suspect
    assert rank_pairs(pairs, scores)[:4] == [19, 18, 17, 16]
    det, rand = dose_arms(pairs, scores, rank_by="s", treatment="flip", fractions=[0.2],
                          seeds=[0, 1])
    assert [p.chosen for p in det.selections[0].pairs[16:]] == [f"bad{i}" for i in range(16, 20)]
    for seed in (0, 1):  # the control arm is matched_random's, seed by seed
        assert rand.selections[seed] == matched_random(pairs, 4, treatment="flip", seed=seed)
    own = ablation_arms(pairs, {"a": {103, 107}, "b": {101}}, treatment="remove", seeds=[0],
                        conditions=["unfiltered"])
    assert [(a.tag, a.arm) for a in own] == [("ablation-a", "clean"), ("ablation-a-random", "random"),
                                             ("ablation-b", "clean"), ("ablation-b-random", "random")]
    assert own[0].selections[0] == select_training_pairs(pairs, {103, 107}, mode="clean")
    assert (own[0].selections[0].describe(), own[1].selections[0].n_removed) == (
        "2 flagged pairs removed", 2)
