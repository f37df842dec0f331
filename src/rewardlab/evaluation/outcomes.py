"""P(win), P(tie), P(loss) of scored pairs under a checkpoint's tie model (issue 32).

A model trained with `--ties model` keeps its tie model in rewardlab.json (`ties`: model,
parameter; `training.ties.tie_model_of` reads it). `rewardlab score --file` and `rewardlab serve`'s
`/compare` both report the three outcome probabilities of (a, b) through `pair_outcomes`, so they
give the same numbers for the same rewards; a model without a tie model gets no such fields.

>>> from rewardlab.training.ties import TieModel
>>> rows = pair_outcomes(TieModel("davidson", init=1.0), [0.0, 2.0], [0.0, 0.0])
>>> [round(rows[0][k], 4) for k in OUTCOME_FIELDS], rows[1]["p_win"] > rows[1]["p_loss"]
([0.3333, 0.3333, 0.3333], True)
>>> pair_outcomes(None, [1.0], [0.0])
[{}]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rewardlab.training.ties import TieModel, outcome_probs

__all__ = ["OUTCOME_FIELDS", "pair_outcomes", "p_tie_at_equal"]

# the column order of `training.ties.outcome_probs`: a preferred, a tie, b preferred
OUTCOME_FIELDS = ("p_win", "p_tie", "p_loss")


def pair_outcomes(tie: TieModel | None, rewards_a: Sequence[float],
                  rewards_b: Sequence[float]) -> list[dict[str, float]]:
    """{"p_win", "p_tie", "p_loss"} of a over b per pair (they sum to 1); {} per pair when `tie`
    is None (a model trained without `--ties model`)."""
    if tie is None or not rewards_a:
        return [{} for _ in rewards_a]
    with torch.no_grad():
        probs = outcome_probs(torch.tensor(list(rewards_a), dtype=torch.float64),
                              torch.tensor(list(rewards_b), dtype=torch.float64), tie).tolist()
    return [dict(zip(OUTCOME_FIELDS, row)) for row in probs]


def p_tie_at_equal(tie: TieModel) -> float:
    """P(tie) of two responses with equal rewards: the largest P(tie) the model gives.

    >>> round(p_tie_at_equal(TieModel("davidson", init=0.5)), 4)
    0.2
    """
    return pair_outcomes(tie, [0.0], [0.0])[0]["p_tie"]
