"""Losses for ties, ratings and rankings (issue 32), trained by `training.grouped`.

Three kinds of preference data beyond a decided pair, each a small function on reward tensors:

* a pair that may be a **tie**: `soft_tie_loss` (a tie is the target 1/2), or a Bradley-Terry
  model with ties (`TieModel`: Rao-Kupper or Davidson, its tie parameter learned and positive by
  construction) scored by `tie_nll_loss`, and `outcome_probs` = P(win), P(tie), P(loss) for scoring;
* **K rated responses** per prompt: `rewards_per_prompt` forwards each response once, and
  `all_pairs_loss` turns the (P, K) rewards into all K(K-1)/2 pair losses per prompt, with an
  optional margin from the score difference (`--margin-from-scores`);
* a **ranking**: `plackett_luce_nll`, ties within a ranking by Breslow's rule.

Outcomes are coded WIN = 0 (the first response is preferred), TIE = 1, LOSS = 2, the column order
of `outcome_probs`. Formulas: docs/ties.md.

>>> tie = TieModel("davidson", init=1.0)
>>> [round(x, 4) for x in outcome_probs(torch.zeros(1), torch.zeros(1), tie)[0].tolist()]
[0.3333, 0.3333, 0.3333]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rewardlab.errors import ModelError

if TYPE_CHECKING:
    from rewardlab.models.reward_model import RewardModel

__all__ = [
    "WIN",
    "TIE",
    "LOSS",
    "TieKind",
    "TieModel",
    "outcome_probs",
    "tie_nll_loss",
    "soft_tie_loss",
    "rewards_per_prompt",
    "all_pairs_loss",
    "ScoredPairs",
    "pair_labels",
    "labelled_pairs_loss",
    "plackett_luce_nll",
    "tie_model_of",
    "pair_outcome_probs",
]

WIN, TIE, LOSS = 0, 1, 2
TieKind = Literal["rao-kupper", "davidson"]


def _inverse_softplus(y: float) -> float:
    """x with softplus(x) = y (y > 0), so a parameter can start at a chosen positive value."""
    return y + math.log(-math.expm1(-y))


class TieModel(nn.Module):
    """Bradley-Terry with ties: one learned tie parameter, positive by construction (a softplus).

    `davidson`: nu > 0, P(i ~ j) = nu sqrt(pi_i pi_j) / (pi_i + pi_j + nu sqrt(pi_i pi_j)).
    `rao-kupper`: log theta > 0 (theta > 1), P(i > j) = pi_i / (pi_i + theta pi_j).
    `value` is nu (Davidson) or theta (Rao-Kupper); pi = exp(reward). `init` defaults to a
    parameter giving P(tie) = 0.2 at equal rewards (nu = 0.5, theta = 1.5).

    >>> TieModel("rao-kupper", init=2.0).value.item()
    2.0
    """

    def __init__(self, kind: TieKind = "davidson", *, init: float | None = None) -> None:
        super().__init__()
        init = (0.5 if kind == "davidson" else 1.5) if init is None else init
        if kind not in ("rao-kupper", "davidson"):
            raise ValueError(f"tie model {kind!r}: expected 'rao-kupper' or 'davidson'")
        floor = 1.0 if kind == "rao-kupper" else 0.0
        if init <= floor:
            raise ValueError(f"{kind} tie parameter must start above {floor}, got {init}")
        self.kind: TieKind = kind
        # Davidson's raw maps to nu; Rao-Kupper's to log(theta), so theta > 1 and P(tie) > 0.
        start = init if kind == "davidson" else math.log(init)
        self.raw = nn.Parameter(torch.tensor(_inverse_softplus(start), dtype=torch.float64))

    @property
    def value(self) -> torch.Tensor:
        """nu (Davidson) or theta (Rao-Kupper), a 0-d tensor."""
        positive = F.softplus(self.raw)
        return positive if self.kind == "davidson" else positive.exp()

    def forward(self, r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
        """(B, 3) log P(win), log P(tie), log P(loss) of a over b, from (B,) rewards."""
        d = r_a - r_b  # (B,)
        positive = F.softplus(self.raw).to(d.dtype)
        if self.kind == "davidson":
            # divide every term by sqrt(pi_a pi_b): win e^{d/2}, loss e^{-d/2}, tie nu
            terms = torch.stack([d / 2, positive.log().expand_as(d), -d / 2], dim=-1)  # (B, 3)
            return terms - torch.logsumexp(terms, dim=-1, keepdim=True)
        # Rao-Kupper, e = log theta: win sigma(d - e), loss sigma(-d - e),
        # tie (theta^2 - 1) sigma(d - e) sigma(-d - e)
        log_win, log_loss = F.logsigmoid(d - positive), F.logsigmoid(-d - positive)
        log_tie = torch.log(torch.expm1(2 * positive)) + log_win + log_loss
        return torch.stack([log_win, log_tie, log_loss], dim=-1)


def outcome_probs(r_a: torch.Tensor, r_b: torch.Tensor, tie_model: TieModel) -> torch.Tensor:
    """(B, 3) P(win), P(tie), P(loss) of response a over b: what `score` would report.

    >>> p = outcome_probs(torch.tensor([2.0]), torch.tensor([0.0]), TieModel("davidson"))
    >>> round(p.sum().item(), 6), bool(p[0, 0] > p[0, 2])
    (1.0, True)
    """
    log_p: torch.Tensor = tie_model(r_a, r_b)  # (B, 3)
    return log_p.exp()


def tie_nll_loss(r_a: torch.Tensor, r_b: torch.Tensor, outcome: torch.Tensor,
                 tie_model: TieModel) -> torch.Tensor:
    """Mean -log P(outcome) under the tie model; `outcome` (B,) in {WIN, TIE, LOSS}.

    >>> tie = TieModel("davidson", init=1.0)
    >>> round(tie_nll_loss(torch.zeros(2), torch.zeros(2), torch.tensor([TIE, WIN]), tie).item(), 4)
    1.0986
    """
    log_p: torch.Tensor = tie_model(r_a, r_b)  # (B, 3)
    return -log_p.gather(-1, outcome.long().unsqueeze(-1)).mean()


def soft_tie_loss(r_a: torch.Tensor, r_b: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry with soft targets: target (B,) = P(a preferred), 1 win, 1/2 tie, 0 loss.

    A tie pulls the two rewards together; its minimum is ln 2, at equal rewards.

    >>> round(soft_tie_loss(torch.zeros(1), torch.zeros(1), torch.tensor([0.5])).item(), 4)
    0.6931
    """
    return F.binary_cross_entropy_with_logits(r_a - r_b, target.to(r_a.dtype))


