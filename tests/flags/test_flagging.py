"""Flagging a stored dataset: runs are saved, flagged_indices.json round-trips, bad imports store
nothing. Runs on SQLite and (with REWARDLAB_TEST_PG_URL) PostgreSQL via the `db_url` fixture."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rewardlab.data.pairs import PreferencePair, Split
from rewardlab.data.sources import SourceResult
from rewardlab.errors import SelectionError, SourceError, StoreError
from rewardlab.flags.flagging import (
    export_flagged_indices,
    flag_dataset,
    flag_summary,
    import_flagged_indices,
    read_indices,
    write_indices,
)
from rewardlab.store.store import Store

# Fast rule detectors (the embedding one is covered in test_detectors.py).
FAST = ["empty_response", "identical_responses", "diverging_context", "duplicate_pair",
        "test_leakage", "refusal_bias", "length_ratio"]


def pair(i: int, split: Split = "train", *, prompt: str | None = None, chosen: str | None = None,
         rejected: str | None = None, subset: str = "") -> PreferencePair:
    return PreferencePair(
        source_index=i, split=split, subset=subset, prompt=prompt or f"Question number {i}?",
        chosen=f"A helpful answer to question {i}." if chosen is None else chosen,
        rejected=f"A weaker reply to question {i}." if rejected is None else rejected)


def dataset_pairs() -> tuple[list[PreferencePair], set[int]]:
    """Train pairs 0..29 and test pairs 0..4 with known problems; returns (pairs, bad indices)."""
    train = [pair(i) for i in range(30)]
    train[4] = pair(4, chosen="")  # empty_response
    train[9] = pair(9, chosen="Same.", rejected="same.")  # identical_responses
    train[17] = pair(17, prompt=train[2].prompt, chosen=train[2].chosen,
                     rejected=train[2].rejected)  # duplicate_pair of index 2
    train[21] = pair(21, prompt="Is this leaked?")  # test_leakage
    test = [pair(i, "test", prompt=f"Test question {i}?") for i in range(4)]
    test.append(pair(4, "test", prompt="is this  LEAKED?"))
    return train + test, {4, 9, 17, 21}


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    pairs, _ = dataset_pairs()
    s.ingest("d", SourceResult(spec="planted", pairs=pairs, read=len(pairs), rejected=[]))
    yield s
    s.close()


def test_flag_saves_runs_and_summarizes(store: Store) -> None:
    results = flag_dataset(store, "d", detectors=FAST, progress=False)
    assert [r.detector for r in results] == FAST
    runs = store.latest_runs("d")
    for r in results:
        assert runs[r.detector]["flagged"] == r.n_flagged and runs[r.detector]["total"] == 30
        assert runs[r.detector]["threshold_kind"] == r.threshold_kind and r.seconds >= 0
    rows = flag_summary(results, 30)
    assert [row["detector"] for row in rows] == [*FAST, "union"]
    assert rows[-1]["flagged"] == 4 and rows[-1]["rate"] == pytest.approx(4 / 30)


def test_flag_export_import_round_trip(store: Store, tmp_path: Path) -> None:
    _, bad = dataset_pairs()
    flag_dataset(store, "d", detectors=FAST, progress=False)
    exported = export_flagged_indices(store, "d")
    assert exported == sorted(bad)
    assert export_flagged_indices(store, "d", detectors=["empty_response"]) == [4]

    path = write_indices(tmp_path / "out" / "flagged_indices.json", exported)
    assert json.loads(path.read_text()) == exported  # the notebook's format: a bare JSON list
    result = import_flagged_indices(store, "d", read_indices(path), label="notebook", path=path)
    assert result.n_flagged == len(bad) and result.threshold_kind == "data"
    assert export_flagged_indices(store, "d", detectors=["notebook"]) == exported
    reasons = {r["reason"] for r in store.flag_rows("d", detector="notebook")}
    assert reasons == {"imported from flagged_indices.json"}


def test_import_of_unknown_indices_stores_nothing(store: Store) -> None:
    with pytest.raises(StoreError, match=r"2 of 3 indices are not source indices of train pairs "
                                         r"in dataset 'd' \(first: 30, 99;"):
        import_flagged_indices(store, "d", [3, 30, 99], label="notebook")
    assert "notebook" not in store.latest_runs("d")
    with pytest.raises(StoreError, match="built-in detector"):
        import_flagged_indices(store, "d", [3], label="empty_response")


def test_import_flags_every_train_pair_sharing_a_source_index(db_url: str) -> None:
    pairs = [pair(0, subset="a"), pair(1, subset="a"), pair(0, subset="b", prompt="Other?")]
    with Store(db_url) as s:
        s.ingest("multi", SourceResult(spec="two files", pairs=pairs, read=3, rejected=[]))
        result = import_flagged_indices(s, "multi", [0], label="mine")
        assert result.n_flagged == 2
        flagged = s.flag_rows("multi", detector="mine")
        assert sorted((r["source_index"], r["subset"]) for r in flagged) == [(0, "a"), (0, "b")]
        assert export_flagged_indices(s, "multi") == [0]


def test_flag_rejects_bad_selection_before_running(store: Store) -> None:
    with pytest.raises(SelectionError, match="unknown detector 'nope'"):
        flag_dataset(store, "d", detectors=["empty_response", "nope"], progress=False)
    with pytest.raises(SelectionError, match="not being run"):
        flag_dataset(store, "d", detectors=["empty_response"],
                     params={"length_ratio": {"percentile": 95}}, progress=False)
    assert store.latest_runs("d") == {}
    with pytest.raises(StoreError, match="run `rewardlab flag` first"):
        export_flagged_indices(store, "d")


def test_flag_passes_params(store: Store) -> None:
    (result,) = flag_dataset(store, "d", detectors=["length_ratio"],
                             params={"length_ratio": {"min_ratio": "1.01", "percentile": 50}},
                             progress=False)
    assert store.latest_runs("d")["length_ratio"]["params"] == {"percentile": 50,
                                                                "min_ratio": 1.01}
    assert result.n_flagged > 0


@pytest.mark.parametrize(("content", "message"), [
    ("[1, 2", r"bad\.json:1: not valid JSON"),
    ('{"indices": [1]}', r"bad\.json: expected a JSON list of source indices, got a dict"),
    ("[1, -2]", r"bad\.json: item 1 is -2, expected a non-negative integer"),
    ("[0, true]", r"bad\.json: item 1 is true"),
    ("[0, 1.5]", r"bad\.json: item 1 is 1.5"),
    ('[0, "3"]', r'bad\.json: item 1 is "3"'),
])
def test_read_indices_errors_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SourceError, match=message):
        read_indices(path)


def test_read_indices_accepts_the_notebook_format(tmp_path: Path) -> None:
    path = tmp_path / "flagged_indices.json"
    path.write_text("[5, 1, 5, 0]")
    assert read_indices(path) == [0, 1, 5]
    with pytest.raises(SourceError, match="missing.json: no such file"):
        read_indices(tmp_path / "missing.json")
