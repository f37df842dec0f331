"""Which pairs a run trains on, and with which labels: the one home of training-set selection.

Three questions, each answered here and nowhere else:

- **Which pairs are flagged?** A flag set (`FlagSpec`; on the command line `DET` or `reviewed:DET`)
  names one detector and whether only the flags reviewers confirmed count. Its pairs
  (`flagged_ids`) are the flags of the detector's latest run on the dataset, less, for a
  reviewed-only set, the ones reviewers did not confirm (consensus tp). Every caller (clean and
  random selections, the experiment's flag counts, the review app, exports) asks `flagged_ids`;
  `Store.flagged_example_ids` is the store's query beneath it.
- **In which order are pairs treated?** For dose-response curves (`--rank-by`), `rank_pairs` orders
  a pool by a detector's scores (`detector_scores`), most suspect first; `random_order` is the
  seeded order of the size-matched random control (`matched_random`), nested across fractions as
  the detector's top k are.
- **What is done to the chosen pairs?** A treatment: remove, flip (chosen ⇄ rejected) or soft
  (label smoothing). `select_training_pairs` applies a mode (all | clean | random) to flagged
  pairs, `treat_positions` a treatment to any chosen positions; both return a `Selection`.

The random control removes as many pairs as `clean` does, uniformly at random: comparing clean with
random separates "better data" from "less data". For dose-response, the detector's top k and the
control's first k get the same count and the same treatment: only the choice differs.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import SelectionError

if TYPE_CHECKING:
    from rewardlab.store.store import Store

__all__ = [
    "Mode",
    "Treatment",
    "MODES",
    "TREATMENTS",
    "CLEAN_DETECTORS",
    "REVIEWED_PREFIX",
    "FlagSpec",
    "flag_spec",
    "split_reviewed",
    "run_names",
    "flagged_ids",
    "flagged_by",
    "detector_scores",
    "Selection",
    "sample_stratified",
    "select_training_pairs",
    "clean_definition",
    "RANKING_RULE",
    "rank_pairs",
    "random_order",
    "treated_count",
    "treat_positions",
    "matched_random",
]

Mode = Literal["all", "clean", "random"]
Treatment = Literal["remove", "flip", "soft"]
MODES: tuple[str, ...] = ("all", "clean", "random")
TREATMENTS: tuple[str, ...] = ("remove", "flip", "soft")

# The one default meaning of "clean" (`train --select clean`, `compare`, without --detectors): the
# rule detectors that say a pair's *label or content* is suspect. unsafe_prompt, refusal_bias and
# over_length describe a pair without doubting it, so they only clean when named (`--detectors`).
# rating_conflict (issue 32) doubts the label, but joined the rule set after stores were flagged
# without it; its flags on pair data are a subset of conflicting_duplicate's. It cleans when named.
# `rewardlab flag`'s default (every rule detector) runs all of these and those three.
CLEAN_DETECTORS: tuple[str, ...] = (
    "empty_response", "identical_responses", "near_duplicate_responses", "diverging_context",
    "duplicate_pair", "conflicting_duplicate", "test_leakage", "repetition", "length_ratio",
    "readability_mismatch",
)

# Conservative-BT smoothing for the `soft` treatment: a flagged pair still pulls, but at most towards
# P(chosen ≻ rejected) = 0.7 instead of 1.
SOFT_SMOOTHING = 0.3


# ---------------------------------------------------------------- flag sets

# `reviewed:DET` on the command line: only DET's flags that reviewers confirmed
REVIEWED_PREFIX = "reviewed:"


@dataclass(frozen=True)
class FlagSpec:
    """One flag set: the flags of `detector`'s latest run, or (`reviewed_only`) only those of
    them that reviewers confirmed.

    >>> FlagSpec("length_ratio", reviewed_only=True)
    FlagSpec(detector='length_ratio', reviewed_only=True)
    >>> str(flag_spec("reviewed:length_ratio")), flag_spec("repetition").reviewed_only
    ('reviewed:length_ratio', False)
    """

    detector: str
    reviewed_only: bool = False

    def __str__(self) -> str:
        return f"{REVIEWED_PREFIX}{self.detector}" if self.reviewed_only else self.detector


def flag_spec(spec: FlagSpec | str) -> FlagSpec:
    """A flag set from its command-line name (`DET` or `reviewed:DET`); SelectionError for a bare
    `reviewed:`."""
    if isinstance(spec, FlagSpec):
        return spec
    if not spec.startswith(REVIEWED_PREFIX):
        return FlagSpec(spec)
    detector = spec[len(REVIEWED_PREFIX):].strip()
    if not detector:
        raise SelectionError(f"{REVIEWED_PREFIX!r} needs a detector name, e.g. "
                             f"{REVIEWED_PREFIX}length_ratio")
    return FlagSpec(detector, reviewed_only=True)


def split_reviewed(detectors: Sequence[str]) -> tuple[list[str], list[str]]:
    """Detector names → (plain ones, the DETs of `reviewed:DET`), order kept.

    >>> split_reviewed(["length_ratio", "reviewed:repetition"])
    (['length_ratio'], ['repetition'])
    """
    specs = [flag_spec(d) for d in detectors]
    return ([s.detector for s in specs if not s.reviewed_only],
            [s.detector for s in specs if s.reviewed_only])


def run_names(detectors: Sequence[FlagSpec | str]) -> list[str]:
    """The detectors whose runs `detectors` need: `reviewed:DET` needs DET; order kept, once each.

    >>> run_names(["reviewed:length_ratio", "length_ratio", "repetition"])
    ['length_ratio', 'repetition']
    """
    return list(dict.fromkeys(flag_spec(d).detector for d in detectors))


def _check_ran(store: Store, name: str, detectors: Sequence[str]) -> None:
    ran = store.latest_runs(name)
    missing = [d for d in detectors if d not in ran]
    if missing:
        raise SelectionError(f"detector(s) {', '.join(missing)} have not run on {name!r} "
                             f"(ran: {', '.join(ran) or 'none'})")


def _check_flag_sets(store: Store, name: str, specs: Sequence[FlagSpec]) -> None:
    """Every detector of `specs` has run on `name`: else one SelectionError line saying which
    did not and the command that runs them."""
    if not specs:
        raise SelectionError("no detectors named: name at least one, or pass None for the default "
                             f"set ({', '.join(CLEAN_DETECTORS)})")
    ran = store.latest_runs(name)
    if not ran:  # else a clean selection flags nothing and trains on every pair, saying "0 removed"
        raise SelectionError(f"no detector has run on {name!r} (ran: none), so no pair is flagged; "
                             f"run `rewardlab flag {name}` first")
    missing = [d for d in dict.fromkeys(s.detector for s in specs) if d not in ran]
    if missing:
        default = tuple(str(s) for s in specs) == CLEAN_DETECTORS  # `rewardlab flag` runs it all
        which = "of the default clean set " if default else ""
        command = f"rewardlab flag {name}" + ("" if default else f" --detectors {','.join(missing)}")
        raise SelectionError(f"detector(s) {which}{', '.join(missing)} have not run on {name!r}; "
                             f"run `{command}` (ran: {', '.join(ran)})")


def _confirmed(store: Store, name: str, detector: str) -> set[int]:
    """The pairs of `detector`'s latest flags that reviewers confirmed (consensus tp)."""
    # imported here: it loads the store (SQLAlchemy), and the light modules that name a FlagSpec
    # (experiment/compare_config.py, the CLI's parser) must not
    from rewardlab.flags.detector_precision import consensus

    return {o["example_id"] for o in store.review_outcomes(name)
            if o["detector"] == detector and consensus(o["verdicts"]) == "tp"}


