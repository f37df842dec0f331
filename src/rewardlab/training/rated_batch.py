"""What a rated training step reads, laid out once per run so that a step only indexes it.

A grouped step (`training.grouped`) is cheap work on few rows: with a small backbone its time
went to Python, not to the model (profiled on `synthetic:n=1500,k=4`, bow: a fifth of a step padding
rows one `torch.tensor` at a time, a tenth recomputing each prompt's pair labels from its scores,
another tenth counting correct pairs through numpy). So, once per run:

* `FlatRows`: every response's tokens end to end with their offsets; `FlatRows.pad` gives a
  batch the same tensors as `models.batching.pad_rows` by array indexing, no per-row loop;
* `PairLabels`: each prompt's K(K-1)/2 pairs (`torch.triu_indices` order) as (N, M) tensors —
  sign, score gap, which are known / tied / decided, the tie model's outcome — and (N, K) ranks;
  `PairLabels.take(idx)` is a batch's rows. The losses computed from them are the same numbers as
  from the scores (`training.ties.all_pairs_loss` reads them through `ties.pair_labels` too).

>>> from rewardlab.models.batching import Encoded, pad_rows
>>> rows = Encoded([[101, 7, 102], [101, 102]], None, np.zeros(2, bool), np.zeros(2, bool))
>>> flat = FlatRows.of(rows)
>>> batch = flat.pad(np.array([1, 0]), pad_id=0)
>>> batch["input_ids"].tolist(), batch["attention_mask"].tolist()
([[101, 102, 0], [101, 7, 102]], [[1, 1, 0], [1, 1, 1]])
>>> bool((batch["input_ids"] == pad_rows([[101, 102], [101, 7, 102]], None, pad_id=0)["input_ids"]).all())
True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from rewardlab.models.batching import Encoded, pad_flat
from rewardlab.training.ties import LOSS, TIE, WIN, ScoredPairs, pair_labels

__all__ = ["FlatRows", "PairLabels", "batch_rows"]


@dataclass(frozen=True)
class FlatRows:
    """R token rows stored end to end: row r is `ids[offsets[r]:offsets[r + 1]]`."""

    ids: np.ndarray  # (total,) int64
    types: np.ndarray | None  # (total,) int64 segment ids, None when the tokenizer has none
    offsets: np.ndarray  # (R + 1,) int64

    @classmethod
    def of(cls, rows: Encoded) -> FlatRows:
        lengths = rows.lengths
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def flat(seqs: list[list[int]]) -> np.ndarray:
            return np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64,
                               count=int(offsets[-1]))

        types = flat(rows.token_type_ids) if rows.token_type_ids is not None else None
        return cls(flat(rows.input_ids), types, offsets)

    def pad(self, rows: np.ndarray, *, pad_id: int, pad_type_id: int = 0,
            padding_side: str = "right", device: torch.device | None = None,
            position_ids: bool = False) -> dict[str, torch.Tensor]:
        """`models.batching.pad_rows` of rows `rows`: (R, T) `input_ids`, `attention_mask` (and
        `token_type_ids`, `position_ids`), T the longest row, padded on `padding_side`."""
        start, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]  # (R,)
        return pad_flat(self.ids, self.types, start, lengths, pad_id=pad_id,
                        pad_type_id=pad_type_id, padding_side=padding_side, device=device,
                        position_ids=position_ids)


def batch_rows(start: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(R,) rows of prompts `idx` (prompt p's rows are `start[p]:start[p + 1]`) and (R,) their
    places in a (B, K) grid, row-major.

    >>> batch_rows(np.array([0, 2, 5]), np.array([1, 0]), 3)
    (array([2, 3, 4, 0, 1]), array([0, 1, 2, 3, 4]))
    """
    first, counts = start[idx], start[idx + 1] - start[idx]  # (B,)
    before = np.cumsum(counts) - counts  # (B,) rows of the batch ahead of each prompt
    at = np.arange(int(counts.sum()))
    return (np.repeat(first - before, counts) + at,
            np.repeat(np.arange(len(idx)) * k - before, counts) + at)


@dataclass(frozen=True)
class PairLabels:
    """Every prompt's pairs (i < j, `torch.triu_indices` order) as the losses read them.

    `scored`: (N, M) `ties.ScoredPairs` (sign, gap, known, tie; float32, the rewards' dtype),
    M = K(K-1)/2; `correct_sign` (N, M) the decided pairs' sign, 0 elsewhere (what accuracy
    counts); `outcome` (N, M) WIN / TIE / LOSS for the tie model; `ranks` (N, K) listwise places,
    -1 where a response is missing.
    """

    scored: ScoredPairs
    correct_sign: torch.Tensor
    outcome: torch.Tensor
    ranks: torch.Tensor

    @classmethod
    def of(cls, scores: np.ndarray, tied: np.ndarray, ranks: np.ndarray) -> PairLabels:
        """From (N, K) float scores (NaN where missing), (N, M) tied, (N, K) ranks."""
        scored = pair_labels(torch.from_numpy(scores), tied=torch.from_numpy(tied),
                             dtype=torch.float32)
        i, j = np.triu_indices(scores.shape[1], 1)
        gap = scores[:, i] - scores[:, j]  # (N, M) in the scores' own precision
        decided = ~np.isnan(gap) & ~tied
        outcome = np.where(tied, TIE, np.where(gap > 0, WIN, LOSS))
        correct_sign = np.where(decided, np.sign(np.nan_to_num(gap)), 0.0)
        return cls(scored, torch.from_numpy(correct_sign.astype(np.float32)),
                   torch.from_numpy(outcome.astype(np.int64)),
                   torch.from_numpy(ranks.astype(np.int64)))

    def to(self, device: torch.device) -> PairLabels:
        """The same labels on `device` (where the rewards are)."""
        return PairLabels(ScoredPairs(*(t.to(device) for t in self.scored)),
                          self.correct_sign.to(device), self.outcome.to(device),
                          self.ranks.to(device))

    def take(self, idx: np.ndarray) -> PairLabels:
        """The rows of prompts `idx` (B,), in that order."""
        at = torch.from_numpy(idx).to(self.ranks.device)
        return PairLabels(ScoredPairs(*(t[at] for t in self.scored)), self.correct_sign[at],
                          self.outcome[at], self.ranks[at])
