"""`rating_conflict`: a pair whose recorded ratings or votes put its rejected reply ahead (issue 32).

The evidence about a pair's two replies, each piece counted once:

- **its own ratings**: per-response scores kept with the pair (`meta["score_chosen"]`,
  `meta["score_rejected"]`, UltraFeedback-binarized's columns) count against the label when
  score_chosen < score_rejected, for it when greater;
- **other records** in train with the same prompt (the whole conversation) and the same two
  replies, in either order, compared case- and whitespace-insensitively: repeated Arena battles,
  several annotators, a pairs file and a ratings file of the same data. A record is one plain
  pair, or one rated prompt (its derived pairs carry `meta["rated_id"]` from a store, or
  `meta["a"]`/`meta["b"]` when read without one); it counts for the reply it puts ahead. A tie
  (a tie vote is no derived pair; equal ratings) counts for neither, and so does a plain pair
  whose own ratings contradict its label.

score = (evidence putting the rejected reply ahead) − (evidence putting the chosen reply ahead),
so it ranks pairs by how strongly the data argues against their label (dose-response); a pair is
flagged when the score is > 0: on balance the data contradicts its label. A record never counts
against itself, so the derived pairs of one rated prompt never conflict with their own ratings.

    >>> from rewardlab.data.pairs import PreferencePair
    >>> pairs = [PreferencePair(0, "train", "Hi", "Hello!", "Go away.",
    ...                         meta={"score_chosen": 2.0, "score_rejected": 4.5}),
    ...          PreferencePair(1, "train", "Yo", "Hey", "Bye"),
    ...          PreferencePair(2, "train", "Yo", "Hey", "Bye"),
    ...          PreferencePair(3, "train", "Yo", "Bye", "Hey")]
    >>> result = RatingConflict().detect(pairs)
    >>> result.scores.tolist(), result.reasons[0]
    ([1.0, 0.0, 0.0, 2.0], 'rated 2.0 vs 4.5 (score_chosen < score_rejected)')
    >>> result.reasons[3]
    '2 other records put the rejected reply ahead, 0 the chosen (source index 1, source index 2)'
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rewardlab.data.pairs import PreferencePair
from rewardlab.flags.detectors.base import Detector, DetectorResult, describe_pair, normalize_text

__all__ = ["RatingConflict", "own_ratings"]

SCORE_FIELDS = ("score_chosen", "score_rejected")
_SHOWN = 3  # other records named in a reason


def own_ratings(pair: PreferencePair) -> tuple[float, float] | None:
    """(score_chosen, score_rejected) kept in the pair's meta, None unless both are finite numbers.

    >>> own_ratings(PreferencePair(0, "train", "Hi", "a", "b", meta={"score_chosen": 3,
    ...                                                               "score_rejected": 4.5}))
    (3.0, 4.5)
    """
    values = [pair.meta.get(key) for key in SCORE_FIELDS]
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != 2 or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers[0], numbers[1]


def _record(pair: PreferencePair, position: int) -> Hashable:
    """Which record a pair belongs to: its rated prompt (all of whose pairs are one record), else
    the pair itself."""
    if "rated_id" in pair.meta:
        return ("rated", pair.meta["rated_id"])
    if "a" in pair.meta and "b" in pair.meta:  # derived pairs read without a store
        return ("rated", pair.split, pair.subset, pair.source_index)
    return ("pair", position)


def _own_evidence(pair: PreferencePair) -> int:
    """+1 when the pair's own ratings put the rejected reply ahead, −1 the chosen, 0 neither."""
    ratings = own_ratings(pair)
    if ratings is None:
        return 0
    return int(np.sign(ratings[1] - ratings[0]))


Key = tuple[str, str, str]  # (prompt, text, text): the normalized prompt, its two replies sorted


def _key(pair: PreferencePair) -> tuple[Key, int] | None:
    """The pair's unordered key and +1 when its chosen reply is the key's first text, −1 when the
    second; None for identical replies (no direction: `identical_responses`' business)."""
    chosen, rejected = normalize_text(pair.chosen), normalize_text(pair.rejected)
    if chosen == rejected:
        return None
    key = (normalize_text(pair.prompt_text), min(chosen, rejected), max(chosen, rejected))
    return key, 1 if chosen == key[1] else -1


