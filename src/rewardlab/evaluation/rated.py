"""Evaluate a reward model on rated prompts (issue 32): each response scored once, then ranking
and tie metrics against the data's scores (for synthetic data: the hidden qualities).

* `kendall_tau`, `best_of_k_accuracy`: the K rewards of a prompt against its K scores;
* `pair_accuracy`: decided pairs (tie labels and equal scores left out) ranked right;
* with a tie model in the checkpoint (`--ties model`): `tie_accuracy` (the most probable of
  win / tie / loss is the outcome), `tie_nll` (nats per pair) and `tie_share` (mean predicted
  P(tie) against the observed share of tied pairs); None without one.

Every interval is a 95% CI with the prompt as the unit (`evaluation.ranking`).

>>> from rewardlab.data.synthetic import read_synthetic_rated
>>> from rewardlab.models.backbones import load_backbone
>>> prompts = read_synthetic_rated("synthetic:n=4,k=4,ties=0.2,test_n=8", split="test").prompts
>>> model = RewardModel(*load_backbone("bow", max_length=64, seed=0), max_length=64)
>>> metrics = evaluate_rated(model, prompts)
>>> metrics["best_of_k_accuracy"]["n_prompts"], metrics["tie_accuracy"]
(8, None)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rewardlab.data.rated import RatedPrompt, tied_pairs
from rewardlab.errors import ModelError
from rewardlab.evaluation.ranking import (
    RankingMetric,
    _per_prompt,
    best_of_k_accuracy,
    kendall_tau,
    tie_accuracy,
    tie_nll,
)
from rewardlab.models.reward_model import RewardModel
from rewardlab.training.ties import LOSS, TIE, WIN, outcome_probs, tie_model_of

__all__ = ["RATED_METRICS", "evaluate_rated", "rated_rewards"]

RATED_METRICS = ("pair_accuracy", "kendall_tau", "best_of_k_accuracy", "tie_accuracy", "tie_nll",
                 "tie_share")


def rated_rewards(model: RewardModel, prompts: Sequence[RatedPrompt], *,
                  progress: bool = False) -> list[np.ndarray]:
    """(K,) rewards of each prompt's responses, each response scored once (length-sorted)."""
    texts = [p.prompt_text for p in prompts for _ in p.responses]
    flat = model.score_encoded(model.encode(texts, [r for p in prompts for r in p.responses]),
                               progress=progress, desc="evaluate")
    bounds = np.cumsum([0] + [len(p.responses) for p in prompts])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _shown(metric: RankingMetric) -> dict[str, Any]:
    return {"value": metric.value, "ci": [metric.ci_low, metric.ci_high],
            "n_prompts": metric.n_prompts, "n_items": metric.n_items}


def _pairs(prompts: Sequence[RatedPrompt], rewards: Sequence[np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Every pair (i < j) of every prompt: (Q,) r_i, (Q,) r_j, (Q,) outcome, prompt of each."""
    r_a, r_b, outcome, owner = [], [], [], []
    for n, (p, r) in enumerate(zip(prompts, rewards, strict=True)):
        tied = tied_pairs(p)  # tie labels and equal scores, as training reads them
        for i, j in zip(*np.triu_indices(len(p.responses), 1), strict=True):
            a, b = int(i), int(j)
            r_a.append(r[a])
            r_b.append(r[b])
            outcome.append(TIE if (a, b) in tied else WIN if p.scores[a] > p.scores[b] else LOSS)
            owner.append(n)
    return np.array(r_a), np.array(r_b), np.array(outcome, dtype=int), owner


def evaluate_rated(model: RewardModel, prompts: Sequence[RatedPrompt], *,
                   progress: bool = False,
                   rewards: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Ranking and tie metrics of `model` on rated `prompts`, each {value, ci, n_prompts, n_items}
    (the tie ones None when the model has no tie model); `tie_model` names it (or None).
    `rewards`: the prompts' `rated_rewards` when the caller has them already (scored once)."""
    prompts = list(prompts)
    if not prompts:
        raise ModelError("no rated prompts to evaluate")
    if rewards is None:
        rewards = rated_rewards(model, prompts, progress=progress)
    truths = [list(p.scores) for p in prompts]
    r_a, r_b, outcome, owner = _pairs(prompts, rewards)
    decided = outcome != TIE
    right = np.where(outcome == WIN, r_a > r_b, r_b > r_a)
    metrics: dict[str, Any] = {
        "pair_accuracy": (_shown(_per_prompt(right[decided].astype(float),
                                             np.asarray(owner)[decided]))
                          if decided.any() else None),
        "kendall_tau": _shown(kendall_tau([list(r) for r in rewards], truths)),
        "best_of_k_accuracy": _shown(best_of_k_accuracy([list(r) for r in rewards], truths)),
        "tie_accuracy": None, "tie_nll": None, "tie_share": None, "tie_model": None}
    tie = tie_model_of(model.info)
    if tie is not None:
        with torch.no_grad():
            probs = outcome_probs(torch.as_tensor(r_a, dtype=torch.float64),
                                  torch.as_tensor(r_b, dtype=torch.float64), tie).numpy()
        metrics.update(
            tie_accuracy=_shown(tie_accuracy(probs, outcome.tolist(), owner)),
            tie_nll=_shown(tie_nll(probs, outcome.tolist(), owner)),
            tie_share={"predicted": float(probs[:, TIE].mean()),
                       "observed": float((outcome == TIE).mean()), "n_pairs": len(outcome)},
            tie_model=model.info["ties"])
    return metrics
