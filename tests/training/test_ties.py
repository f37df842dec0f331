"""training/ties.py against values computed independently here: hand formulas, brute-force
enumeration, autograd gradcheck in float64, a fit that recovers a known tie parameter, and the
forward count of pairs-from-K."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from rewardlab.training.ties import (
    LOSS,
    TIE,
    WIN,
    TieModel,
    all_pairs_loss,
    outcome_probs,
    plackett_luce_nll,
    rewards_per_prompt,
    soft_tie_loss,
    tie_nll_loss,
)

R_A = torch.tensor([1.3, -0.4, 0.0, 2.5], dtype=torch.float64)
R_B = torch.tensor([0.2, 0.9, 0.0, -1.0], dtype=torch.float64)


def _davidson_by_hand(ra: float, rb: float, nu: float) -> tuple[float, float, float]:
    pa, pb = math.exp(ra), math.exp(rb)
    z = pa + pb + nu * math.sqrt(pa * pb)
    return pa / z, nu * math.sqrt(pa * pb) / z, pb / z


def _rao_kupper_by_hand(ra: float, rb: float, theta: float) -> tuple[float, float, float]:
    pa, pb = math.exp(ra), math.exp(rb)
    win, loss = pa / (pa + theta * pb), pb / (pb + theta * pa)
    tie = (theta ** 2 - 1) * pa * pb / ((pa + theta * pb) * (pb + theta * pa))
    return win, tie, loss


@pytest.mark.parametrize(("kind", "param", "by_hand"), [
    ("davidson", 0.7, _davidson_by_hand), ("rao-kupper", 1.6, _rao_kupper_by_hand)])
def test_outcome_probs_match_the_published_formulas(kind, param, by_hand):
    tie = TieModel(kind, init=param)
    assert tie.value.item() == pytest.approx(param, rel=1e-9)
    got = outcome_probs(R_A, R_B, tie).detach()
    for row, (ra, rb) in enumerate(zip(R_A.tolist(), R_B.tolist())):
        expected = by_hand(ra, rb, param)
        assert got[row].tolist() == pytest.approx(expected, rel=1e-9)
        assert sum(expected) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["davidson", "rao-kupper"])
def test_tie_parameter_stays_positive_whatever_the_raw_value(kind):
    tie = TieModel(kind)
    with torch.no_grad():
        tie.raw.fill_(-30.0)
    floor = 0.0 if kind == "davidson" else 1.0
    assert tie.value.item() > floor
    probs = outcome_probs(R_A, R_B, tie)
    assert torch.all(probs[:, TIE] >= 0) and torch.allclose(probs.sum(-1), torch.ones(4, dtype=torch.float64))


def test_tie_nll_is_minus_log_of_the_outcome_probability():
    tie = TieModel("davidson", init=0.7)
    outcome = torch.tensor([WIN, TIE, LOSS, TIE])
    expected = -sum(math.log(_davidson_by_hand(ra, rb, 0.7)[o])
                    for ra, rb, o in zip(R_A.tolist(), R_B.tolist(), outcome.tolist())) / 4
    assert tie_nll_loss(R_A, R_B, outcome, tie).item() == pytest.approx(expected, rel=1e-9)


def test_soft_tie_loss_is_cross_entropy_with_a_half_target():
    target = torch.tensor([1.0, 0.5, 0.0, 0.5], dtype=torch.float64)
    expected = 0.0
    for ra, rb, t in zip(R_A.tolist(), R_B.tolist(), target.tolist()):
        p = 1 / (1 + math.exp(-(ra - rb)))
        expected -= t * math.log(p) + (1 - t) * math.log(1 - p)
    assert soft_tie_loss(R_A, R_B, target).item() == pytest.approx(expected / 4, rel=1e-9)


@pytest.mark.parametrize("kind", ["davidson", "rao-kupper"])
def test_tie_nll_gradients_pass_gradcheck(kind):
    tie = TieModel(kind, init=1.4)
    outcome = torch.tensor([WIN, TIE, LOSS, TIE])
    ra, rb = R_A.clone().requires_grad_(), R_B.clone().requires_grad_()
    raw = tie.raw.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, w: _nll_with_raw(kind, a, b, w, outcome), (ra, rb, raw))


def _nll_with_raw(kind: str, a: torch.Tensor, b: torch.Tensor, raw: torch.Tensor,
                  outcome: torch.Tensor) -> torch.Tensor:
    """tie_nll_loss as a pure function of the raw tie parameter, for gradcheck."""
    tie = TieModel(kind)  # type: ignore[arg-type]
    del tie.raw
    tie.raw = raw  # type: ignore[assignment]
    return tie_nll_loss(a, b, outcome, tie)


def _pairs_by_hand(rewards: list[float], scores: list[float], *, ties: str, margin: bool) -> list[float]:
    losses = []
    for i, j in itertools.combinations(range(len(rewards)), 2):
        si, sj = scores[i], scores[j]
        if math.isnan(si) or math.isnan(sj) or (si == sj and ties == "drop"):
            continue
        d = rewards[i] - rewards[j]
        if si == sj:
            losses.append(-0.5 * math.log(1 / (1 + math.exp(-d))) - 0.5 * math.log(1 / (1 + math.exp(d))))
            continue
        c, r = (i, j) if si > sj else (j, i)
        m = abs(si - sj) if margin else 0.0
        losses.append(-math.log(1 / (1 + math.exp(-(rewards[c] - rewards[r] - m)))))
    return losses


@pytest.mark.parametrize("ties", ["drop", "soft"])
@pytest.mark.parametrize("margin", [False, True])
def test_all_pairs_loss_matches_a_loop_over_pairs(ties, margin):
    rewards = torch.tensor([[0.5, -1.0, 2.0, 0.1], [1.0, 1.5, -0.3, 0.0]], dtype=torch.float64)
    scores = torch.tensor([[4.0, 2.0, 4.0, 1.0], [3.0, float("nan"), 1.0, 2.0]], dtype=torch.float64)
    expected = []
    for r, s in zip(rewards.tolist(), scores.tolist()):
        expected += _pairs_by_hand(r, s, ties=ties, margin=margin)
    assert len(expected) == (5 + 3 if ties == "drop" else 6 + 3)
    got = all_pairs_loss(rewards, scores, ties=ties, margin_from_scores=margin)
    assert got.item() == pytest.approx(sum(expected) / len(expected), rel=1e-9)
    leaf = rewards.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda r: all_pairs_loss(r, scores, ties=ties, margin_from_scores=margin), (leaf,))


class _CountingReward(nn.Module):
    """A tiny reward model that counts how many response rows it forwards."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1, dtype=torch.float64)
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.linear(x).squeeze(-1)


