"""Model-based label-noise detectors: train Bradley-Terry reward models and ask them which labels
they disagree with.

- `oof_margin`: k-fold out-of-fold margins. Every pair is scored by a model that never saw it, so a
  flipped label cannot be memorised away; score = 1 − P(chosen ≻ rejected).
- `ensemble_strength`: K seeds trained on all pairs; the mean margin is the "preference strength",
  the spread across seeds how sure the ensemble is of it.

Both work with any backbone (`bow` by default: seconds on a CPU) and are deterministic given their
seed. Proven against the injected flips of `synthetic:n=4000,noise=0.2` with default settings
(measured, 1 torch thread): oof_margin precision 0.96 / recall 0.97 (808 flagged of 800 flips,
36 s); ensemble_strength 0.98 / 0.96 (48 s); on noise=0 oof_margin flags nothing. Small versions of these
checks run in tests/flags/test_model_based.py.

>>> result = OofMargin(folds=5).detect(train_pairs)            # doctest: +SKIP
>>> result.params["estimated_issues"], result.n_flagged          # doctest: +SKIP
(806, 806)
>>> OofMargin(train=detector_train_config(model="minilm", epochs=2))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import SelectionError
from rewardlab.evaluation.metrics import sigmoid
from rewardlab.flags.detectors.base import RUNTIME, Detector, DetectorResult, reasons_where
from rewardlab.models.names import BOW
from rewardlab.training.train_config import TrainConfig

__all__ = ["OofMargin", "EnsembleStrength", "detector_train_config", "estimate_flip_rate",
           "flag_top", "fold_ids"]

# TrainConfig fields always recorded in a model detector's `params` (any other one is recorded when
# it differs from `detector_train_config()`), so stored runs read as they did before `train` existed.
_RECORDED_TRAIN_FIELDS = ("model", "epochs", "batch_size", "lr", "max_length", "seed")


def fold_ids(n: int, folds: int, *, seed: int) -> np.ndarray:
    """(n,) fold number of each pair: a seeded shuffle dealt round-robin, so sizes differ by ≤ 1."""
    return np.random.default_rng(seed).permutation(n) % folds


def estimate_flip_rate(margins: np.ndarray) -> tuple[float, float, int]:
    """Estimate the fraction of flipped labels from held-out margins → (rate, cut, n_confident).

    The mirror rule: flipping a label negates its margin, so flipped pairs' margins look like clean
    pairs' margins reflected through 0; and a decent model is rarely *confidently* wrong about a
    clean pair. Among the confident pairs (|margin| above `cut`, the median |margin|) the share with
    a negative margin therefore estimates the flip rate. Uses the data alone, never ground truth.

    >>> estimate_flip_rate(np.array([3.0, 2.5, 2.0, 0.1, -0.2, -2.8]))[0]
    0.3333333333333333
    """
    magnitude = np.abs(margins)
    cut = float(np.median(magnitude)) if margins.size else 0.0
    negative = int((margins < -cut).sum())
    positive = int((margins > cut).sum())
    confident = negative + positive
    return (negative / confident if confident else 0.0), cut, confident


def flag_top(score: np.ndarray, eligible: np.ndarray, count: int, *,
             empty_threshold: float) -> tuple[np.ndarray, float]:
    """Flag the `count` highest scores among the `eligible` pairs → (flags, threshold; flagged ⇔
    eligible and score ≥ threshold), `empty_threshold` when there is nothing to flag."""
    candidates = np.sort(score[eligible])[::-1]  # most suspect first
    count = min(count, candidates.size)
    if count == 0:
        return np.zeros(score.shape, dtype=bool), empty_threshold
    threshold = float(candidates[count - 1])
    return (score >= threshold) & eligible, threshold


def _flag_lowest(prob: np.ndarray, count: int) -> tuple[np.ndarray, float]:
    """Flag the `count` pairs with the lowest P(chosen ≻ rejected), but never one the model agrees
    with (P ≥ 0.5) → (flags, threshold on the score 1 − P; flagged ⇔ score ≥ threshold)."""
    return flag_top(1.0 - prob, prob < 0.5, count, empty_threshold=1.0)


def detector_train_config(**overrides: Any) -> TrainConfig:
    """The model detectors' training run: the `bow` backbone (seconds on a CPU) and seed 0, the
    engine's defaults otherwise; `overrides` are TrainConfig fields."""
    return TrainConfig(**{"model": BOW, "seed": 0, **overrides})


