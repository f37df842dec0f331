"""How much each model learned: training loss against ln 2, margins, accuracy over the length rule.

A comparison of cleaning treatments only means something between models that learned: a
Bradley-Terry model that guesses has loss ln 2 ≈ 0.693 and margins near 0, and two of them differ
by noise whatever data they saw. The yardstick for accuracy is the stronger of the two trivial
length rules on the test pairs ("always prefer the longer" or "always prefer the shorter"): on
HH-RLHF harmless-base the shorter reply is chosen more often, so "prefer the longer" would make any
model look far better than it is.

The criterion (`BARELY_TRAINED_NATS`): a condition *barely trained* when its training loss (the
last epoch's mean, averaged over seeds) is less than 0.020 nats below ln 2. That is the loss of a
calibrated model that is 60% sure of every pair, H(0.6) = 0.673: a model above it has not yet
learned to prefer either reply with even 60/40 confidence. Reads results dicts (schema:
docs/architecture.md), so it works on any results.json.

>>> round(BARELY_TRAINED_NATS, 4)
0.0201
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

__all__ = ["LN2", "BARELY_TRAINED_NATS", "LengthBaseline", "Learning", "stronger_length_baseline",
           "condition_learning", "learning_by_condition", "barely_trained"]

LN2 = math.log(2)  # the Bradley-Terry loss of a model that gives every pair a margin of 0
# ln 2 − H(0.6): the loss drop of a calibrated model that is 60% sure of every pair
BARELY_TRAINED_NATS = LN2 + 0.6 * math.log(0.6) + 0.4 * math.log(0.4)


class LengthBaseline(TypedDict):
    """The stronger of "always prefer the longer" and "always prefer the shorter" on the test pairs."""

    rule: str  # "longer" | "shorter"
    accuracy: float


class Learning(TypedDict):
    """What one condition's models learned, means over seeds; None where no run had the value."""

    train_loss: float | None  # the last epoch's mean Bradley-Terry loss
    loss_drop: float | None  # ln 2 − train_loss, nats (> 0: better than guessing)
    mean_margin: float | None  # mean r(chosen) − r(rejected) on the test pairs
    test_nll: float | None
    accuracy: float | None
    over_length_baseline: float | None  # accuracy − the stronger length rule's (a fraction)
    barely_trained: bool  # loss_drop < BARELY_TRAINED_NATS (False when unknown)


def stronger_length_baseline(test: Mapping[str, Any]) -> LengthBaseline | None:
    """The better length rule on one run's test metrics (`preference_metrics`); None without one.

    >>> stronger_length_baseline({"longer_wins_accuracy": 0.423, "shorter_wins_accuracy": 0.577})
    {'rule': 'shorter', 'accuracy': 0.577}
    """
    longer, shorter = test.get("longer_wins_accuracy"), test.get("shorter_wins_accuracy")
    if longer is None or shorter is None:
        return None
    if shorter > longer:
        return {"rule": "shorter", "accuracy": float(shorter)}
    return {"rule": "longer", "accuracy": float(longer)}


def _mean(values: Sequence[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def condition_learning(runs: Sequence[Mapping[str, Any]],
                       baseline: LengthBaseline | None) -> Learning:
    """One condition's `Learning` from its runs (one per seed)."""
    loss = _mean([r.get("train_loss") for r in runs])
    accuracy = _mean([r.get("test", {}).get("accuracy") for r in runs])
    drop = None if loss is None else LN2 - loss
    return {
        "train_loss": loss, "loss_drop": drop,
        "mean_margin": _mean([r.get("test", {}).get("reward_gap_mean") for r in runs]),
        "test_nll": _mean([r.get("test", {}).get("nll") for r in runs]),
        "accuracy": accuracy,
        "over_length_baseline": (None if accuracy is None or baseline is None
                                 else accuracy - baseline["accuracy"]),
        "barely_trained": drop is not None and drop < BARELY_TRAINED_NATS,
    }


def learning_by_condition(results: Mapping[str, Any]
                          ) -> tuple[dict[str, Learning], LengthBaseline | None]:
    """({condition: Learning}, the stronger length rule): every model of a results dict."""
    conditions: Mapping[str, Any] = results.get("conditions", {})
    first = next((r for c in conditions.values() for r in c.get("runs", [])), None)
    baseline = stronger_length_baseline(first["test"]) if first else None
    return ({name: condition_learning(c.get("runs", []), baseline)
             for name, c in conditions.items()}, baseline)


def barely_trained(learning: Mapping[str, Learning]) -> list[str]:
    """The conditions whose models barely trained, in order."""
    return [name for name, ln in learning.items() if ln["barely_trained"]]