def test_pairs_from_k_forward_each_response_once_and_equal_the_pairwise_expansion():
    torch.manual_seed(0)
    prompts, k = 3, 4
    inputs = torch.randn(prompts, k, 3, dtype=torch.float64)
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 1.0, 3.0]],
                          dtype=torch.float64)
    model = _CountingReward()
    once = all_pairs_loss(rewards_per_prompt(model, inputs), scores)
    assert model.rows == prompts * k  # 12 forwards for 18 pairs
    model.rows = 0
    expanded = []
    for p in range(prompts):
        for i, j in itertools.combinations(range(k), 2):
            c, r = (i, j) if scores[p, i] > scores[p, j] else (j, i)
            rewards = model(torch.stack([inputs[p, c], inputs[p, r]]))
            expanded.append(-torch.nn.functional.logsigmoid(rewards[0] - rewards[1]))
    assert model.rows == 2 * prompts * k * (k - 1) // 2  # 36: each response K-1 times
    assert once.item() == pytest.approx(torch.stack(expanded).mean().item(), rel=1e-12)


def _plackett_luce_by_product(rewards: list[float], order: list[int]) -> float:
    """-log P(order), best first, as the explicit product of choice probabilities."""
    prob = 1.0
    for pos, item in enumerate(order):
        rest = order[pos:]
        prob *= math.exp(rewards[item]) / sum(math.exp(rewards[m]) for m in rest)
    return -math.log(prob)


