"""Model-based detectors, proven against injected flips on synthetic data (small, fast sizes).

Full-size figures (synthetic:n=4000,noise=0.2, defaults) are in the module docstring of
rewardlab.flags.detectors.model_based; here n=800 keeps each detector run to seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from rewardlab.data.pairs import PreferencePair
from rewardlab.data.synthetic import read_synthetic
from rewardlab.errors import SelectionError
from rewardlab.experiment.teaching import detector_quality
from rewardlab.flags.detectors import DETECTORS, RULE_DETECTORS, get_detector
from rewardlab.flags.detectors.base import DetectorResult
from rewardlab.flags.detectors.model_based import (
    EnsembleStrength,
    OofMargin,
    _flag_lowest,
    detector_train_config,
    estimate_flip_rate,
    fold_ids,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # tiny bow models on a shared CPU: extra intra-op threads only add contention
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(spec: str) -> tuple[list[PreferencePair], np.ndarray]:
    pairs = read_synthetic(spec, split="train").pairs
    return pairs, np.array([p.meta["flipped"] for p in pairs])


@pytest.fixture(scope="module")
def noisy() -> tuple[list[PreferencePair], np.ndarray]:
    return _train("synthetic:n=800,noise=0.2,seed=0")


@pytest.fixture(scope="module")
def oof(noisy: tuple[list[PreferencePair], np.ndarray]) -> DetectorResult:
    return OofMargin(progress=False).detect(noisy[0])


def test_oof_margin_finds_the_injected_flips(oof: DetectorResult, noisy: tuple) -> None:
    """Acceptance (1), small: data-chosen threshold, scored against the truth."""
    quality = detector_quality(oof.flagged, noisy[1])
    assert quality["precision"] >= 0.85 and quality["recall"] >= 0.7, quality
    # the data estimated the flip rate (20% injected) without seeing the truth
    assert oof.params["estimated_flip_rate"] == pytest.approx(0.2, abs=0.05)
    assert oof.threshold_kind == "data" and oof.threshold is not None


def test_oof_margin_result_is_consistent(oof: DetectorResult) -> None:
    assert oof.detector == "oof_margin" and oof.params["folds"] == 5
    assert oof.params["model"] == "bow" and "progress" not in oof.params
    assert ((oof.scores >= 0) & (oof.scores <= 1)).all()
    np.testing.assert_array_equal(oof.flagged, (oof.scores >= oof.threshold) & (oof.scores > 0.5))
    assert oof.n_flagged <= oof.params["estimated_issues"] + 2  # ties at the threshold only
    assert all(bool(r) == f for r, f in zip(oof.reasons, oof.flagged))
    assert "prefers the rejected reply" in next(r for r in oof.reasons if r)


def test_ensemble_strength_finds_the_injected_flips(noisy: tuple) -> None:
    pairs, truth = noisy
    result = EnsembleStrength(members=3, progress=False).detect(pairs)
    quality = detector_quality(result.flagged, truth)
    assert quality["precision"] >= 0.85 and quality["recall"] >= 0.7, quality
    np.testing.assert_array_equal(result.flagged, result.scores > result.threshold)
    assert result.params["members"] == 3 and result.threshold_kind == "fixed"


def test_clean_data_gets_almost_nothing_flagged() -> None:
    pairs, _ = _train("synthetic:n=400,noise=0,seed=2")
    result = OofMargin(folds=4, progress=False).detect(pairs)
    assert result.n_flagged <= 0.03 * len(pairs)


def test_deterministic_given_seed() -> None:
    pairs, _ = _train("synthetic:n=120,noise=0.2,seed=3")
    a, b = (OofMargin(folds=2, train=detector_train_config(seed=7), progress=False).detect(pairs)
            for _ in range(2))
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.flagged, b.flagged)


def test_estimate_flip_rate_on_mirrored_margins() -> None:
    rng = np.random.default_rng(0)
    clean = rng.normal(3.0, 1.5, size=8000)  # (8000,) margins of correctly labelled pairs
    margins = clean.copy()
    margins[:2000] *= -1  # flipping a label negates its margin: 25% flipped
    rate, cut, confident = estimate_flip_rate(margins)
    assert rate == pytest.approx(0.25, abs=0.02)
    assert cut == pytest.approx(np.median(np.abs(margins))) and confident == 4000
    assert estimate_flip_rate(np.zeros(5))[0] == 0.0  # an untrained model estimates no flips


def test_flag_lowest_never_flags_what_the_model_agrees_with() -> None:
    prob = np.array([0.1, 0.9, 0.3, 0.45, 0.8])
    flags, threshold = _flag_lowest(prob, 10)
    np.testing.assert_array_equal(flags, [True, False, True, True, False])
    flags, threshold = _flag_lowest(prob, 2)
    np.testing.assert_array_equal(flags, [True, False, True, False, False])
    assert threshold == pytest.approx(0.7)
    assert not _flag_lowest(prob, 0)[0].any()


def test_folds_are_balanced_and_seeded() -> None:
    fold = fold_ids(103, 5, seed=0)
    counts = np.bincount(fold)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 103
    np.testing.assert_array_equal(fold, fold_ids(103, 5, seed=0))


def test_registered_as_model_detectors_outside_the_rule_set() -> None:
    for name, cls in (("oof_margin", OofMargin), ("ensemble_strength", EnsembleStrength)):
        assert DETECTORS[name] is cls and cls.kind == "model" and name not in RULE_DETECTORS
    detector = get_detector("oof_margin", folds="3", lr="0.01", model="minilm")
    assert isinstance(detector, OofMargin)
    assert (detector.folds, detector.train.lr, detector.train.model) == (3, 0.01, "minilm")
    assert detector.train == detector_train_config(lr=0.01, model="minilm")


def test_params_record_the_training_settings_flat() -> None:
    """`train` is a TrainConfig, but runs record its settings flat, then the detector's own."""
    assert OofMargin().params == {"model": "bow", "epochs": 1, "batch_size": 8, "lr": 0.0,
                                  "max_length": 256, "seed": 0, "folds": 5}
    params = get_detector("ensemble_strength", members="2", lr="0.01", warmup_ratio="0.1").params
    assert list(params) == ["model", "epochs", "batch_size", "lr", "warmup_ratio", "max_length",
                            "seed", "members"]  # a non-default training setting is recorded too
    assert (params["lr"], params["warmup_ratio"], params["members"]) == (0.01, 0.1, 2)
    with pytest.raises(SelectionError, match="parameter 'epochs' expects int"):
        get_detector("oof_margin", epochs="two")


def test_too_few_pairs_is_a_clear_error(noisy: tuple) -> None:
    with pytest.raises(SelectionError, match="at least 2 pairs per fold"):
        OofMargin(folds=5, progress=False).detect(noisy[0][:9])
    with pytest.raises(SelectionError):
        EnsembleStrength(progress=False).detect([])


def test_any_backbone_works(tmp_path: Path) -> None:
    """A transformer backbone (tiny random BERT dir) goes through the same engine path."""
    from tests._tiny import make_tiny_backbone

    pairs, _ = _train("synthetic:n=24,noise=0.25,seed=4")
    backbone = str(make_tiny_backbone(tmp_path / "tiny"))
    train = detector_train_config(model=backbone, lr=1e-3, max_length=64)
    result = OofMargin(train=train, folds=2, progress=False).detect(pairs)
    assert result.scores.shape == (24,) and result.params["model"] == backbone
    assert np.isfinite(result.scores).all()
