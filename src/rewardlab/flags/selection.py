"""Which pairs a reward model trains on: all, clean (flagged pairs treated), or the random control.

The random control removes as many pairs as `clean` does, uniformly at random: comparing clean with
random separates "better data" from "less data". For dose-response curves, `rank_pairs` orders a
pool by a detector's scores and `treat_positions` treats its top k (or, for the control, the
first k of `random_order`): the same count, the same treatment, only the choice differs.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import SelectionError

__all__ = [
    "Mode",
    "Treatment",
    "MODES",
    "TREATMENTS",
    "CLEAN_DETECTORS",
    "Selection",
    "sample_stratified",
    "select_training_pairs",
    "clean_definition",
    "rank_pairs",
    "random_order",
    "treated_count",
    "treat_positions",
]

Mode = Literal["all", "clean", "random"]
Treatment = Literal["remove", "flip", "soft"]
MODES: tuple[str, ...] = ("all", "clean", "random")
TREATMENTS: tuple[str, ...] = ("remove", "flip", "soft")

# The one default meaning of "clean" (`train --select clean`, `compare`, without --detectors): the
# rule detectors that say a pair's *label or content* is suspect. unsafe_prompt, refusal_bias and
# over_length describe a pair without doubting it, so they only clean when named (`--detectors`).
# `rewardlab flag`'s default (every rule detector) runs all of these and those three.
CLEAN_DETECTORS: tuple[str, ...] = (
    "empty_response", "identical_responses", "near_duplicate_responses", "diverging_context",
    "duplicate_pair", "conflicting_duplicate", "test_leakage", "repetition", "length_ratio",
    "readability_mismatch",
)

# Conservative-BT smoothing for the `soft` treatment: a flagged pair still pulls, but at most towards
# P(chosen ≻ rejected) = 0.7 instead of 1.
SOFT_SMOOTHING = 0.3


@dataclass(frozen=True)
class Selection:
    """A training set plus what was done to get it (saved with every run)."""

    pairs: list[PreferencePair]
    smoothing: list[float] | None  # per-pair label smoothing (`soft`), else None
    mode: str
    treatment: str | None
    n_pool: int  # train pairs available before selection
    n_flagged: int  # of those, flagged by the chosen detectors
    n_removed: int
    n_flipped: int
    n_smoothed: int

    def describe(self) -> str:
        """One line for tables and logs."""
        if self.mode == "all":
            return f"all {self.n_pool} train pairs ({self.n_flagged} flagged, kept as they are)"
        if self.mode == "random":
            return f"{self.n_removed} pairs removed at random (as many as clean removes)"
        verb = {"remove": "removed", "flip": "flipped", "soft": "label-smoothed"}
        done = verb[self.treatment or "remove"]
        if self.mode == "ranked":
            return f"{self.n_flagged} top-ranked pairs {done}"
        if self.mode == "matched-random":
            return f"{self.n_flagged} random pairs {done} (size-matched control)"
        return f"{self.n_flagged} flagged pairs {done}"


def sample_stratified(pairs: Sequence[PreferencePair], max_pairs: int, *,
                      seed: int = 0) -> list[PreferencePair]:
    """At most `max_pairs` pairs, each subset keeping its share (largest remainders), order kept.

    >>> len(sample_stratified([PreferencePair(i, "train", "p", "a", "b") for i in range(10)], 4))
    4
    """
    if max_pairs < 0:
        raise SelectionError(f"max_pairs must be at least 0 (got {max_pairs})")
    if max_pairs >= len(pairs):
        return list(pairs)
    by_subset: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        by_subset[p.subset].append(i)
    quotas = _largest_remainder_quotas({s: len(ix) for s, ix in by_subset.items()}, max_pairs)
    rng = random.Random(seed)
    keep = sorted(i for s, ix in by_subset.items() for i in rng.sample(ix, quotas[s]))
    return [pairs[i] for i in keep]


def _largest_remainder_quotas(sizes: dict[str, int], total: int) -> dict[str, int]:
    n = sum(sizes.values())
    exact = {s: size * total / n for s, size in sizes.items()}
    quotas = {s: int(q) for s, q in exact.items()}
    by_remainder = sorted(sizes, key=lambda s: (quotas[s] - exact[s], s))
    for s in by_remainder[: total - sum(quotas.values())]:
        quotas[s] += 1
    return quotas


def select_training_pairs(pairs: Sequence[PreferencePair], flagged_ids: Collection[int], *,
                          mode: str = "all", treatment: str = "remove",
                          seed: int = 0) -> Selection:
    """Apply a selection `mode` (and, for `clean`, a `treatment`) to train pairs.

    Parameters
    ----------
    pairs : sequence of PreferencePair
        The train pairs to choose from, with their store ids (`Store.load_pairs` sets them).
    flagged_ids : collection of int
        Store example ids (`pair.example_id`) of the flagged pairs, e.g. `flags.flagged.flagged_ids`'s.
    mode : {"all", "clean", "random"}, default "all"
        "all" keeps every pair; "clean" applies `treatment` to the flagged ones; "random" removes
        as many pairs as are flagged, uniformly at random (the control that separates "better
        data" from "less data").
    treatment : {"remove", "flip", "soft"}, default "remove"
        What "clean" does to a flagged pair: drop it, swap chosen and rejected, or keep it with
        label smoothing ε = 0.3 (`Selection.smoothing`). Other modes take only "remove".
    seed : int, default 0
        Seeds the random control's choice.

    Returns
    -------
    Selection
        The pairs to train on, their per-pair smoothing (or None) and the counts of what was done.

    Raises SelectionError on an unknown mode/treatment or when nothing is left to train on.

    >>> from dataclasses import replace
    >>> from rewardlab.data.sources import read_source
    >>> pairs = read_source("synthetic:n=10,seed=0", split="train").pairs
    >>> pairs = [replace(pair, example_id=i) for i, pair in enumerate(pairs)]
    >>> clean = select_training_pairs(pairs, {0, 1, 2}, mode="clean")
    >>> len(clean.pairs), clean.n_removed
    (7, 3)
    >>> flipped = select_training_pairs(pairs, {0}, mode="clean", treatment="flip")
    >>> flipped.pairs[0].chosen == pairs[0].rejected, flipped.n_flipped
    (True, 1)
    >>> len(select_training_pairs(pairs, {0, 1, 2}, mode="random", seed=0).pairs)
    7
    """
    if mode not in MODES:
        raise SelectionError(f"unknown selection {mode!r}; expected one of {', '.join(MODES)}")
    _check_treatment(treatment)
    if treatment != "remove" and mode != "clean":  # it would be ignored without a word
        raise SelectionError(f"treatment {treatment!r} acts on flagged pairs: it needs the clean "
                             f"selection, not {mode!r} (--select clean)")
    is_flagged = [p.example_id in flagged_ids for p in pairs]
    n_flagged = sum(is_flagged)
    base = dict(n_pool=len(pairs), n_flagged=n_flagged, n_removed=0, n_flipped=0, n_smoothed=0)
    if mode == "all":
        sel = Selection(list(pairs), None, mode, None, **base)
    elif mode == "random":
        rng = random.Random(seed)
        drop = set(rng.sample(range(len(pairs)), n_flagged))
        kept = [p for i, p in enumerate(pairs) if i not in drop]
        sel = Selection(kept, None, mode, None, **{**base, "n_removed": n_flagged})
    else:
        sel = _treat_flagged(pairs, is_flagged, treatment, base)
    if not sel.pairs:
        raise SelectionError(f"the {mode} selection is empty: all {len(pairs)} train pairs were "
                             "flagged/removed; choose fewer detectors")
    return sel


def _check_treatment(treatment: str) -> None:
    if treatment not in TREATMENTS:
        raise SelectionError(f"unknown treatment {treatment!r}; expected one of "
                             f"{', '.join(TREATMENTS)}")


def _treat_flagged(pairs: Sequence[PreferencePair], is_flagged: list[bool], treatment: str,
                   base: dict[str, int]) -> Selection:
    n = base["n_flagged"]
    if treatment == "remove":
        kept = [p for p, f in zip(pairs, is_flagged) if not f]
        return Selection(kept, None, "clean", treatment, **{**base, "n_removed": n})
    if treatment == "flip":
        flipped = [p.flipped() if f else p for p, f in zip(pairs, is_flagged)]
        return Selection(flipped, None, "clean", treatment, **{**base, "n_flipped": n})
    smoothing = [SOFT_SMOOTHING if f else 0.0 for f in is_flagged]
    return Selection(list(pairs), smoothing, "clean", treatment, **{**base, "n_smoothed": n})


def clean_definition(detectors: Sequence[str] | None = None) -> str:
    """What "clean" means for these detectors (None: the default set), in one line.

    >>> clean_definition(["empty_response", "length_ratio"])
    'clean = pairs not flagged by: empty_response, length_ratio'
    """
    return "clean = pairs not flagged by: " + ", ".join(detectors or CLEAN_DETECTORS)


def rank_pairs(pairs: Sequence[PreferencePair], scores: Mapping[int, float], *,
               seed: int = 0) -> list[int]:
    """Positions in `pairs`, most suspect first: score descending, ties in a seeded random order
    (so a yes/no detector's unflagged pairs follow its flagged ones in no systematic order, not
    by source index), pairs without a finite score last.

    >>> ps = [PreferencePair(i, "train", "p", "a", "b", example_id=i) for i in range(3)]
    >>> rank_pairs(ps, {0: 0.1, 1: 0.9, 2: float("nan")})
    [1, 0, 2]
    >>> rank_pairs(ps, {0: float("nan"), 1: 0.9, 2: 0.1})
    [1, 2, 0]
    """
    shuffled = list(range(len(pairs)))
    random.Random(seed).shuffle(shuffled)
    tie_break = {pos: k for k, pos in enumerate(shuffled)}

    def key(pos: int) -> tuple[bool, float, int]:
        example_id = pairs[pos].example_id
        score = math.nan if example_id is None else scores.get(example_id, math.nan)
        finite = math.isfinite(score)
        return (not finite, -score if finite else 0.0, tie_break[pos])

    return sorted(range(len(pairs)), key=key)


def random_order(n: int, *, seed: int) -> list[int]:
    """A seeded permutation of range(n): its first k are the random control for k treated pairs,
    nested across fractions like the detector's top k."""
    order = list(range(n))
    random.Random(f"random-control-{seed}").shuffle(order)
    return order


def treated_count(fraction: float, n: int) -> int:
    """How many of `n` pairs a fraction treats: round(fraction · n), at least 1."""
    return max(1, round(fraction * n))


def treat_positions(pairs: Sequence[PreferencePair], positions: Collection[int], *,
                    treatment: str, mode: str = "ranked") -> Selection:
    """Remove, flip or label-smooth the pairs at `positions`; the rest unchanged, order kept.

    `mode` says who chose them, for `describe()`: "ranked" (a detector's top k), "clean" (a
    detector's flags) or "matched-random" (the size-matched random control).
    """
    _check_treatment(treatment)
    chosen = set(positions)
    is_treated = [i in chosen for i in range(len(pairs))]
    base = dict(n_pool=len(pairs), n_flagged=len(chosen), n_removed=0, n_flipped=0, n_smoothed=0)
    treated = _treat_flagged(pairs, is_treated, treatment, base)
    if not treated.pairs:
        raise SelectionError(f"treating {len(chosen)} of {len(pairs)} train pairs leaves nothing "
                             "to train on; choose a smaller fraction")
    return dataclasses.replace(treated, mode=mode)
