"""Evaluate a reward model on preference pairs: metrics plus the per-pair rewards behind them.

The per-pair rewards are kept because the experiment's paired tests (McNemar, paired bootstrap)
compare two models pair by pair on the same test set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import ModelError
from rewardlab.evaluation.metrics import PreferenceMetrics
from rewardlab.models.reward_model import RewardModel

__all__ = ["EvalMetrics", "EvalResult", "evaluate_reward_model"]


class EvalMetrics(PreferenceMetrics):
    """`preference_metrics(...)` plus how many sequences the tokenizer cut."""

    n_truncated: int  # pairs with a side cut at max_length
    n_response_truncated: int  # pairs whose cut reached into a response
    n_identical: int  # pairs whose two sides are the same tokens: kept, a tie (= wrong)


@dataclass
class EvalResult:
    """`metrics` is `preference_metrics(...)` plus `n_truncated`; rewards are (N,) in pair order.

    Parameters
    ----------
    metrics : EvalMetrics
        Accuracy (ties count as wrong) with its Wilson 95% CI, reward gap, NLL, ECE, reliability
        bins, accuracy by subset, length statistics, and the truncation and tie counts.
    chosen_rewards, rejected_rewards : np.ndarray
        (N,) rewards of each pair's two sides, in the order of the pairs given: every paired test
        compares two models pair by pair through them.
    """

    metrics: EvalMetrics
    chosen_rewards: np.ndarray
    rejected_rewards: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: the model ranks chosen above rejected (ties are wrong)."""
        return self.chosen_rewards > self.rejected_rewards


def evaluate_reward_model(model: RewardModel, pairs: Sequence[PreferencePair], *,
                          batch_size: int | None = None, progress: bool = True) -> EvalResult:
    """Score both sides of every pair (length-sorted batches, inference mode) and measure.

    Parameters
    ----------
    model : RewardModel
        The model to evaluate (`RewardModel.load(dir)` or `TrainResult.model`).
    pairs : sequence of PreferencePair
        The test pairs, at least one; every pair is kept, ties and truncated ones included, so
        every model of an experiment is measured on the same pairs.
    batch_size : int or None, default None
        Sequences per forward; None = the model's own `batch_size` (its eval_batch_size).
    progress : bool, default True
        Draw an "evaluate" bar on stderr (as training does): scoring a test set on a CPU takes
        minutes.

    Returns
    -------
    EvalResult
        The metrics and the per-pair rewards behind them.

    >>> from rewardlab.data.sources import read_source
    >>> from rewardlab.models.backbones import load_backbone
    >>> pairs = read_source("synthetic:n=40,seed=0", split="test").pairs
    >>> model = RewardModel(*load_backbone("bow", max_length=64, seed=0), max_length=64)
    >>> result = evaluate_reward_model(model, pairs, progress=False)
    >>> result.metrics["n"], result.correct.shape, result.metrics["n_truncated"]
    (10, (10,), 0)
    """
    from rewardlab.evaluation.metrics import preference_metrics

    pairs = list(pairs)
    if not pairs:
        raise ModelError("no pairs to evaluate")
    chosen, rejected, enc = model.score_pair_encoding(model.encode_pairs(pairs),
                                                      batch_size=batch_size, progress=progress,
                                                      desc="evaluate")
    metrics: EvalMetrics = {
        **preference_metrics(
            chosen, rejected,
            chosen_lengths=np.array([len(p.chosen) for p in pairs]),
            rejected_lengths=np.array([len(p.rejected) for p in pairs]),
            subsets=[p.subset for p in pairs],
        ),
        "n_truncated": int(enc.truncated.sum()),
        "n_response_truncated": int(enc.response_truncated.sum()),
        # kept, unlike in training: every model of an experiment is compared on the same pairs
        "n_identical": int(enc.identical.sum()),
    }
    return EvalResult(metrics=metrics, chosen_rewards=chosen, rejected_rewards=rejected)
