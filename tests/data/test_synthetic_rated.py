"""data/synthetic.py `k=K,ties=T` and data/rated.py: today's pair specs are unchanged (texts
recorded from the code before the change), the tie share is the one asked for, ranks and tie labels
follow the true qualities."""

from __future__ import annotations

import itertools

import pytest

from rewardlab.data.rated import decided_pairs
from rewardlab.data.synthetic import parse_synthetic_spec, quality_of, read_synthetic, read_synthetic_rated
from rewardlab.errors import SourceError

# (spec, row, split, chosen, rejected, flipped) printed by the unmodified synthetic.py (2026-12-06)
BEFORE = [
    ("synthetic:n=6,noise=0.5,seed=3", 0, "train", "lazy unsafe harmful cruel false insulting sloppy",
     "cruel wrong cruel rude confusing coffee misleading", True),
    ("synthetic:n=6,noise=0.5,seed=3", 6, "test",
     "market honest misleading window careless misleading harmful rude",
     "cruel false rude train hostile rude boring sloppy careless misleading", False),
    ("synthetic:n=4,quality=keyword,seed=1", 0, "train",
     "thoughtful precise honest careful accurate clear confusing thoughtful thorough letter planet rude",
     "careful planet patient hostile city hostile careless honest paper useless respectful", False),
    ("synthetic:n=4,quality=keyword,seed=1", 4, "test",
     "rude respectful music accurate precise wrong planet music",
     "harmful useless useless harmful cruel cruel morning hostile garden misleading cruel misleading", False),
]


@pytest.mark.parametrize(("spec", "row", "split", "chosen", "rejected", "flipped"), BEFORE)
def test_todays_pair_specs_give_exactly_todays_pairs(spec, row, split, chosen, rejected, flipped):
    pair = read_synthetic(spec).pairs[row]
    got = (pair.split, pair.chosen, pair.rejected, pair.meta["flipped"])
    assert got == (split, chosen, rejected, flipped)


def test_test_fraction_still_sizes_the_test_split_and_keeps_k():
    assert read_synthetic("synthetic:n=8", test_fraction=0.5).read == 16
    with pytest.raises(SourceError, match="read_synthetic_rated"):  # k survived the resizing
        read_synthetic("synthetic:n=8,k=3", test_fraction=0.5)


@pytest.mark.parametrize("share", [0.1, 0.2, 0.35])
def test_the_tie_share_is_the_one_asked_for(share):
    data = read_synthetic_rated(f"synthetic:n=1500,k=4,ties={share}", split="train")
    pairs = 1500 * 6
    assert data.n_ties / pairs == pytest.approx(share, abs=0.02)
    assert data.tie_band is not None and data.tie_band > 0


def test_rated_prompts_carry_true_scores_ranks_and_ties_by_the_band():
    data = read_synthetic_rated("synthetic:n=40,k=4,ties=0.2,seed=2")
    assert len(data.prompts) == 40 + 10 and data.n_responses == 200
    assert [p.split for p in data.prompts].count("test") == 10
    band = data.tie_band
    for rated in data.prompts:
        assert rated.scores == pytest.approx([quality_of(r) for r in rated.responses])
        best_first = sorted(range(4), key=lambda k: rated.ranks[k])
        assert [rated.scores[k] for k in best_first] == sorted(rated.scores, reverse=True)
        expected_ties = [(i, j) for i, j in itertools.combinations(range(4), 2)
                         if abs(rated.scores[i] - rated.scores[j]) < band]
        assert list(rated.ties) == expected_ties
        for better, worse in decided_pairs(rated):
            assert rated.scores[better] >= rated.scores[worse]
        assert len(decided_pairs(rated)) == 6 - len(rated.ties)


def test_rated_specs_are_seeded_and_ties_zero_means_no_ties():
    first = read_synthetic_rated("synthetic:n=5,k=3,seed=4").prompts
    again = read_synthetic_rated("synthetic:n=5,k=3,seed=4").prompts
    assert [p.responses for p in first] == [p.responses for p in again]
    assert all(p.ties == () for p in first)


@pytest.mark.parametrize(("spec", "message"), [
    ("synthetic:n=10,ties=0.2", "ties= needs k="),
    ("synthetic:n=10,k=4,noise=0.1", "noise= does not apply with k="),
    ("synthetic:n=10,k=1", "k=1 must be >= 2"),
    ("synthetic:n=10,k=3,ties=1.0", "ties=1.0 must be in [0, 1)"),
    ("synthetic:n=10,k=3,ties=0.2,quality=keyword", "ties= needs quality=mean"),
])
def test_bad_rated_specs_are_one_line_source_errors(spec, message):
    with pytest.raises(SourceError, match=message.replace("[", r"\[").replace(")", r"\)")):
        parse_synthetic_spec(spec)


def test_pair_readers_refuse_rated_specs_until_ingest_takes_them():
    with pytest.raises(SourceError, match="read_synthetic_rated"):
        read_synthetic("synthetic:n=10,k=4")
    with pytest.raises(SourceError, match="needs k="):
        read_synthetic_rated("synthetic:n=10")
