"""One definition of a tie (issue 32): a tie label OR equal scores, read alike by the data stage
(decided and derived pairs), training (`encode_rated`, the pairwise expansion) and evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from rewardlab.data.rated import RatedPrompt, decided_pairs, derived_pairs, tied_pairs
from rewardlab.evaluation.rated import _pairs, evaluate_rated
from rewardlab.models.backbones import load_backbone
from rewardlab.models.reward_model import RewardModel
from rewardlab.training.grouped import encode_rated, pairwise_expansion, train_on_rated
from rewardlab.training.ties import TIE
from rewardlab.training.train_config import TrainConfig

# responses 0 and 2 share a score with no tie label; 1 and 3 are labelled a tie though they differ
PROMPT = RatedPrompt(0, "train", "Which reply is kinder?",
                     ("thank you kindly", "go away now", "thanks so much", "whatever then"),
                     (2.0, 1.0, 2.0, 0.5), (0, 2, 1, 3), ties=((1, 3),))


def test_an_unlabelled_equal_score_pair_is_a_tie_in_the_data_stage() -> None:
    assert tied_pairs(PROMPT) == {(0, 2), (1, 3)}
    assert sorted(decided_pairs(PROMPT)) == [(0, 1), (0, 3), (2, 1), (2, 3)]
    assert all({p.meta["a"], p.meta["b"]} != {0, 2} for p in derived_pairs(PROMPT))


def test_an_unlabelled_equal_score_pair_is_a_tie_in_training() -> None:
    _, tokenizer = load_backbone("bow", max_length=64, seed=0)
    rated = encode_rated(tokenizer, [PROMPT], max_length=64)
    i, j = np.triu_indices(4, 1)
    assert {(int(a), int(b)) for a, b, t in zip(i, j, rated.tied[0]) if t} == {(0, 2), (1, 3)}
    config = TrainConfig(model="bow", precision="fp32", seed=0, max_length=64, batch_size=2)
    result = train_on_rated([PROMPT, PROMPT], config=config, progress=False)
    # the grouped path and the pairwise expansion train on the same decided pairs
    assert (result.n_pairs, result.n_ties) == (8, 4)
    assert len(pairwise_expansion([PROMPT, PROMPT])) == result.n_pairs


def test_an_unlabelled_equal_score_pair_is_a_tie_in_evaluation() -> None:
    _, _, outcome, _ = _pairs([PROMPT], [np.array([0.3, 0.2, 0.1, 0.0])])
    i, j = np.triu_indices(4, 1)
    assert {(int(a), int(b)) for a, b, o in zip(i, j, outcome) if o == TIE} == {(0, 2), (1, 3)}
    model = RewardModel(*load_backbone("bow", max_length=64, seed=0), max_length=64)
    metrics = evaluate_rated(model, [PROMPT])
    assert metrics["pair_accuracy"]["n_items"] == len(decided_pairs(PROMPT)) == 4


@pytest.mark.parametrize("scores", [(1.0, 1.0), (0.5, 0.5)])
def test_a_prompt_of_equal_scores_has_no_decided_pair(scores: tuple[float, float]) -> None:
    prompt = RatedPrompt(1, "train", "q", ("a", "b"), scores, (0, 1))
    assert decided_pairs(prompt) == [] and tied_pairs(prompt) == {(0, 1)}