@dataclass
class _Tally:
    """Every record's net vote per key over one train set, and per key how many records put each
    of its texts ahead (so weighing a pair costs O(1), however many records share its key)."""

    keys: list[tuple[Key, int] | None]
    own: list[int]  # each pair's own-ratings evidence (`_own_evidence`)
    records: list[Hashable]
    votes: dict[Key, dict[Hashable, int]] = field(default_factory=lambda: defaultdict(dict))
    # key -> (records putting its first text ahead, … its second): the first few, to name
    ahead: dict[Key, tuple[list[Hashable], list[Hashable]]] = field(default_factory=dict)
    counts: dict[Key, tuple[int, int]] = field(default_factory=dict)
    first_pair: dict[Hashable, int] = field(default_factory=dict)  # record -> its first position

    @classmethod
    def of(cls, train: Sequence[PreferencePair]) -> _Tally:
        tally = cls([_key(p) for p in train], [_own_evidence(p) for p in train],
                    [_record(p, i) for i, p in enumerate(train)])
        for i, (found, record) in enumerate(zip(tally.keys, tally.records)):
            tally.first_pair.setdefault(record, i)
            if found is not None:
                key, sign = found
                # a plain pair whose own ratings contradict its label vouches for neither reply
                vote = sign if tally.own[i] <= 0 else 0
                tally.votes[key][record] = tally.votes[key].get(record, 0) + vote
        for key, nets in tally.votes.items():
            first = [r for r, net in nets.items() if net > 0]
            second = [r for r, net in nets.items() if net < 0]
            tally.counts[key] = (len(first), len(second))
            tally.ahead[key] = (first[:_SHOWN + 1], second[:_SHOWN + 1])
        return tally

    def others(self, i: int) -> tuple[int, int]:
        """(other records putting pair i's rejected reply ahead, other records putting its chosen)."""
        found = self.keys[i]
        if found is None:
            return 0, 0
        key, sign = found
        net = self.votes[key][self.records[i]]  # this pair's own record is no other record
        first, second = self.counts[key][0] - (net > 0), self.counts[key][1] - (net < 0)
        return (second, first) if sign > 0 else (first, second)

    def against(self, i: int) -> list[Hashable]:
        """The first few other records putting pair i's rejected reply ahead."""
        found = self.keys[i]
        if found is None:
            return []
        key, sign = found
        records = self.ahead[key][1 if sign > 0 else 0]
        return [r for r in records if r != self.records[i]][:_SHOWN]


@dataclass
class RatingConflict(Detector):
    """Ratings or votes recorded for the pair's two replies put the rejected one ahead on balance
    (module doc). Score = net evidence against the label; flagged above 0."""

    name = "rating_conflict"
    description = "the pair's own ratings or other records of its two replies put rejected ahead"

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        tally = _Tally.of(train)
        scores = np.zeros(len(train), dtype=np.float64)
        reasons = []
        for i, pair in enumerate(train):
            against, support = tally.others(i)
            scores[i] = tally.own[i] + against - support
            if scores[i] <= 0:
                reasons.append("")
                continue
            named = [describe_pair(train[tally.first_pair[r]]) for r in tally.against(i)]
            reasons.append(_reason(pair, tally.own[i], against, support, named))
        return self.result(scores, scores > 0, reasons, threshold=0.0)


def _reason(pair: PreferencePair, own: int, against: int, support: int, named: list[str]) -> str:
    """"rated 2.0 vs 4.5 (…)" and/or "2 other records put the rejected reply ahead, …"."""
    parts = []
    ratings = own_ratings(pair)
    if ratings is not None and own > 0:
        parts.append(f"rated {ratings[0]} vs {ratings[1]} (score_chosen < score_rejected)")
    if against:
        shown = ", ".join(named) + (", …" if against > len(named) else "")
        records = "record puts" if against == 1 else "records put"
        parts.append(f"{against} other {records} the rejected reply ahead, {support} the "
                     f"chosen ({shown})")
    return "; ".join(parts)
