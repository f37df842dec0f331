"""Run detectors on a stored dataset and save their flags; export/import flagged_indices.json.

flagged_indices.json is the original notebook's interchange format: a JSON list of the source
indices (0-based row positions in the source) of flagged TRAIN pairs.

A dataset ingested from several files (e.g. HH-RLHF subsets) can hold several train pairs with the
same source index, one per file. An index list cannot tell them apart, so exporting lists such an
index once if any of them is flagged, and importing flags every train pair with that index.

    >>> import tempfile
    >>> from rewardlab.data.pairs import PreferencePair
    >>> from rewardlab.data.source_result import SourceResult
    >>> pairs = [PreferencePair(0, "train", "Hi", "Hello!", ""),
    ...          PreferencePair(1, "train", "Hi", "Hey", "Go away.")]
    >>> store = Store(f"sqlite:///{tempfile.mkdtemp()}/flags.db")
    >>> counts = store.ingest("hh", SourceResult("toy", pairs, read=2, rejected=[]))
    >>> results = flag_dataset(store, "hh", detectors=["empty_response"], progress=False)
    >>> path = write_indices(f"{tempfile.mkdtemp()}/flagged.json", export_flagged_indices(store, "hh"))
    >>> json.loads(path.read_text())  # the source indices of the flagged train pairs
    [0]
    >>> store.close()
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from tqdm.auto import tqdm

from rewardlab.data.pairs import PreferencePair, Split
from rewardlab.errors import RewardlabError, SelectionError, SourceError, StoreError
from rewardlab.flags.detectors import (
    DETECTORS,
    RULE_DETECTORS,
    Detector,
    DetectorResult,
    get_detector,
    run_detector,
)
from rewardlab.flags.review_files import check_flagged_pair
from rewardlab.store.store import Store

__all__ = [
    "FlagSummaryRow",
    "flag_dataset",
    "flag_summary",
    "export_flagged_indices",
    "import_flagged_indices",
    "read_indices",
    "review_flag",
    "write_indices",
]


class FlagSummaryRow(TypedDict):
    """`flag_summary` row: one detector run, or "union" (threshold None, threshold_kind "")."""

    detector: str
    flagged: int
    rate: float  # flagged / train pairs
    threshold: float | None
    threshold_kind: str


def _build_detectors(names: Sequence[str], params: Mapping[str, Mapping[str, Any]],
                     progress: bool, store: Store | None = None) -> list[Detector]:
    """Every detector built before any runs, so a typo fails in a second, not after an hour.
    A detector with a `store` field (llm_judge: its answer cache) gets the store flagged."""
    stray = sorted(set(params) - set(names))
    if stray:
        raise SelectionError(f"parameters given for detector {stray[0]!r}, which is not being "
                             f"run; running: {', '.join(names)}")
    built = []
    for name in names:
        options = dict(params.get(name, {}))
        cls = DETECTORS.get(name)
        fields = {f.name for f in dataclasses.fields(cls)} if cls is not None else set()
        if "progress" in fields:
            options.setdefault("progress", progress)
        if "store" in fields and store is not None:
            options.setdefault("store", store)
        built.append(get_detector(name, **options))
    return built


def _example_ids(pairs: Sequence[PreferencePair]) -> list[int]:
    """Store ids of pairs loaded from the store (always set there)."""
    ids = [p.example_id for p in pairs]
    if any(i is None for i in ids):
        raise StoreError("pairs must come from Store.load_pairs (example_id missing)")
    return [int(i) for i in ids if i is not None]


def flag_dataset(store: Store, name: str, *, detectors: Sequence[str] | None = None,
                 params: Mapping[str, Mapping[str, Any]] | None = None,
                 progress: bool = True) -> list[DetectorResult]:
    """Run `detectors` (default: RULE_DETECTORS) on the train pairs of `name`; save each run.

    Each run is saved as soon as it finishes, so an interrupted flagging keeps finished runs.

    Parameters
    ----------
    store : Store
        The store holding dataset `name`; the runs are saved there.
    name : str
        The dataset: its train pairs are flagged, its test pairs passed to every detector (only
        `test_leakage` reads them).
    detectors : sequence of str or None, default None
        Detector names (`DETECTORS`' keys), run in this order; None runs every rule detector
        (`RULE_DETECTORS`).
    params : mapping of str to mapping, or None, default None
        Keyword parameters per detector, e.g. `{"length_ratio": {"percentile": 95}}`
        (`get_detector`'s `**params`).
    progress : bool, default True
        Show a progress bar over the detectors (on stderr).

    Returns
    -------
    list of DetectorResult
        One per detector, in order: per-pair scores, flags and reasons, the threshold and timing.

    >>> import tempfile
    >>> from rewardlab.data.sources import read_source
    >>> from rewardlab.store.store import Store
    >>> store = Store(f"sqlite:///{tempfile.mkdtemp()}/flags.db")
    >>> counts = store.ingest("toy", read_source("synthetic:n=40,seed=0"))
    >>> [result] = flag_dataset(store, "toy", detectors=["empty_response"], progress=False)
    >>> result.detector, len(result.scores), int(result.flagged.sum())
    ('empty_response', 40, 0)
    >>> store.close()
    """
    names = list(dict.fromkeys(detectors if detectors is not None else RULE_DETECTORS))
    if not names:
        raise SelectionError(f"no detectors selected; detectors: {', '.join(DETECTORS)}")
    built = _build_detectors(names, params or {}, progress, store)
    train = store.load_pairs(name, split="train")
    if not train:
        raise StoreError(f"dataset {name!r} has no train pairs; nothing to flag")
    test = store.load_pairs(name, split="test")
    example_ids = _example_ids(train)
    results = []
    bar = tqdm(built, desc="detectors", unit="detector", disable=not progress)
    for detector in bar:
        # name the running one: a bar sitting at 0/13 for the embedding detector's minute says nothing
        bar.set_postfix_str(detector.name)
        result = run_detector(detector, train, test)
        store.save_detector_run(name, result, example_ids)
        results.append(result)
    return results


def flag_summary(results: Sequence[DetectorResult], n_train: int) -> list[FlagSummaryRow]:
    """One row per detector (detector, flagged, rate, threshold, threshold_kind) plus a "union" row
    counting train pairs flagged by at least one of them."""
    rows: list[FlagSummaryRow] = []
    union = np.zeros(n_train, dtype=bool)
    for r in results:
        if len(r.flagged) != n_train:
            raise ValueError(f"detector {r.detector!r} has {len(r.flagged)} results, "
                             f"expected {n_train}")
        union |= r.flagged
        rows.append({"detector": r.detector, "flagged": r.n_flagged,
                     "rate": r.n_flagged / n_train if n_train else 0.0,
                     "threshold": r.threshold, "threshold_kind": r.threshold_kind})
    total = int(union.sum())
    rows.append({"detector": "union", "flagged": total,
                 "rate": total / n_train if n_train else 0.0,
                 "threshold": None, "threshold_kind": ""})
    return rows


def export_flagged_indices(store: Store, name: str, *,
                           detectors: Sequence[str] | None = None) -> list[int]:
    """Sorted unique source indices of train pairs flagged by the latest run of any of `detectors`
    (default: every detector run on the dataset). StoreError if nothing has been run."""
    flagged = store.flagged_example_ids(name, detectors)
    if not flagged:
        raise StoreError(f"no detector runs on dataset {name!r}; run `rewardlab flag` first")
    ids = set().union(*flagged.values())
    return sorted({p.source_index for p in store.load_pairs(name, split="train")
                   if p.example_id in ids})


def write_indices(path: str | Path, indices: Iterable[int]) -> Path:
    """Write `indices` as a JSON list (the notebook's flagged_indices.json); returns the path."""
    path = Path(path)
    if path.is_dir():
        raise RewardlabError(f"{path} is a directory; give a file name, e.g. "
                             f"{path / 'flagged_indices.json'}")
    text = json.dumps([int(i) for i in indices]) + "\n"
    partial = path.with_name(f".{path.name}.partial")
    try:  # written aside, then renamed: a failed write leaves an existing file as it was
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise RewardlabError(f"{path}: cannot write ({e.strerror or e})") from e
    return path


class _LongInteger(str):
    """Stands in for an integer literal too long to be a source index (shown as its length)."""


def _parse_index(literal: str) -> int | str:
    # Python refuses int() of more than 4,300 digits with a ValueError (not a JSON error); no source
    # index comes near 30 digits, so a longer one is kept aside and reported by its length.
    if len(literal.lstrip("-")) > 30:
        return _LongInteger(f"a {len(literal.lstrip('-')):,}-digit integer")
    return int(literal)


def read_indices(path: str | Path) -> list[int]:
    """Read a flagged_indices.json: a JSON list of non-negative integers; returns them sorted,
    duplicates dropped. SourceError naming the file (and line or item) for anything else."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"{path}: cannot read: {e}") from e
    try:
        data = json.loads(text, parse_int=_parse_index)
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON list of source indices, got a "
                          f"{type(data).__name__}")
    for position, value in enumerate(data):
        # bool is an int subclass in Python; true/false in the file is a mistake, not 1/0.
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            shown = value if isinstance(value, _LongInteger) else json.dumps(value)
            raise SourceError(f"{path}: item {position} is {shown}, "
                              "expected a non-negative integer source index")
    return sorted(set(data))


def review_flag(store: Store, name: str, *, source_index: int, detector: str, is_issue: bool,
                note: str = "", split: Split = "train", subset: str | None = None) -> int:
    """`Store.add_review` for a pair that `detector`'s latest run on `name` flagged (else
    SelectionError naming the detectors that ran, or the pairs it did flag): a review under a
    mistyped detector, or of a pair it never flagged, would count towards no precision."""
    check_flagged_pair(store, name, detector=detector, source_index=source_index, split=split,
                       subset=subset)
    return store.add_review(name, source_index=source_index, detector=detector, is_issue=is_issue,
                            note=note, split=split, subset=subset)


def import_flagged_indices(store: Store, name: str, indices: Iterable[int], *, label: str,
                           path: str | Path | None = None) -> DetectorResult:
    """Save `indices` (source indices of train pairs) as a run of detector `label` and return it.

    Every train pair whose source index is listed is flagged (score 1), the rest get score 0; with
    several source files in one dataset, all train pairs sharing a listed index are flagged. Any
    index that is not a train source index raises StoreError and nothing is stored. `path`, the
    file the indices came from, is named in the reasons and params.
    """
    label = label.strip()
    if not label:
        raise StoreError("the imported detector needs a non-empty label")
    if label in DETECTORS:
        raise StoreError(f"label {label!r} is a built-in detector; choose another name so its "
                         "runs are not mixed with the imported flags")
    wanted = sorted({int(i) for i in indices})
    train = store.load_pairs(name, split="train")
    known = {p.source_index for p in train}
    missing = [i for i in wanted if i not in known]
    if missing:
        span = (f"train source indices run {min(known)}..{max(known)}" if known
                else "the dataset has no train pairs")
        raise StoreError(f"{len(missing)} of {len(wanted)} indices are not source indices of "
                         f"train pairs in dataset {name!r} (first: "
                         f"{', '.join(map(str, missing[:5]))}; {span}); nothing stored")
    source = Path(path).name if path is not None else "a flagged-indices list"
    chosen = set(wanted)
    flagged = np.array([p.source_index in chosen for p in train], dtype=bool)
    result = DetectorResult(
        detector=label, scores=flagged.astype(np.float64), flagged=flagged,
        reasons=[f"imported from {source}" if f else "" for f in flagged.tolist()],
        threshold=None, threshold_kind="data",
        params={"source": source, "indices": len(wanted)})
    store.save_detector_run(name, result, _example_ids(train))
    return result
