"""`SourceResult`: what reading one source gives, shared by every reader (files, hub, synthetic)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rewardlab.data.pairs import PreferencePair
from rewardlab.data.rated import RatedPrompt

__all__ = ["SourceResult"]


@dataclass
class SourceResult:
    """The pairs read from one source spec; `read == len(pairs) + len(rejected)` for a pair source.

    Parameters
    ----------
    spec : str
        The source as the user gave it (a path, "hh-rlhf:…", "synthetic:…").
    pairs : list of PreferencePair
        Every accepted pair, its split assigned.
    read : int
        Rows read from the source, accepted or not.
    rejected : list of (int, str)
        (source_index, reason) of each row that did not become a pair, e.g. a missing field.
    rated : list of RatedPrompt, default []
        For a rated source (votes with ties, ratings, rankings: issue 32) its prompts as read;
        `pairs` are then their decided pairs (`data.rated.derived_pairs`), ties left out, and
        `read` counts the source's rows.

    >>> from rewardlab.data.sources import read_source
    >>> result = read_source("synthetic:n=8,seed=0", split="train")
    >>> result.read == len(result.pairs) + len(result.rejected) == 8
    True
    """

    spec: str  # what the user passed
    pairs: list[PreferencePair]  # all accepted pairs, split assigned
    read: int  # rows read from the source
    rejected: list[tuple[int, str]]  # (source_index, reason) rows not turned into pairs
    rated: list[RatedPrompt] = field(default_factory=list)  # a rated source's prompts

    @property
    def n_ties(self) -> int:
        """Tie labels over the rated prompts (0 for a pair source)."""
        return sum(len(p.ties) for p in self.rated)

    @property
    def n_responses(self) -> int:
        """Responses over the rated prompts (0 for a pair source)."""
        return sum(len(p.responses) for p in self.rated)

    def parse_issues(self) -> list[tuple[int, str]]:
        """(source_index, issue) of the accepted pairs whose dialogue did not parse cleanly."""
        return [(p.source_index, p.parse_issue) for p in self.pairs if p.parse_issue]
