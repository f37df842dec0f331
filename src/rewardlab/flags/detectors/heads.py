"""Small Bradley-Terry reward heads on frozen embeddings: the models of `preference_strength`'s
embed mode, trained in seconds on a CPU.

A pair's features are built per batch from the distinct-text embedding tables (nothing of size
N × features is held), as [e(response), e(prompt) ⊙ e(response)]: the prompt has to interact with
the response, since a linear term in e(prompt) alone is the same for both replies and cancels in
the margin.

>>> head = fit_head(features, torch.arange(800), seed=0)        # doctest: +SKIP
>>> head_margins(head, features, torch.arange(800, 1000)).shape  # doctest: +SKIP
(200,)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PairFeatures", "fit_head", "head_margins", "make_head"]


@dataclass
class PairFeatures:
    """Embedding tables and, per pair, the rows of its chosen and rejected reply and its prompt."""

    responses: torch.Tensor  # (U, D) float32
    prompts: torch.Tensor | None  # (P, D) float32; None: features of the response alone
    chosen: torch.Tensor  # (N,) int64 rows of `responses`
    rejected: torch.Tensor  # (N,) int64 rows of `responses`
    prompt: torch.Tensor  # (N,) int64 rows of `prompts`

    @classmethod
    def build(cls, responses: np.ndarray, prompts: np.ndarray | None, *, chosen: Sequence[int],
              rejected: Sequence[int], prompt: Sequence[int]) -> PairFeatures:
        def rows(values: Sequence[int]) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values, dtype=np.int64))

        def table(vectors: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))

        return cls(table(responses), None if prompts is None else table(prompts),
                   rows(chosen), rows(rejected), rows(prompt))

    @property
    def dim(self) -> int:
        return (1 if self.prompts is None else 2) * int(self.responses.shape[1])

    def rows(self, pairs: torch.Tensor) -> torch.Tensor:
        """(2B, F) features of `pairs` (B,): the chosen replies' rows first, then the rejected."""
        response = self.responses[torch.cat([self.chosen[pairs], self.rejected[pairs]])]  # (2B, D)
        if self.prompts is None:
            return response
        prompt = self.prompts[self.prompt[pairs]].repeat(2, 1)  # (2B, D)
        return torch.cat([response, prompt * response], dim=1)  # (2B, 2D)


def make_head(kind: str, dim: int, hidden: int) -> nn.Module:
    """"linear": one reward per feature vector; "mlp": one GELU hidden layer of `hidden` units."""
    if kind == "linear":
        return nn.Linear(dim, 1)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))


def fit_head(features: PairFeatures, pairs: torch.Tensor, *, seed: int, kind: str = "linear",
             hidden: int = 256, steps: int = 100, batch_size: int = 2048, lr: float = 1e-2,
             l2: float = 3.0) -> nn.Module:
    """A head trained with the Bradley-Terry loss on `pairs` (row numbers of `features`).

    The loss is the mean over the pairs plus (`l2` / pairs) × ||W||² on the weights: a penalty
    `l2` × ||W||² on the summed loss, a prior worth the same whatever the data size (3.0 = 1e-3
    on the mean loss for 3,200 pairs; small sets get the stronger pull they need).

    "linear": the margin is w·(x_chosen − x_rejected) (the bias cancels), so the fit is a convex
    logistic regression, solved full-batch by L-BFGS in at most `steps` iterations (a second or
    two for thousands of pairs). "mlp": Adam (`lr`) for `steps` steps over seeded shuffles of the
    pairs in batches of `batch_size`. Deterministic given `seed`; the global torch RNG is left as
    it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = make_head(kind, features.dim, hidden)
    x_c, x_r = features.rows(pairs).chunk(2)  # (B, F) each
    if kind == "linear":
        return _fit_linear(head, x_c - x_r, steps=steps, penalty=l2 / len(pairs))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    weights = [p for name, p in head.named_parameters() if name.endswith("weight")]
    penalty = l2 / len(pairs)
    order, position = pairs[:0], 0
    for _ in range(steps):
        if position >= len(order):  # the next pass over the pairs, in a new order
            order, position = torch.randperm(len(pairs), generator=generator), 0
        batch = order[position:position + batch_size]
        position += batch_size
        r_c, r_r = head(torch.cat([x_c[batch], x_r[batch]])).squeeze(-1).chunk(2)  # (b,), (b,)
        loss = -F.logsigmoid(r_c - r_r).mean() + penalty * sum(w.square().sum() for w in weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return head


def _fit_linear(head: nn.Module, diff: torch.Tensor, *, steps: int, penalty: float) -> nn.Module:
    """L-BFGS on −log σ(diff · w) + λ||w||²; `diff` (B, F) holds x_chosen − x_rejected."""
    w = torch.zeros(diff.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=steps, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = -F.logsigmoid(diff @ w).mean() + penalty * w.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        linear = head if isinstance(head, nn.Linear) else None
        assert linear is not None  # make_head("linear") is an nn.Linear
        linear.weight.copy_(w.detach()[None, :])
        linear.bias.zero_()
    return head


@torch.inference_mode()
def head_margins(head: nn.Module, features: PairFeatures, pairs: torch.Tensor, *,
                 batch_size: int = 8192) -> np.ndarray:
    """(B,) float64 margins r(chosen) − r(rejected) of `pairs` under `head`."""
    margins = []
    for start in range(0, len(pairs), batch_size):
        r_c, r_r = head(features.rows(pairs[start:start + batch_size])).squeeze(-1).chunk(2)
        margins.append((r_c - r_r).double().numpy())
    return np.concatenate(margins) if margins else np.zeros(0)
