"""evaluate.py: metrics keys, per-pair rewards in pair order, truncation count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rewardlab.errors import ModelError
from rewardlab.evaluation.evaluate import evaluate_reward_model
from rewardlab.models.reward_model import RewardModel
from tests._tiny import make_tiny_backbone, planted_pairs


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> RewardModel:
    return RewardModel.load(make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert")))


def test_metrics_and_per_pair_rewards(model: RewardModel) -> None:
    pairs = planted_pairs(20, seed=3, split="test")
    result = evaluate_reward_model(model, pairs, batch_size=7)
    for key in ("n", "correct", "accuracy", "accuracy_ci", "reward_gap_mean", "nll", "ece",
                "reliability", "accuracy_by_subset", "longer_wins_accuracy", "n_truncated"):
        assert key in result.metrics, key
    assert result.metrics["n"] == 20 and result.metrics["n_truncated"] == 0
    assert result.chosen_rewards.shape == result.rejected_rewards.shape == (20,)
    assert result.metrics["correct"] == int(result.correct.sum())
    # pair order is kept although batches are sorted by length
    one_by_one = [model.score([p.prompt_text], [p.chosen])[0] for p in pairs]
    np.testing.assert_allclose(result.chosen_rewards, one_by_one, rtol=1e-5, atol=1e-5)
    assert set(result.metrics["accuracy_by_subset"]) == {"harmless-base", "helpful-base"}


def test_truncated_pairs_are_counted(model: RewardModel) -> None:
    model.max_length = 32
    try:
        pairs = planted_pairs(6, seed=4, prompt_words=(3, 5)) + \
            planted_pairs(3, seed=5, prompt_words=(40, 50))
        assert evaluate_reward_model(model, pairs).metrics["n_truncated"] == 3
    finally:
        model.max_length = 128


def test_no_pairs_is_an_error(model: RewardModel) -> None:
    with pytest.raises(ModelError, match="no pairs"):
        evaluate_reward_model(model, [])


def test_trained_checkpoint_evaluates_the_same_after_reload(model: RewardModel,
                                                            tmp_path: Path) -> None:
    pairs = planted_pairs(8, seed=6, split="test")
    model.save(tmp_path)
    a = evaluate_reward_model(model, pairs)
    b = evaluate_reward_model(RewardModel.load(tmp_path), pairs)
    assert np.array_equal(a.chosen_rewards, b.chosen_rewards) and a.metrics == b.metrics