def test_plackett_luce_matches_the_explicit_product_and_sums_to_one():
    rewards = [0.3, -1.2, 2.0, 0.7]
    total = 0.0
    for order in itertools.permutations(range(4)):
        ranks = [0] * 4
        for place, item in enumerate(order):
            ranks[item] = place
        nll = plackett_luce_nll(torch.tensor([rewards], dtype=torch.float64), torch.tensor([ranks]))
        assert nll.item() == pytest.approx(_plackett_luce_by_product(rewards, list(order)), rel=1e-9)
        total += math.exp(-nll.item())
    assert total == pytest.approx(1.0, rel=1e-9)  # a distribution over the 24 rankings


def test_plackett_luce_ties_follow_breslow_and_missing_responses_drop_out():
    a, b, c = 0.4, -0.3, 1.1
    rewards = torch.tensor([[a, b, c]], dtype=torch.float64)
    all_three = math.log(math.exp(a) + math.exp(b) + math.exp(c))
    breslow = -((a - all_three) + (b - all_three) + (c - c))
    got = plackett_luce_nll(rewards, torch.tensor([[0, 0, 1]]))
    assert got.item() == pytest.approx(breslow, rel=1e-9)
    missing = plackett_luce_nll(rewards, torch.tensor([[1, -1, 0]]))
    assert missing.item() == pytest.approx(_plackett_luce_by_product([a, b, c], [2, 0]), rel=1e-9)


def test_plackett_luce_gradients_pass_gradcheck_and_average_over_prompts():
    rewards = torch.tensor([[0.3, -1.2, 2.0], [1.0, 0.0, -0.5]], dtype=torch.float64, requires_grad=True)
    ranks = torch.tensor([[2, 0, 1], [0, 0, 1]])
    assert torch.autograd.gradcheck(lambda r: plackett_luce_nll(r, ranks), (rewards,))
    first = plackett_luce_nll(rewards[:1], ranks[:1]).item()
    second = plackett_luce_nll(rewards[1:], ranks[1:]).item()
    assert plackett_luce_nll(rewards, ranks).item() == pytest.approx((first + second) / 2)


@pytest.mark.parametrize(("kind", "true_value"), [("davidson", 0.8), ("rao-kupper", 1.8)])
def test_fitting_recovers_a_known_tie_parameter(kind, true_value):
    """Items with hidden strengths, 20,000 outcomes drawn from the tie model; fitting strengths and
    the tie parameter together recovers the parameter within 0.04 (4 seeds: errors <= 0.01)."""
    gen = torch.Generator().manual_seed(7)
    items, n = 30, 20_000
    strength = torch.randn(items, generator=gen, dtype=torch.float64)
    a = torch.randint(items, (n,), generator=gen)
    b = (a + torch.randint(1, items, (n,), generator=gen)) % items
    truth = TieModel(kind, init=true_value)
    with torch.no_grad():
        probs = outcome_probs(strength[a], strength[b], truth)
    outcome = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    fitted = TieModel(kind, init=1.3 if kind == "rao-kupper" else 0.3)
    learned = nn.Parameter(torch.zeros(items, dtype=torch.float64))
    optimizer = torch.optim.LBFGS([learned, fitted.raw], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = tie_nll_loss(learned[a], learned[b], outcome, fitted)
        loss.backward()
        return loss

    optimizer.step(closure)
    assert fitted.value.item() == pytest.approx(true_value, abs=0.04)
    shift = (learned - strength).mean()  # strengths are identified up to a constant
    assert torch.allclose(learned - shift, strength, atol=0.3)  # max of 30 errors of sd ~0.06
