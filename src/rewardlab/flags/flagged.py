"""Which pairs are flagged: the one answer (`flagged_ids`), and each detector's scores.

A flag set names one detector and whether only the flags reviewers confirmed count (`FlagSpec`;
on the command line `reviewed:DET`). Its pairs are the flags of the detector's latest run on the
dataset, less, for a reviewed-only set, the ones reviewers did not confirm (consensus tp). Every
caller that asks "which pairs are flagged?" (clean and random selections, the experiment's flag
counts, the review app, exports) asks `flagged_ids`; `Store.flagged_example_ids` is the store's
query beneath it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rewardlab.errors import SelectionError
from rewardlab.flags.selection import CLEAN_DETECTORS

if TYPE_CHECKING:
    from rewardlab.store.store import Store

__all__ = ["REVIEWED_PREFIX", "FlagSpec", "flag_spec", "split_reviewed", "run_names",
           "flagged_ids", "flagged_by", "detector_scores"]

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
