"""The rated step's precomputed inputs (`training.rated_batch`): the same padded tensors as
`pad_rows`, the same losses as from the scores, and the grouped path's training history as it was
before the step was rebuilt on them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from rewardlab.data.rated import RatedPrompt
from rewardlab.data.synthetic import read_synthetic_rated
from rewardlab.models.batching import Encoded, pad_rows
from rewardlab.training.grouped import train_on_rated
from rewardlab.training.rated_batch import FlatRows, PairLabels, batch_rows
from rewardlab.training.ties import all_pairs_loss, labelled_pairs_loss
from rewardlab.training.train_config import TrainConfig


def _ragged(rng: np.random.Generator, n: int, *, types: bool) -> Encoded:
    ids = [rng.integers(1, 500, size=int(rng.integers(1, 12))).tolist() for _ in range(n)]
    segs = [rng.integers(0, 2, size=len(r)).tolist() for r in ids] if types else None
    return Encoded(ids, segs, np.zeros(n, bool), np.zeros(n, bool))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("types", [True, False])
def test_flat_rows_pad_exactly_as_pad_rows(side: str, types: bool) -> None:
    rng = np.random.default_rng(0)
    rows = _ragged(rng, 40, types=types)
    flat = FlatRows.of(rows)
    for _ in range(20):
        pick = rng.choice(40, size=int(rng.integers(1, 9)), replace=False)
        got = flat.pad(pick, pad_id=3, pad_type_id=1, padding_side=side, position_ids=True)
        want = pad_rows([rows.input_ids[r] for r in pick],
                        [rows.token_type_ids[r] for r in pick] if types and rows.token_type_ids
                        else None, pad_id=3, pad_type_id=1, padding_side=side, position_ids=True)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key


def test_batch_rows_places_ragged_prompts_in_their_grid() -> None:
    start = np.array([0, 4, 6, 10])  # K = 4, 2, 4 responses
    rows, where = batch_rows(start, np.array([1, 0, 2]), 4)
    assert rows.tolist() == [4, 5, 0, 1, 2, 3, 6, 7, 8, 9]
    assert where.tolist() == [0, 1, 4, 5, 6, 7, 8, 9, 10, 11]


@pytest.mark.parametrize(("ties", "margin"), [("drop", False), ("soft", False), ("drop", True)])
def test_precomputed_labels_give_the_scores_losses_bit_for_bit(ties: Any, margin: bool) -> None:
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(16, 5)).astype(float)  # whole numbers: many equal scores
    scores[3, 4] = scores[7, 3:] = np.nan  # ragged prompts
    tied = rng.random((16, 10)) < 0.2
    ranks = np.zeros((16, 5), dtype=np.int64)
    rewards = torch.tensor(rng.normal(size=(16, 5)), dtype=torch.float32, requires_grad=True)
    labels = PairLabels.of(scores, tied, ranks)
    idx = np.array([7, 3, 0, 12])
    kw: dict[str, Any] = {"ties": ties, "margin_from_scores": margin}
    got = labelled_pairs_loss(rewards[idx], labels.take(idx).scored, **kw)
    (grad_got,) = torch.autograd.grad(got, rewards)
    want = all_pairs_loss(rewards[idx], torch.from_numpy(scores[idx]),
                          tied=torch.from_numpy(tied[idx]), **kw)
    (grad_want,) = torch.autograd.grad(want, rewards)
    assert got.item() == want.item() and torch.equal(grad_got, grad_want)


# (loss, accuracy) per step, then (tie parameter or 0, decided pairs) of grouped runs (batch 4,
# 2 epochs, fp32), recorded with the step as it was before it read `rated_batch` (rows padded one
# by one, labels from the scores each step): the rebuilt step must give the same numbers
HISTORY_BEFORE: dict[str, list[list[float]]] = {
    "drop-ragged": [[0.6931512356, 0.4444444444], [0.6931213737, 0.8], [0.6930508018, 0.8947368421],
                    [0.6929728985, 1.0], [0.6930484772, 0.8181818182], [0.6928880811, 1.0],
                    [0.0, 47.0]],
    "soft-k4": [[0.6931342483, 0.8], [0.6931098104, 0.95], [0.6930615306, 1.0],
                [0.6930364966, 0.8421052632], [0.6929648519, 1.0], [0.6929511428, 0.85],
                [0.6927780509, 1.0], [0.6925349236, 1.0], [0.6925888658, 1.0], [0.6925856471, 1.0],
                [0.6924927235, 1.0], [0.6922290921, 1.0], [0.0, 111.0]],
    "margin-k4": [[2.0822353363, 0.8], [2.0294508934, 0.9], [2.2902195454, 1.0],
                  [1.9590979815, 0.8421052632], [2.1623971462, 1.0], [1.5160546303, 0.85],
                  [1.7230653763, 1.0], [2.2514686584, 1.0], [1.9612476826, 1.0],
                  [1.7827177048, 1.0], [1.8407331705, 1.0], [2.4392764568, 1.0], [0.0, 111.0]],
    "model-ragged": [[1.0648138523, 0.5454545455], [1.0438412428, 0.85], [1.1327039003, 0.875],
                     [1.0613889694, 1.0], [1.1014325619, 1.0], [1.0826548338, 0.9444444444],
                     [0.6217870041, 47.0]],
    "listwise-ragged": [[3.1780583858, 0.4444444444], [2.3496890068, 0.8], [3.1777267456, 0.9473684211],
                        [3.1775507927, 1.0], [2.3494758606, 0.8181818182], [3.1771836281, 1.0],
                        [0.0, 47.0]],
}
OPTIONS: dict[str, dict[str, Any]] = {"drop": {}, "soft": {"ties": "soft"}, "model": {"ties": "model"},
                                      "margin": {"margin_from_scores": True},
                                      "listwise": {"ranking": "listwise"}}


@pytest.mark.parametrize("name", list(HISTORY_BEFORE))
def test_the_grouped_history_is_unchanged(name: str) -> None:
    prompts = read_synthetic_rated("synthetic:n=24,k=4,ties=0.2,test_n=8,seed=0",
                                   split="train").prompts
    votes = [RatedPrompt(90, "train", "Pick one.", ("helpful honest", "honest helpful"), (0.5, 0.5),
                         (0, 1), ((0, 1),), kind="vote"),
             RatedPrompt(91, "train", "Pick one.", ("clear kind", "rude vague"), (1.0, 0.0), (0, 1),
                         kind="vote")]
    option, data = name.split("-")
    train = prompts if data == "k4" else [votes[0], *prompts[:10], votes[1]]  # K = 2 and 4 mixed
    config = TrainConfig(model="bow", precision="fp32", seed=0, max_length=64, batch_size=4,
                         epochs=2, logging_steps=1, **OPTIONS[option])
    result = train_on_rated(train, config=config, progress=False)
    got = [[h["loss"], h["accuracy"]] for h in result.history]
    got.append([result.tie_parameter or 0.0, float(result.n_pairs)])
    # recorded rounded to 1e-10; 1e-6 leaves room for another CPU's float rounding, while any
    # change to the batches, labels or loss moves these by far more
    assert np.allclose(got, HISTORY_BEFORE[name], rtol=1e-6, atol=1e-9)