@dataclass
class _ModelDetector(Detector):
    """Shared: `train` is how every model is trained; `train.seed` seeds the first one (and folds)."""

    kind = "model"
    train: TrainConfig = field(default_factory=detector_train_config)
    progress: bool = field(default=True, metadata=RUNTIME)

    @property
    def params(self) -> dict[str, Any]:
        """The training settings flattened in TrainConfig order, then the detector's own."""
        default = detector_train_config()
        train = {f.name: getattr(self.train, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name in _RECORDED_TRAIN_FIELDS
                 or getattr(self.train, f.name) != getattr(default, f.name)}
        train["lr"] = train["lr"] or 0.0  # 0.0 = the backbone's default, as runs have recorded it
        return {**train, **{k: v for k, v in super().params.items() if k != "train"}}

    def _train(self, pairs: Sequence[PreferencePair], *, seed: int) -> Any:
        """A trained `RewardModel` (the engine's, with this detector's `train` settings)."""
        from rewardlab.training.loop import train_reward_model  # lazy: torch only when needed

        config = dataclasses.replace(self.train, seed=seed)
        return train_reward_model(pairs, config=config, progress=False).model

    def _margins(self, model: Any, pairs: Sequence[PreferencePair]) -> np.ndarray:
        chosen, rejected = model.score_pairs(pairs)  # (M,), (M,)
        return np.asarray(chosen, dtype=np.float64) - np.asarray(rejected, dtype=np.float64)


@dataclass
class OofMargin(_ModelDetector):
    """k-fold out-of-fold Bradley-Terry margins; flags the pairs the held-out model disagrees with.

    score = 1 − P(chosen ≻ rejected) from the model trained on the other folds. Threshold from the
    data (`estimate_flip_rate`): estimate the flip rate ρ̂ from the confident out-of-fold margins,
    then flag the round(ρ̂·N) pairs with the lowest P, never one with P ≥ 0.5 (cleanlab's
    prune-by-noise-rate, with the noise rate estimated from the margins' mirror symmetry).
    """

    name = "oof_margin"
    description = "an out-of-fold reward model confidently prefers the rejected reply"
    folds: int = 5

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        n = len(train)
        if self.folds < 2 or n < 2 * self.folds:
            raise SelectionError(f"oof_margin needs folds >= 2 and at least 2 pairs per fold "
                                 f"(folds={self.folds}, {n} train pairs)")
        fold = fold_ids(n, self.folds, seed=self.train.seed)  # (N,)
        margins = np.zeros(n)  # (N,) each filled by the model that did not train on it
        for k in tqdm(range(self.folds), desc="oof_margin folds", unit="fold",
                      disable=not self.progress):
            held = np.flatnonzero(fold == k)
            model = self._train([train[int(i)] for i in np.flatnonzero(fold != k)],
                                seed=self.train.seed + k)
            margins[held] = self._margins(model, [train[int(i)] for i in held])
        return self._result(margins, fold)

    def _result(self, margins: np.ndarray, fold: np.ndarray) -> DetectorResult:
        prob = sigmoid(margins)  # (N,) out-of-fold P(chosen ≻ rejected)
        rate, cut, confident = estimate_flip_rate(margins)
        estimated = round(rate * len(margins))
        flagged, threshold = _flag_lowest(prob, estimated)

        def reason(i: int) -> str:
            return (f"out-of-fold model (fold {fold[i]}) prefers the rejected reply: "
                    f"P(chosen better) = {prob[i]:.2f}, margin {margins[i]:+.2f}; "
                    f"estimated flip rate {rate:.1%}")

        result = self.result(1.0 - prob, flagged, reasons_where(flagged, reason),
                             threshold=threshold, threshold_kind="data")
        result.params.update({"rule": "mirror flip-rate estimate, flag the lowest P(chosen)",
                              "estimated_flip_rate": rate, "estimated_issues": estimated,
                              "confidence_cut": cut, "n_confident": confident})
        return result


@dataclass
class EnsembleStrength(_ModelDetector):
    """K reward models (seeds train.seed…train.seed+K−1) on all train pairs; per-pair mean ± std of
    the margin.

    score = −(mean + std): the rejected reply's lead even at the ensemble's most favourable view of
    the chosen one. Flagged when score > 0 (fixed threshold 0): the ensemble prefers the rejected
    reply by more than its own seed-to-seed spread. In-sample, so a backbone that memorises its
    training pairs (a transformer over several epochs) hides flips that `oof_margin` still finds.
    """

    name = "ensemble_strength"
    description = "an ensemble of reward models trained on all pairs prefers the rejected reply"
    members: int = 5

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        if self.members < 1 or not train:
            raise SelectionError(f"ensemble_strength needs members >= 1 and train pairs "
                                 f"(members={self.members}, {len(train)} train pairs)")
        margins = np.stack([  # (K, N)
            self._margins(self._train(train, seed=self.train.seed + k), train)
            for k in tqdm(range(self.members), desc="ensemble_strength members", unit="model",
                          disable=not self.progress)])
        mean, std = margins.mean(axis=0), margins.std(axis=0)  # (N,), (N,)
        score = -(mean + std)  # (N,)
        flagged = score > 0.0

        def reason(i: int) -> str:
            return (f"ensemble of {self.members} prefers the rejected reply: margin "
                    f"{mean[i]:+.2f} ± {std[i]:.2f} (mean ± std over seeds)")

        result = self.result(score, flagged, reasons_where(flagged, reason),
                             threshold=0.0, threshold_kind="fixed")
        result.params.update({"rule": "mean + std of margin < 0",
                              "mean_margin": float(mean.mean()), "mean_std": float(std.mean())})
        return result