def _specs(spec: FlagSpec | str | Sequence[FlagSpec | str] | None) -> list[FlagSpec]:
    if spec is None:
        return [FlagSpec(d) for d in CLEAN_DETECTORS]
    if isinstance(spec, (str, FlagSpec)):
        return [flag_spec(spec)]
    return [flag_spec(s) for s in spec]


def flagged_by(store: Store, name: str, specs: Sequence[FlagSpec | str]) -> dict[str, set[int]]:
    """`flagged_ids` of each flag set, keyed as given (a FlagSpec by its name, `DET` or
    `reviewed:DET`), order kept."""
    sets = _specs(specs)
    _check_flag_sets(store, name, sets)
    flagged = store.flagged_example_ids(name, list(dict.fromkeys(s.detector for s in sets)))
    return {given if isinstance(given, str) else str(given):
            flagged[s.detector] & _confirmed(store, name, s.detector) if s.reviewed_only
            else flagged[s.detector] for given, s in zip(specs, sets)}


def flagged_ids(store: Store, name: str,
                spec: FlagSpec | str | Sequence[FlagSpec | str] | None = None) -> set[int]:
    """The example ids of dataset `name` that flag set `spec` flags: its detector's latest run
    (reviewed-only: the flags of it that reviewers confirmed); several sets: their union; None:
    the default clean set (`CLEAN_DETECTORS`, the one meaning of "clean" of `train --select clean`
    and `compare`). SelectionError, one line, when a detector has not run (naming the command
    that runs it) or none is named.

    >>> import numpy as np
    >>> from rewardlab.data.sources import read_source
    >>> from rewardlab.store.records import DetectorResult
    >>> from rewardlab.store.store import Store
    >>> store = Store("sqlite://")
    >>> _ = store.ingest("toy", read_source("synthetic:n=3,seed=0"))
    >>> ids = [p.example_id for p in store.load_pairs("toy", split="train")]
    >>> _ = store.save_detector_run("toy", DetectorResult("odd", np.zeros(3), [False, True, False],
    ...                             ["", "why", ""], None, "data", {}), ids)
    >>> flagged_ids(store, "toy", "odd") == {ids[1]}, flagged_ids(store, "toy", "reviewed:odd")
    (True, set())
    """
    by_set = flagged_by(store, name, _specs(spec))
    return set().union(*by_set.values())


def detector_scores(store: Store, name: str, detector: str) -> dict[int, float]:
    """example id -> score of `detector`'s latest run on dataset `name`, every pair it scored,
    flagged or not (NaN where it gave none). SelectionError when the detector has not run."""
    _check_ran(store, name, [detector])
    return store.detector_scores(name, detector)


# ---------------------------------------------------------------- modes and treatments

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
        Store example ids (`pair.example_id`) of the flagged pairs, e.g. `flagged_ids`'s.
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


# ---------------------------------------------------------------- ranking (dose-response)

# rank_pairs's rule in words, as results.json's dose-response block records it
RANKING_RULE = "score descending; ties in a seeded random order; unscored pairs last"


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


def matched_random(pairs: Sequence[PreferencePair], count: int, *, treatment: str,
                   seed: int) -> Selection:
    """The size-matched random control for `count` treated pairs: the first `count` of this seed's
    `random_order`, treated as the detector's choice is (nested across counts, as its top k are).

    >>> ps = [PreferencePair(i, "train", "p", "a", "b", example_id=i) for i in range(10)]
    >>> control = matched_random(ps, 3, treatment="remove", seed=0)
    >>> len(control.pairs), control.n_removed, control.describe()
    (7, 3, '3 random pairs removed (size-matched control)')
    """
    return treat_positions(pairs, random_order(len(pairs), seed=seed)[:count],
                           treatment=treatment, mode="matched-random")
