"""K responses per prompt with their scores, ranks and ties (issue 32): the data stage's type.

Pairs are derived from a `RatedPrompt`, never stored twice. Not yet read by ingest or the store:
`synthetic:…,k=K` produces it today (`data.synthetic.read_synthetic_rated`).

>>> rated = RatedPrompt(0, "train", "Say hi.", ("hi", "hello", "yo"), (2.0, 2.0, 1.0),
...                     ranks_from_scores((2.0, 2.0, 1.0)), ((0, 1),))
>>> rated.ranks, decided_pairs(rated)
((0, 1, 2), [(0, 2), (1, 2)])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rewardlab.data.pairs import Split

__all__ = ["RatedPrompt", "RatedData", "ranks_from_scores", "decided_pairs"]


@dataclass(frozen=True)
class RatedPrompt:
    """One prompt's K responses. `ranks[k]` is response k's place (0 = best, strict, by score;
    equal scores keep their order); `ties` lists the (i, j), i < j, labelled a tie, which need
    not be transitive (a ~ b and b ~ c without a ~ c), so ties are pair labels, not rank groups."""

    source_index: int
    split: Split
    prompt: str
    responses: tuple[str, ...]
    scores: tuple[float, ...]
    ranks: tuple[int, ...]
    ties: tuple[tuple[int, int], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RatedData:
    """What a rated source read: its prompts and, for synthetic data, the true tie band."""

    spec: str
    prompts: list[RatedPrompt]
    tie_band: float | None = None

    @property
    def n_responses(self) -> int:
        return sum(len(p.responses) for p in self.prompts)

    @property
    def n_ties(self) -> int:
        return sum(len(p.ties) for p in self.prompts)


def ranks_from_scores(scores: tuple[float, ...] | list[float]) -> tuple[int, ...]:
    """Place of each response, 0 = highest score; equal scores keep their input order.

    >>> ranks_from_scores([0.1, 0.9, 0.5])
    (2, 0, 1)
    """
    order = sorted(range(len(scores)), key=lambda k: -scores[k])
    ranks = [0] * len(scores)
    for place, k in enumerate(order):
        ranks[k] = place
    return tuple(ranks)


def decided_pairs(rated: RatedPrompt) -> list[tuple[int, int]]:
    """(better, worse) index pairs that are not ties, better by rank."""
    tied = set(rated.ties)
    k = len(rated.responses)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k) if (i, j) not in tied]
    return [(i, j) if rated.ranks[i] < rated.ranks[j] else (j, i) for i, j in pairs]
