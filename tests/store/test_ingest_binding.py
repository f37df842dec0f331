"""A dataset is bound to its source: a different source under the same name is refused, never merged.

Every test runs on SQLite and PostgreSQL (the `db_url` fixture).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from rewardlab.cli.main import main
from rewardlab.data.pairs import PreferencePair
from rewardlab.data.sources import read_source
from rewardlab.errors import StoreError
from rewardlab.experiment.compare import CompareConfig, _ingest
from rewardlab.store.records import DetectorResult
from rewardlab.store.store import Store


def write_hh(path: Path, replies: list[str]) -> Path:
    """An HH-RLHF .jsonl file with one pair per reply."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"chosen": f"\n\nHuman: q{i}\n\nAssistant: {r}",
             "rejected": f"\n\nHuman: q{i}\n\nAssistant: no"} for i, r in enumerate(replies)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def chosen_of(store: Store, name: str) -> list[str]:
    return [p.chosen for p in store.load_pairs(name)]


def test_same_file_name_other_directory_is_refused(store: Store, tmp_path: Path) -> None:
    first = write_hh(tmp_path / "d1" / "set.jsonl", ["a", "b"])
    second = write_hh(tmp_path / "d2" / "set.jsonl", ["x", "y", "z"])
    store.ingest("set", read_source(str(first)))
    with pytest.raises(StoreError, match=r"dataset 'set' .*d1/set.jsonl.*d2/set.jsonl.*another "
                                         r"--name.*--replace"):
        store.ingest("set", read_source(str(second)))
    assert chosen_of(store, "set") == ["a", "b"]


def test_edited_file_is_refused_then_replaced(store: Store, tmp_path: Path) -> None:
    path = write_hh(tmp_path / "set.jsonl", ["a", "b"])
    store.ingest("set", read_source(str(path)))
    write_hh(path, ["a", "B (corrected)"])
    with pytest.raises(StoreError, match="now gives other train pairs than when it was ingested"):
        store.ingest("set", read_source(str(path)))
    assert chosen_of(store, "set") == ["a", "b"]
    counts = store.ingest("set", read_source(str(path)), replace=True)
    assert (counts.ingested, counts.already_present, counts.replaced) == (2, 0, True)
    assert chosen_of(store, "set") == ["a", "B (corrected)"]
    assert store.dataset_summaries()[0]["source"] == str(path)


def test_identical_source_stays_idempotent(store: Store, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_hh(tmp_path / "set.jsonl", ["a", "b"])
    store.ingest("set", read_source(str(path)))
    monkeypatch.chdir(tmp_path)  # the same file by a relative path is the same source
    again = store.ingest("set", read_source("set.jsonl"))
    assert (again.ingested, again.already_present) == (0, 2)


def test_a_test_split_from_a_second_source(store: Store, tmp_path: Path) -> None:
    train = write_hh(tmp_path / "train.jsonl", ["a", "b"])
    test = write_hh(tmp_path / "test.jsonl", ["t"])
    other = write_hh(tmp_path / "other-test.jsonl", ["u"])
    store.ingest("ds", read_source(str(train)))
    store.ingest("ds", read_source(str(test), split="test"))
    again = store.ingest("ds", read_source(str(test), split="test"))
    assert (again.ingested, again.already_present) == (0, 1)
    with pytest.raises(StoreError, match="test pairs from .*test.jsonl"):
        store.ingest("ds", read_source(str(other), split="test"))
    with pytest.raises(StoreError, match="train pairs from .*train.jsonl"):
        store.ingest("ds", read_source(str(test)))  # the test file as train data
    assert [p.split for p in store.load_pairs("ds")] == ["test", "train", "train"]


def test_replace_drops_runs_flags_and_reviews_in_one_transaction(store: Store,
                                                                 tmp_path: Path) -> None:
    path = write_hh(tmp_path / "set.jsonl", ["a", "b"])
    store.ingest("set", read_source(str(path)))
    ids = [p.example_id for p in store.load_pairs("set")]
    result = DetectorResult(detector="dup", scores=np.array([1.0, 0.0]),
                            flagged=np.array([True, False]), reasons=["dup", ""], threshold=0.5,
                            threshold_kind="fixed", params={}, seconds=0.0)
    store.save_detector_run("set", result, [int(i) for i in ids if i is not None])
    store.add_review("set", source_index=0, detector="dup", is_issue=True)
    broken = read_source(str(write_hh(tmp_path / "new.jsonl", ["c"])))
    # prompt is NOT NULL in the store: the insert fails after the old rows were deleted
    bad = PreferencePair(source_index=5, split="train", prompt=None,  # type: ignore[arg-type]
                         chosen="c", rejected="r")
    broken.pairs.append(bad)
    with pytest.raises(StoreError, match="rolled back"):
        store.ingest("set", broken, replace=True)
    assert chosen_of(store, "set") == ["a", "b"]  # nothing of the failed replace remains
    assert list(store.latest_runs("set")) == ["dup"] and len(store.reviews("set")) == 1
    store.ingest("set", read_source(str(tmp_path / "new.jsonl")), replace=True)
    assert chosen_of(store, "set") == ["c"]
    assert store.latest_runs("set") == {} and store.reviews("set") == []


def test_database_from_before_bindings(db_url: str, tmp_path: Path) -> None:
    path = write_hh(tmp_path / "set.jsonl", ["a", "b"])
    other = write_hh(tmp_path / "other.jsonl", ["x"])
    with Store(db_url) as store:
        store.ingest("set", read_source(str(path)))
    engine = create_engine(db_url)
    with engine.begin() as conn:  # what a database created before this change looks like
        conn.execute(text("DROP TABLE dataset_sources"))
    engine.dispose()
    with Store(db_url) as store:  # the new table is added; the old dataset keeps working
        again = store.ingest("set", read_source(str(path)))
        assert (again.ingested, again.already_present) == (0, 2)
        with pytest.raises(StoreError, match="dataset 'set'"):
            store.ingest("set", read_source(str(other)))
        assert chosen_of(store, "set") == ["a", "b"]


def test_compare_refuses_a_second_file_of_the_same_name(store: Store, tmp_path: Path) -> None:
    first = write_hh(tmp_path / "d1" / "set.jsonl", ["a", "b"])
    second = write_hh(tmp_path / "d2" / "set.jsonl", ["x"])
    _ingest(store, CompareConfig(train=str(first)), "set")
    with pytest.raises(StoreError, match="another --name"):
        _ingest(store, CompareConfig(train=str(second)), "set")
    assert chosen_of(store, "set") == ["a", "b"]


def test_cli_ingest_replace(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_hh(tmp_path / "set.jsonl", ["a", "b"])
    assert main(["ingest", str(path), "--name", "set", "--db", db_url]) == 0
    write_hh(path, ["c"])
    assert main(["ingest", str(path), "--name", "set", "--db", db_url]) == 2
    assert "--replace" in capsys.readouterr().err
    assert main(["ingest", str(path), "--name", "set", "--db", db_url, "--replace"]) == 0
    assert "replaced dataset 'set'" in capsys.readouterr().out
    with Store(db_url) as store:
        assert chosen_of(store, "set") == ["c"]
