"""One answer to "which pairs are flagged?" (issue 28 item 5): `flagged_ids(store, name, spec)`
for one flag set, several (their union) or the default clean set, reviewed-only sets included;
`flagged_by` keys each set as given. SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest

from rewardlab.data.sources import read_source
from rewardlab.errors import SelectionError
from rewardlab.flags.flagged import FlagSpec, detector_scores, flag_spec, flagged_by, flagged_ids
from rewardlab.store.records import DetectorResult
from rewardlab.store.store import Store


def _run(store: Store, detector: str, flags: list[bool]) -> None:
    ids = [p.example_id or 0 for p in store.load_pairs("syn", split="train")]
    store.save_detector_run("syn", DetectorResult(
        detector, np.arange(len(flags), dtype=float), flags, ["x" if f else "" for f in flags],
        None, "data", {}), ids)


def test_flag_sets_one_several_reviewed_only(store: Store) -> None:
    store.ingest("syn", read_source("synthetic:n=6,seed=0"))
    ids = [p.example_id or 0 for p in store.load_pairs("syn", split="train")]
    _run(store, "a", [True, True, False, False, False, False])
    _run(store, "b", [False, True, True, False, False, False])
    store.save_review("syn", example_id=ids[0], detector="a", verdict="tp", reviewer="ann")
    store.save_review("syn", example_id=ids[1], detector="a", verdict="fp", reviewer="ann")
    assert flagged_ids(store, "syn", "a") == {ids[0], ids[1]}
    assert flagged_ids(store, "syn", ["a", "b"]) == {ids[0], ids[1], ids[2]}
    assert flagged_ids(store, "syn", "reviewed:a") == {ids[0]}  # the confirmed flag only
    assert flagged_ids(store, "syn", FlagSpec("a", reviewed_only=True)) == {ids[0]}
    assert flagged_ids(store, "syn", ["reviewed:a", "b"]) == {ids[0], ids[1], ids[2]}
    assert flagged_by(store, "syn", ["b", FlagSpec("a", reviewed_only=True)]) == {
        "b": {ids[1], ids[2]}, "reviewed:a": {ids[0]}}
    assert detector_scores(store, "syn", "b") == {i: float(k) for k, i in enumerate(ids)}
    assert flag_spec("reviewed: a") == FlagSpec("a", reviewed_only=True)


def test_a_flag_set_whose_detector_has_not_run_is_one_line(store: Store) -> None:
    store.ingest("syn", read_source("synthetic:n=4,seed=0"))
    with pytest.raises(SelectionError, match=r"no detector has run on 'syn' \(ran: none\)"):
        flagged_ids(store, "syn")  # the default clean set
    _run(store, "a", [True, False, False, False])
    with pytest.raises(SelectionError, match=r"detector\(s\) nope have not run on 'syn'; run "
                                             r"`rewardlab flag syn --detectors nope` \(ran: a\)"):
        flagged_ids(store, "syn", "reviewed:nope")
    with pytest.raises(SelectionError, match="have not run on 'syn' \\(ran: a\\)"):
        detector_scores(store, "syn", "nope")
    with pytest.raises(SelectionError, match="needs a detector name"):
        flagged_ids(store, "syn", "reviewed:")
    with pytest.raises(SelectionError, match="no detectors named"):
        flagged_ids(store, "syn", [])
