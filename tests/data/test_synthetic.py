"""synthetic: exact injected noise, ground truth in meta, clean test split, strict spec parsing."""

from __future__ import annotations

import numpy as np
import pytest

from rewardlab.data.sources import read_source
from rewardlab.data.synthetic import (
    KEYWORDS,
    PROMPT,
    WORD_VALUES,
    SyntheticConfig,
    generate_pairs,
    parse_synthetic_spec,
    quality_of,
    read_synthetic,
)
from rewardlab.errors import SourceError


@pytest.mark.parametrize("n,noise", [(1, 0.0), (10, 0.25), (401, 0.2), (300, 1.0)])
def test_exactly_round_noise_n_train_labels_are_flipped(n: int, noise: float) -> None:
    train, test = generate_pairs(SyntheticConfig(n=n, noise=noise, seed=3))
    assert len(train) == n and len(test) == n // 4
    assert sum(p.meta["flipped"] for p in train) == round(noise * n)
    assert not any(p.meta["flipped"] for p in test)  # the test split is noise-free


@pytest.mark.parametrize("quality", ["mean", "keyword"])
def test_meta_is_the_truth_about_each_side(quality: str) -> None:
    train, test = generate_pairs(SyntheticConfig(n=200, noise=0.3, quality=quality))
    for p in train + test:
        m = p.meta
        assert m["quality_fn"] == quality
        assert m["quality_chosen"] == pytest.approx(quality_of(p.chosen, quality))
        assert m["quality_rejected"] == pytest.approx(quality_of(p.rejected, quality))
        # preferred = higher quality, except where the label was flipped
        assert (m["quality_chosen"] < m["quality_rejected"]) == m["flipped"]


def test_pairs_have_a_clear_quality_gap_and_the_fixed_prompt() -> None:
    train, _ = generate_pairs(SyntheticConfig(n=300, noise=0.0))
    gaps = np.array([p.meta["quality_chosen"] - p.meta["quality_rejected"] for p in train])
    assert gaps.min() >= 0.3  # no near-ties: the task is learnable
    assert {p.prompt for p in train} == {PROMPT} and all(p.prompt_text for p in train)
    assert len({p.chosen for p in train}) > 290  # texts actually vary


def test_deterministic_by_seed_and_test_split_independent_of_n() -> None:
    a_train, a_test = generate_pairs(SyntheticConfig(n=100, seed=1, test_n=30))
    b_train, b_test = generate_pairs(SyntheticConfig(n=100, seed=1, test_n=30))
    assert a_train == b_train and a_test == b_test
    c_train, _ = generate_pairs(SyntheticConfig(n=100, seed=2, test_n=30))
    assert [p.chosen for p in c_train] != [p.chosen for p in a_train]
    _, d_test = generate_pairs(SyntheticConfig(n=500, seed=1, test_n=30))
    assert d_test == a_test  # growing the train set never changes the test pairs


def test_every_word_is_one_minilm_token() -> None:
    from transformers import AutoTokenizer

    from rewardlab.models.backbones import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    ids = tok(list(WORD_VALUES), add_special_tokens=False)["input_ids"]
    assert [w for w, i in zip(WORD_VALUES, ids) if len(i) != 1] == []
    assert KEYWORDS <= set(WORD_VALUES)


def test_read_source_dispatches_and_honours_split_limit_and_test_fraction() -> None:
    result = read_source("synthetic:n=40,noise=0.5,seed=0")
    assert result.read == len(result.pairs) == 50 and result.rejected == []
    assert {p.split for p in result.pairs} == {"train", "test"}
    assert len(read_synthetic("synthetic:n=40", split="test").pairs) == 10
    limited = read_synthetic("synthetic:n=40", limit=7)
    assert [p.split for p in limited.pairs].count("train") == 7
    assert [p.split for p in limited.pairs].count("test") == 7
    assert len(read_synthetic("synthetic:n=40", test_fraction=0.2, split=None).pairs) == 50
    assert len(read_synthetic("synthetic:n=40,test_n=3", test_fraction=0.5).pairs) == 43


def test_spec_defaults_and_values() -> None:
    assert parse_synthetic_spec("synthetic:") == SyntheticConfig()
    cfg = parse_synthetic_spec("synthetic: n=10 , noise=0.1,seed=4,quality=keyword,test_n=0")
    assert cfg == SyntheticConfig(n=10, noise=0.1, seed=4, quality="keyword", test_n=0)
    assert cfg.n_test == 0 and cfg.n_flipped == 1


@pytest.mark.parametrize("spec,words", [
    ("synthetic:size=10", ["size", "n, noise, seed, quality, test_n"]),
    ("synthetic:n", ["'n'", "key=value"]),
    ("synthetic:n=ten", ["n=", "int"]),
    ("synthetic:n=0", ["n=0", ">= 1"]),
    ("synthetic:noise=1.5", ["noise=1.5", "[0, 1]"]),
    ("synthetic:quality=length", ["quality=length", "mean, keyword"]),
    ("synthetic:test_n=-1", ["test_n=-1"]),
])
def test_bad_specs_name_the_key_and_what_is_accepted(spec: str, words: list[str]) -> None:
    with pytest.raises(SourceError) as err:
        read_source(spec)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs", [{"split": "dev"}, {"limit": 0}, {"test_fraction": 1.0}])
def test_bad_options_raise_source_error(kwargs: dict) -> None:
    with pytest.raises(SourceError):
        read_synthetic("synthetic:n=10", **kwargs)
