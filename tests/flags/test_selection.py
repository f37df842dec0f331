"""Selection: the random control has clean's size; treatments do what they say; sampling is stratified."""

from __future__ import annotations

from collections import Counter

import pytest

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import SelectionError
from rewardlab.flags.selection import sample_stratified, select_training_pairs


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