def rewards_per_prompt(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """(P, K) rewards of K responses per prompt in ONE forward of the P*K rows: each once.

    `inputs` is (P, K, ...) features; `model` maps (N, ...) rows to (N,) or (N, 1) rewards.
    The pairwise expansion forwards each response K-1 times; this forwards it once.

    >>> rewards_per_prompt(nn.Linear(3, 1), torch.zeros(2, 4, 3)).shape
    torch.Size([2, 4])
    """
    p, k = inputs.shape[:2]
    flat: torch.Tensor = model(inputs.reshape(p * k, *inputs.shape[2:]))  # (P*K,) or (P*K, 1)
    return flat.reshape(p, k)


def _upper_pairs(k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (i, j), i < j, of the K(K-1)/2 pairs among K responses."""
    i, j = torch.triu_indices(k, k, offset=1, device=device)
    return i, j


class ScoredPairs(NamedTuple):
    """Every pair (i < j, `torch.triu_indices` order) of P prompts' scores, (P, M) each: what
    `all_pairs_loss` reads of the scores, so it can be computed once per prompt."""

    sign: torch.Tensor  # +1: i scores higher (chosen), -1: j does, 0: equal or missing
    gap: torch.Tensor  # |s_i - s_j|, 0 where a score is missing
    known: torch.Tensor  # both scores present
    tie: torch.Tensor  # known and (equal scores or a tie label)


def pair_labels(scores: torch.Tensor, *, tied: torch.Tensor | None = None,
                dtype: torch.dtype | None = None) -> ScoredPairs:
    """(P, M) labels of all pairs of (P, K) `scores` (NaN = a missing response); `tied` (P, M)
    marks tie labels between different scores; the gap is cast to `dtype` (the rewards') first.

    >>> pair_labels(torch.tensor([[3.0, 1.0, 3.0]])).sign.tolist()
    [[1.0, 0.0, -1.0]]
    """
    i, j = _upper_pairs(scores.shape[1], scores.device)
    gap = scores[:, i] - scores[:, j]  # (P, M) NaN where a response is missing
    gap = gap.to(dtype) if dtype is not None else gap
    known = ~torch.isnan(gap)
    # zero the NaNs before any arithmetic: a NaN in an unselected branch still poisons gradients
    gap = torch.nan_to_num(gap, nan=0.0)
    sign = torch.sign(gap)  # +1: i chosen, -1: j chosen, 0: tie
    tie = known & ((sign == 0) | (tied if tied is not None else torch.zeros_like(known)))
    return ScoredPairs(sign, gap.abs(), known, tie)


def labelled_pairs_loss(rewards: torch.Tensor, labels: ScoredPairs, *,
                        ties: Literal["drop", "soft"] = "drop", margin_from_scores: bool = False,
                        margin_scale: float = 1.0) -> torch.Tensor:
    """`all_pairs_loss` from (P, K) rewards and the pairs' `pair_labels` (computed once per
    prompt by a training run: `training.rated_batch.PairLabels`)."""
    i, j = _upper_pairs(rewards.shape[1], rewards.device)
    d = rewards[:, i] - rewards[:, j]  # (P, M) reward gap of each pair, M = K(K-1)/2
    shifted = labels.sign * d  # (P, M) the chosen side's lead
    if margin_from_scores:
        shifted = shifted - margin_scale * labels.gap
    loss = -F.logsigmoid(shifted)  # (P, M)
    if ties == "soft":  # a tie's target is 1/2 (no margin); dropped ties need no loss at all
        tie_loss = F.binary_cross_entropy_with_logits(d, torch.full_like(d, 0.5), reduction="none")
        loss = torch.where(labels.tie, tie_loss, loss)
    keep = labels.known & (~labels.tie | (ties == "soft"))
    return loss[keep].mean()


def all_pairs_loss(rewards: torch.Tensor, scores: torch.Tensor, *, ties: Literal["drop", "soft"] = "drop",
                   margin_from_scores: bool = False, margin_scale: float = 1.0,
                   tied: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BT loss over all K(K-1)/2 pairs per prompt; rewards and scores are (P, K).

    The higher-scored response of a pair is the chosen one. Equal scores are a tie, and so is
    every pair `tied` (P, M) marks (a tie label between different scores, e.g. within a rating's
    tie band; M in `torch.triu_indices` order): `drop` leaves the pair out, `soft` gives it target
    1/2 (no margin). A NaN score marks a missing response
    (ragged K): its pairs are left out. With `margin_from_scores` a decided pair's loss is
    -log sigma(r_c - r_r - margin_scale * (s_c - s_r)), as `--margin-from-scores` will set.

    >>> r = torch.tensor([[2.0, 0.0, 1.0]])
    >>> round(all_pairs_loss(r, torch.tensor([[3.0, 1.0, 2.0]])).item(), 4)
    0.2512
    """
    return labelled_pairs_loss(rewards, pair_labels(scores, tied=tied, dtype=rewards.dtype),
                               ties=ties, margin_from_scores=margin_from_scores,
                               margin_scale=margin_scale)


def plackett_luce_nll(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """Mean over prompts of the Plackett-Luce NLL of a ranking; rewards, ranks (P, K).

    `ranks[p, k]` is response k's place, 0 = best. Without ties this is the exact listwise NLL
    -sum_k [r_(k) - log sum_{m >= k} exp r_(m)] (best first). Equal ranks are a tie, handled by
    Breslow's rule: each tied response's term uses the risk set of every response ranked at or
    below the tie (so the order within the tie does not matter). A negative rank marks a missing
    response (ragged K): it is in no risk set and contributes no term.

    >>> r = torch.tensor([[1.0, 0.0]])
    >>> round(plackett_luce_nll(r, torch.tensor([[0, 1]])).item(), 4)  # = -log sigma(1)
    0.3133
    """
    present = ranks >= 0  # (P, K)
    # at_or_below[p, k, m]: response m is still in the risk set when response k is placed
    at_or_below = (ranks.unsqueeze(1) >= ranks.unsqueeze(2)) & present.unsqueeze(1)  # (P, K, K)
    expanded = rewards.unsqueeze(1).expand_as(at_or_below)
    masked = expanded.masked_fill(~at_or_below, float("-inf"))
    log_denominator = torch.logsumexp(masked, dim=-1)  # (P, K)
    terms = torch.where(present, rewards - log_denominator, torch.zeros_like(rewards))
    return -terms.sum(dim=1).mean()


def tie_model_of(info: Mapping[str, Any]) -> TieModel | None:
    """The tie model a rewardlab.json records (`ties`: model, parameter), None when it has none.

    >>> tie_model_of({"ties": {"model": "rao-kupper", "parameter": 1.75}}).value.item()
    1.75
    >>> tie_model_of({}) is None
    True
    """
    ties = info.get("ties")
    if ties is None:
        return None
    kind = ties.get("model") if isinstance(ties, dict) else None
    value = ties.get("parameter") if isinstance(ties, dict) else None
    if kind not in ("davidson", "rao-kupper") or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ModelError(f"rewardlab.json: ties must be {{\"model\": \"davidson\" or \"rao-kupper\", "
                         f"\"parameter\": a number}}, got {ties!r}")
    try:
        return TieModel(kind, init=float(value)).eval()
    except ValueError as e:  # a parameter at or below its floor
        raise ModelError(f"rewardlab.json: ties.parameter: {e}") from e


def pair_outcome_probs(model: RewardModel, prompts: Sequence[str], a: Sequence[str],
                       b: Sequence[str]) -> np.ndarray:
    """(N, 3) P(a wins), P(tie), P(b wins) of each (prompt, a, b) under the model's tie model.

    ModelError when the model has none (it was trained without `--ties model`).
    """
    tie = tie_model_of(model.info)
    if tie is None:
        raise ModelError("this model has no tie model (train it with --ties model for P(tie))")
    r_a = torch.tensor(model.score(prompts, a), dtype=torch.float64)
    r_b = torch.tensor(model.score(prompts, b), dtype=torch.float64)
    with torch.no_grad():
        probs: np.ndarray = outcome_probs(r_a, r_b, tie).numpy()
    return probs
