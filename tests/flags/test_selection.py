"""Selection, the one home of "which pairs does a run train on, with which labels": flag sets
(one, several, reviewed-only; SQLite and PostgreSQL), the random control with clean's size,
treatments that do what they say, stratified sampling, the dose-response ranking and its
size-matched control."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from rewardlab.data.pairs import PreferencePair
from rewardlab.data.sources import read_source
from rewardlab.errors import SelectionError
from rewardlab.flags.selection import (
    SOFT_SMOOTHING,
    FlagSpec,
    detector_scores,
    flag_spec,
    flagged_by,
    flagged_ids,
    matched_random,
    sample_stratified,
    select_training_pairs,
)
from rewardlab.store.records import DetectorResult
from rewardlab.store.store import Store


def _run(store: Store, detector: str, flags: list[bool]) -> None:
    ids = [p.example_id or 0 for p in store.load_pairs("syn", split="train")]
    store.save_detector_run("syn", DetectorResult(
        detector, np.arange(len(flags), dtype=float), flags, ["x" if f else "" for f in flags],
        None, "data", {}), ids)


def test_flag_sets_one_several_reviewed_only(store: Store) -> None:
    store.ingest("syn", read_source("synthetic:n=6,seed=0"))
    ids = [p.example_id or 0 for p in store.load_pairs("syn", split="train")]
    _run(store, "a", [True, True, False, False, False, False])
    _run(store, "b", [False, True, True, False, False, False])
    store.save_review("syn", example_id=ids[0], detector="a", verdict="tp", reviewer="ann")
    store.save_review("syn", example_id=ids[1], detector="a", verdict="fp", reviewer="ann")
    assert flagged_ids(store, "syn", "a") == {ids[0], ids[1]}
    assert flagged_ids(store, "syn", ["a", "b"]) == {ids[0], ids[1], ids[2]}
    assert flagged_ids(store, "syn", "reviewed:a") == {ids[0]}  # the confirmed flag only
    assert flagged_ids(store, "syn", FlagSpec("a", reviewed_only=True)) == {ids[0]}
    assert flagged_ids(store, "syn", ["reviewed:a", "b"]) == {ids[0], ids[1], ids[2]}
    assert flagged_by(store, "syn", ["b", FlagSpec("a", reviewed_only=True)]) == {
        "b": {ids[1], ids[2]}, "reviewed:a": {ids[0]}}
    assert detector_scores(store, "syn", "b") == {i: float(k) for k, i in enumerate(ids)}
    assert flag_spec("reviewed: a") == FlagSpec("a", reviewed_only=True)


def test_a_flag_set_whose_detector_has_not_run_is_one_line(store: Store) -> None:
    store.ingest("syn", read_source("synthetic:n=4,seed=0"))
    with pytest.raises(SelectionError, match=r"no detector has run on 'syn' \(ran: none\)"):
        flagged_ids(store, "syn")  # the default clean set
    _run(store, "a", [True, False, False, False])
    with pytest.raises(SelectionError, match=r"detector\(s\) nope have not run on 'syn'; run "
                                             r"`rewardlab flag syn --detectors nope` \(ran: a\)"):
        flagged_ids(store, "syn", "reviewed:nope")
    with pytest.raises(SelectionError, match="have not run on 'syn' \\(ran: a\\)"):
        detector_scores(store, "syn", "nope")
    with pytest.raises(SelectionError, match="needs a detector name"):
        flagged_ids(store, "syn", "reviewed:")
    with pytest.raises(SelectionError, match="no detectors named"):
        flagged_ids(store, "syn", [])


def _pairs(n: int, subsets: tuple[str, ...] = ("a",)) -> list[PreferencePair]:
    return [PreferencePair(i, "train", f"p{i}", f"good{i}", f"bad{i}",
                           subset=subsets[i % len(subsets)], example_id=100 + i) for i in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_control_removes_as_many_pairs_as_clean(seed: int) -> None:
    pairs = _pairs(50)
    flagged = {100 + i for i in (3, 9, 10, 22, 41)}
    clean = select_training_pairs(pairs, flagged, mode="clean", seed=seed)
    rand = select_training_pairs(pairs, flagged, mode="random", seed=seed)
    assert len(clean.pairs) == len(rand.pairs) == 45
    assert not {p.example_id for p in clean.pairs} & flagged
    assert rand.n_removed == clean.n_removed == 5


def test_random_control_depends_on_seed_only() -> None:
    pairs, flagged = _pairs(40), {100, 101, 102, 103}
    ids = lambda s: [p.example_id for p in select_training_pairs(pairs, flagged, mode="random", seed=s).pairs]  # noqa: E731
    assert ids(3) == ids(3)
    assert ids(3) != ids(4)


def test_flip_and_soft_keep_every_pair() -> None:
    pairs, flagged = _pairs(10), {102, 105}
    flip = select_training_pairs(pairs, flagged, mode="clean", treatment="flip")
    assert [p.chosen for p in flip.pairs][2] == "bad2" and flip.pairs[3].chosen == "good3"
    soft = select_training_pairs(pairs, flagged, mode="clean", treatment="soft")
    assert soft.smoothing is not None
    assert [i for i, s in enumerate(soft.smoothing) if s > 0] == [2, 5]


def test_empty_selection_is_an_error() -> None:
    pairs = _pairs(3)
    with pytest.raises(SelectionError, match="empty"):
        select_training_pairs(pairs, {100, 101, 102}, mode="clean")


def test_unknown_mode_names_the_choices() -> None:
    with pytest.raises(SelectionError, match="all, clean, random"):
        select_training_pairs(_pairs(3), set(), mode="best")


def test_stratified_sample_keeps_subset_shares() -> None:
    pairs = _pairs(300, subsets=("a", "a", "b"))  # 200 a, 100 b
    sample = sample_stratified(pairs, 30, seed=0)
    assert Counter(p.subset for p in sample) == {"a": 20, "b": 10}
    assert [p.source_index for p in sample] == sorted(p.source_index for p in sample)
    assert sample_stratified(pairs, 30, seed=0) == sample
    assert sample_stratified(pairs, 1000) == pairs


# ---------------------------------------------------------------- ranking and the matched control


def test_matched_random_treats_the_first_k_of_the_seeds_order_nested_across_k() -> None:
    pairs = _pairs(20)
    small = matched_random(pairs, 3, treatment="remove", seed=5)
    large = matched_random(pairs, 6, treatment="remove", seed=5)
    removed = lambda s: {p.example_id for p in pairs} - {p.example_id for p in s.pairs}  # noqa: E731
    assert (len(small.pairs), small.n_removed, small.mode) == (17, 3, "matched-random")
    assert removed(small) < removed(large) and len(removed(large)) == 6  # nested: the same first 3
    assert removed(matched_random(pairs, 3, treatment="remove", seed=6)) != removed(small)
    soft = matched_random(pairs, 4, treatment="soft", seed=5)
    assert soft.smoothing is not None and len(soft.pairs) == 20
    assert sorted(s for s in soft.smoothing if s) == [SOFT_SMOOTHING] * 4
