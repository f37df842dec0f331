"""K responses per prompt with their scores, ranks and ties (issue 32): the data stage's type.

Pairs are derived from a `RatedPrompt` (`derived_pairs`), never stored twice. Read from Arena-,
UltraFeedback-, HelpSteer2- and ranking-shaped files (`data.rated_formats`) and from
`synthetic:…,k=K` (`data.synthetic.read_synthetic_rated`); kept by `Store.ingest`, read back with
`Store.load_rated`.

>>> rated = RatedPrompt(0, "train", "Say hi.", ("hi", "hello", "yo"), (2.0, 2.0, 1.0),
...                     ranks_from_scores((2.0, 2.0, 1.0)), ((0, 1),))
>>> rated.ranks, decided_pairs(rated)
((0, 1, 2), [(0, 2), (1, 2)])
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from rewardlab.data.pairs import PreferencePair, Split

__all__ = ["RatedKind", "RATED_KINDS", "RatedPrompt", "RatedData", "ranks_from_scores",
           "tied_pairs", "decided_pairs", "derived_pairs", "rated_content_hash"]

# What the scores of a RatedPrompt mean: ratings (UltraFeedback, HelpSteer2, synthetic: a rating
# per response), ranking (given ranks, scores K-1-rank) or vote (K = 2, scores 1/0 or ½/½).
RatedKind = Literal["ratings", "ranking", "vote"]
RATED_KINDS: tuple[str, ...] = ("ratings", "ranking", "vote")


@dataclass(frozen=True)
class RatedPrompt:
    """One prompt's K responses. `ranks[k]` is response k's place (0 = best, strict, by score;
    equal scores keep their order); `ties` lists the (i, j), i < j, labelled a tie, which need
    not be transitive (a ~ b and b ~ c without a ~ c), so ties are pair labels, not rank groups.
    `kind` says what the scores are (`RatedKind`); `meta` holds source extras (a multi-turn
    prompt's earlier turns as `meta["context"]`, rendered like `PreferencePair.context`)."""

    source_index: int
    split: Split
    prompt: str
    responses: tuple[str, ...]
    scores: tuple[float, ...]
    ranks: tuple[int, ...]
    ties: tuple[tuple[int, int], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    kind: RatedKind = "ratings"

    @property
    def context(self) -> str:
        """The conversation before the prompt (`meta["context"]`), as `PreferencePair.context`."""
        return str(self.meta.get("context", ""))

    @property
    def prompt_text(self) -> str:
        """The model's first text segment: its derived pairs' `PreferencePair.prompt_text`."""
        return PreferencePair(self.source_index, self.split, self.prompt, "", "",
                              context=self.context).prompt_text


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
        """Tied pairs (`tied_pairs`: labelled, or equal scores) over all prompts."""
        return sum(len(tied_pairs(p)) for p in self.prompts)


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


def tied_pairs(rated: RatedPrompt) -> set[tuple[int, int]]:
    """The (i, j), i < j, that are ties: labelled one (`rated.ties`) or given equal scores. The one
    definition of a tie: `decided_pairs` (hence derived and stored pairs), training
    (`training.grouped`) and evaluation (`evaluation.rated`) all read it.

    >>> tied_pairs(RatedPrompt(0, "train", "q", ("a", "b", "c"), (2.0, 1.0, 2.0), (0, 2, 1),
    ...                        ties=((0, 1),)))
    {(0, 1), (0, 2)}
    """
    k, s = len(rated.responses), rated.scores
    return set(rated.ties) | {(i, j) for i in range(k) for j in range(i + 1, k) if s[i] == s[j]}


def decided_pairs(rated: RatedPrompt) -> list[tuple[int, int]]:
    """(better, worse) index pairs that are not ties (`tied_pairs`), better by rank."""
    tied = tied_pairs(rated)
    k = len(rated.responses)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k) if (i, j) not in tied]
    return [(i, j) if rated.ranks[i] < rated.ranks[j] else (j, i) for i, j in pairs]


def derived_pairs(rated: RatedPrompt) -> list[PreferencePair]:
    """The prompt's decided pairs as `PreferencePair`s (ties left out), in `decided_pairs` order.

    `meta` is {"a": chosen position, "b": rejected position}, plus {"rated_id": …} when the
    prompt came from a store (`rated.meta["rated_id"]`), so a pair points back to its responses.

    >>> rated = RatedPrompt(3, "train", "Say hi.", ("hi", "yo"), (1.0, 0.0), (0, 1), kind="vote")
    >>> [(p.chosen, p.rejected, p.meta) for p in derived_pairs(rated)]
    [('hi', 'yo', {'a': 0, 'b': 1})]
    """
    ref = {"rated_id": rated.meta["rated_id"]} if "rated_id" in rated.meta else {}
    differ = bool(rated.meta.get("histories_differ", False))
    return [PreferencePair(source_index=rated.source_index, split=rated.split, prompt=rated.prompt,
                           chosen=rated.responses[a], rejected=rated.responses[b],
                           context=rated.context, histories_differ=differ,
                           meta={**ref, "a": a, "b": b})
            for a, b in decided_pairs(rated)]


def rated_content_hash(rated: RatedPrompt) -> str:
    """Identity of a rated prompt for idempotent ingest (its store id, if any, left out)."""
    meta = {k: v for k, v in rated.meta.items() if k != "rated_id"}
    payload = json.dumps([rated.source_index, rated.split, rated.kind, rated.prompt,
                          rated.responses, rated.scores, rated.ranks, rated.ties, meta],
                         ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
