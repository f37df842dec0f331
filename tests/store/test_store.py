"""Store round trips on SQLite and PostgreSQL: every test runs on both via the `db_url` fixture."""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from rewardlab.data.pairs import PreferencePair, pair_from_hh
from rewardlab.data.source_result import SourceResult
from rewardlab.errors import StoreError
from rewardlab.store import bulk as store_bulk
from rewardlab.store.store import IngestCounts, Store, mask_url, resolve_db_url

try:
    from rewardlab.flags.detectors.base import DetectorResult
except ImportError:  # written concurrently; the store only needs these fields (duck typing)
    @dataclass
    class DetectorResult:  # type: ignore[no-redef]
        detector: str
        scores: np.ndarray
        flagged: np.ndarray
        reasons: list[str]
        threshold: float | None
        threshold_kind: str
        params: dict
        seconds: float = 0.0


def source(pairs: list[PreferencePair], spec: str = "hand-made",
           rejected: list[tuple[int, str]] | None = None) -> SourceResult:
    rejected = rejected or []
    return SourceResult(spec=spec, pairs=pairs, read=len(pairs) + len(rejected), rejected=rejected)


def make_pairs() -> list[PreferencePair]:
    """Five pairs covering every stored field; deliberately not in load order."""
    return [
        PreferencePair(source_index=2, split="train", subset="harmless-base", prompt="How?",
                       chosen="Carefully.", rejected="", context="Human: hi\n\nAssistant: hello",
                       raw_chosen="\n\nHuman: hi\n\nAssistant: hello\n\nHuman: How?\n\n"
                                  "Assistant: Carefully.",
                       raw_rejected="\n\nHuman: hi\n\nAssistant: hey\n\nHuman: How?\n\nAssistant:",
                       histories_differ=True, parse_issue="rejected: empty reply",
                       meta={"quality": 0.25, "flipped": True, "tags": ["a", "é"]}),
        PreferencePair(source_index=0, split="train", subset="harmless-base", prompt="Why?",
                       chosen="Because.", rejected="No.\tTab\\ and\nnewline"),
        PreferencePair(source_index=1, split="train", prompt="What?", chosen="This.",
                       rejected="That."),
        PreferencePair(source_index=0, split="test", subset="harmless-base", prompt="Who?",
                       chosen="Me.", rejected="You."),
        PreferencePair(source_index=1, split="test", subset="harmless-base", prompt="When?",
                       chosen="Now.", rejected="Never."),
    ]


def result_for(detector: str, flags: list[bool], *, scores: list[float] | None = None,
               threshold: float | None = 0.5) -> DetectorResult:
    flagged = np.array(flags, dtype=bool)
    return DetectorResult(
        detector=detector, scores=np.array(scores or [float(f) for f in flags]), flagged=flagged,
        reasons=[f"{detector} says so" if f else "" for f in flags], threshold=threshold,
        threshold_kind="fixed", params={"k": np.int64(3), "alpha": np.float64(0.5)}, seconds=0.25)


@pytest.fixture
def loaded(store: Store) -> list[PreferencePair]:
    """Dataset "hh" holding `make_pairs()`; returns its train pairs as loaded."""
    store.ingest("hh", source(make_pairs()))
    return store.load_pairs("hh", split="train")


def test_ingest_round_trip_keeps_every_field(store: Store) -> None:
    pairs = make_pairs()
    counts = store.ingest("hh", source(pairs, rejected=[(7, "missing field 'chosen'")]))
    assert counts == IngestCounts(
        dataset="hh", read=6, ingested=5, already_present=0,
        rejected=[(7, "missing field 'chosen'")], parse_issues=[(2, "rejected: empty reply")],
        by_group={"test/harmless-base": {"ingested": 2, "already_present": 0},
                  "train/-": {"ingested": 1, "already_present": 0},
                  "train/harmless-base": {"ingested": 2, "already_present": 0}})
    got = store.load_pairs("hh")
    assert all(isinstance(p.example_id, int) for p in got)
    assert len({p.example_id for p in got}) == 5
    expected = sorted(pairs, key=lambda p: (p.split, p.source_index))
    assert [replace(p, example_id=None) for p in got] == expected
    assert [p.content_hash for p in got] == [p.content_hash for p in expected]
    assert [p.prompt for p in store.load_pairs("hh", split="test")] == ["Who?", "When?"]
    assert store.dataset_names() == ["hh"]


def test_reingest_is_idempotent(store: Store) -> None:
    train = [p for p in make_pairs() if p.split == "train"]
    store.ingest("hh", source(train, spec="a.jsonl"))
    again = store.ingest("hh", source(train, spec="a.jsonl"))
    assert (again.ingested, again.already_present) == (0, 3)
    assert again.by_group["train/-"] == {"ingested": 0, "already_present": 1}
    new = PreferencePair(source_index=9, split="test", prompt="p", chosen="c", rejected="r")
    # A second source may fill the split the first lacks (a separate test file; see binding.py).
    more = store.ingest("hh", source([new, new], spec="b.jsonl"))
    # The in-source duplicate of `new` counts as already present, never as a second row.
    assert (more.ingested, more.already_present) == (1, 1)
    assert len(store.load_pairs("hh")) == 4
    summary = store.dataset_summaries()[0]
    assert summary["source"] == "a.jsonl + b.jsonl"


def test_failed_ingest_leaves_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_bulk, "CHUNK", 1)  # so some rows are written before the failure
    good = make_pairs()
    bad = replace(good[0], source_index=99, prompt=None)  # type: ignore[arg-type]  # NOT NULL
    with pytest.raises(StoreError, match="rolled back, nothing saved"):
        store.ingest("broken", source([good[1], good[2], bad, good[3]]))
    assert store.dataset_names() == []
    store.ingest("hh", source(good[:2]))
    bad_test = replace(good[3], source_index=98, prompt=None)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="rolled back, nothing saved"):
        store.ingest("hh", source([good[3], bad_test], spec="other"))
    assert len(store.load_pairs("hh")) == 2
    assert store.dataset_summaries()[0]["source"] == "hand-made"
    # the failed ingest left no binding of the test split behind: another test source is taken
    assert store.ingest("hh", source([good[4]], spec="third")).ingested == 1


def test_unknown_dataset_lists_existing(store: Store) -> None:
    with pytest.raises(StoreError, match=r"no dataset 'x' in .*the store is empty — run "
                                         r"`rewardlab ingest` first"):
        store.load_pairs("x")
    store.ingest("b", source(make_pairs()[:1]))
    store.ingest("a", source(make_pairs()[:1]))
    for call in (lambda: store.load_pairs("x"), lambda: store.latest_runs("x"),
                 lambda: store.reviews("x")):
        with pytest.raises(StoreError, match=r"^no dataset 'x' in .*; datasets: a, b$"):
            call()


@pytest.mark.parametrize(("url", "expected"), [
    ("not a url", "cannot parse database URL 'not a url'"),
    ("mysql://u:pw@localhost/db", "unsupported database 'mysql' in mysql://u:***@localhost/db"),
    ("postgresql+nosuchdriver://u:secret@localhost/db", "unknown database driver in "
     "postgresql+nosuchdriver://u:***@localhost/db"),
    ("postgresql+psycopg://u:secret@127.0.0.1:1/db?connect_timeout=2",
     "cannot open database postgresql+psycopg://u:***@127.0.0.1:1/db"),
])
def test_bad_url_is_one_masked_line(url: str, expected: str) -> None:
    with pytest.raises(StoreError) as info:
        Store(url)
    message = str(info.value)
    assert expected in message and "expected sqlite:///" in message
    assert "secret" not in message and "\n" not in message


def test_bad_sqlite_path(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open database sqlite:///.*/missing/t.db"):
        Store(f"sqlite:///{tmp_path}/missing/t.db")


def test_resolve_db_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REWARDLAB_DB", raising=False)
    assert resolve_db_url(None) == "sqlite:///rewardlab.db"
    monkeypatch.setenv("REWARDLAB_DB", "sqlite:///env.db")
    assert resolve_db_url(None) == "sqlite:///env.db"
    assert resolve_db_url("sqlite:///arg.db") == "sqlite:///arg.db"
    assert mask_url("postgresql+psycopg://me:p@ss@h/db") == "postgresql+psycopg://me:***@h/db"


def test_detector_runs_flags_and_latest(store: Store, loaded: list[PreferencePair]) -> None:
    ids = [p.example_id for p in loaded]  # train: source_index 0, 1, 2
    first = store.save_detector_run("hh", result_for("dup", [True, True, False]), ids)
    second = store.save_detector_run(
        "hh", result_for("dup", [False, True, True], scores=[0.1, 0.7, math.nan]), ids)
    other = store.save_detector_run("hh", result_for("empty", [False, False, True],
                                                     threshold=None), ids)
    assert second > first
    runs = store.latest_runs("hh")
    assert list(runs) == ["dup", "empty"]
    assert runs["dup"]["run_id"] == second and runs["empty"]["run_id"] == other
    assert runs["dup"] | {"created_at": None} == {
        "run_id": second, "params": {"k": 3, "alpha": 0.5}, "threshold": 0.5,
        "threshold_kind": "fixed", "flagged": 2, "total": 3, "seconds": 0.25, "created_at": None}
    assert runs["empty"]["threshold"] is None
    assert store.flagged_example_ids("hh") == {"dup": {ids[1], ids[2]}, "empty": {ids[2]}}
    assert store.flagged_example_ids("hh", ["empty"]) == {"empty": {ids[2]}}
    with pytest.raises(StoreError, match="no run of detector nope .*detectors run: dup, empty"):
        store.flagged_example_ids("hh", ["nope"])

    rows = store.flag_rows("hh")
    assert [(r["detector"], r["source_index"]) for r in rows] == [("dup", 1), ("dup", 2),
                                                                  ("empty", 2)]
    assert rows[0] | {"example_id": 0} == {
        "example_id": 0, "source_index": 1, "split": "train", "subset": "", "prompt": "What?",
        "chosen": "This.", "rejected": "That.", "detector": "dup", "score": 0.7,
        "reason": "dup says so"}
    assert math.isnan(rows[1]["score"])  # NaN survives as NaN (stored as NULL)
    assert [r["detector"] for r in store.flag_rows("hh", detector="empty")] == ["empty"]
    assert len(store.flag_rows("hh", limit=1)) == 1


def test_detector_run_rejects_mismatched_ids(store: Store, loaded: list[PreferencePair]) -> None:
    ids = [p.example_id for p in loaded]
    store.ingest("other", source(make_pairs()[:1], spec="x"))
    foreign = store.load_pairs("other")[0].example_id
    with pytest.raises(StoreError, match="returned 3 scores.* for 2 examples"):
        store.save_detector_run("hh", result_for("dup", [True, False, False]), ids[:2])
    with pytest.raises(StoreError, match="1 example ids are not in dataset 'hh'"):
        store.save_detector_run("hh", result_for("dup", [True, False, False]),
                                [ids[0], ids[1], foreign])
    assert store.latest_runs("hh") == {}


def test_reviews(store: Store, loaded: list[PreferencePair]) -> None:
    store.save_detector_run("hh", result_for("dup", [True, False, True]),
                            [p.example_id for p in loaded])
    first = store.add_review("hh", source_index=2, detector="dup", is_issue=True, note="real")
    second = store.add_review("hh", source_index=0, detector="dup", is_issue=False,
                              split="test")
    reviews = store.reviews("hh")
    assert [r["id"] for r in reviews] == [first, second]
    assert reviews[0] | {"created_at": None, "updated_at": None, "reviewer": None} == {
        "id": first, "example_id": loaded[2].example_id, "source_index": 2, "split": "train",
        "subset": "harmless-base", "detector": "dup", "verdict": "tp", "is_issue": True,
        "note": "real", "created_at": None, "updated_at": None, "reviewer": None}
    assert (reviews[1]["split"], reviews[1]["is_issue"]) == ("test", False)
    with pytest.raises(StoreError, match="no train pair with source_index 42 in dataset 'hh'"):
        store.add_review("hh", source_index=42, detector="dup", is_issue=True)


def test_review_disambiguates_subsets(store: Store) -> None:
    # Hub sources restart source_index per subset: index 0 exists twice in train.
    pairs = [PreferencePair(source_index=0, split="train", subset=s, prompt=s, chosen="c",
                            rejected="r") for s in ("harmless-base", "helpful-base")]
    store.ingest("hub", source(pairs))
    with pytest.raises(StoreError, match="ambiguous.*harmless-base, helpful-base"):
        store.add_review("hub", source_index=0, detector="dup", is_issue=True)
    loaded = store.load_pairs("hub")
    store.save_detector_run("hub", result_for("dup", [False, True]),
                            [p.example_id for p in loaded])
    store.add_review("hub", source_index=0, detector="dup", is_issue=True)  # the flagged one
    store.add_review("hub", source_index=0, subset="harmless-base", detector="x", is_issue=False)
    assert [r["subset"] for r in store.reviews("hub")] == ["helpful-base", "harmless-base"]


def test_experiments(store: Store) -> None:
    assert store.experiments() == []
    exp = store.record_experiment(name="cmp", dataset="hh", config={"seeds": (0, 1)},
                                  metrics={"acc": np.float32(0.5), "nll": math.nan},
                                  out_dir="out/cmp")
    run = store.add_experiment_run(exp, condition="clean-remove", seed=1,
                                   metrics={"accuracy": 0.75}, checkpoint="out/cmp/s1")
    store.add_experiment_run(exp, condition="unfiltered", seed=0, metrics={}, checkpoint=None)
    [got] = store.experiments()
    assert got | {"created_at": None} == {
        "id": exp, "name": "cmp", "dataset": "hh", "config": {"seeds": [0, 1]},
        "metrics": {"acc": 0.5, "nll": None}, "out_dir": "out/cmp", "created_at": None,
        "runs": [{"id": run, "condition": "clean-remove", "seed": 1,
                  "metrics": {"accuracy": 0.75}, "checkpoint": "out/cmp/s1"},
                 {"id": run + 1, "condition": "unfiltered", "seed": 0, "metrics": {},
                  "checkpoint": None}],
        "runs_planned": None, "runs_done": None}  # recorded without a plan
    assert got["created_at"].endswith("+00:00")
    with pytest.raises(StoreError, match="no experiment with id 999"):
        store.add_experiment_run(999, condition="x", seed=0, metrics={}, checkpoint=None)


def test_dataset_summaries(store: Store, loaded: list[PreferencePair]) -> None:
    store.ingest("empty", source([], spec="nothing"))
    test_pairs = store.load_pairs("hh", split="test")
    ids = [p.example_id for p in loaded]
    store.save_detector_run("hh", result_for("a", [True, True, False]), ids)
    store.save_detector_run("hh", result_for("a", [True, False, False]), ids)  # latest wins
    store.save_detector_run("hh", result_for("b", [True, False, True]), ids)
    # A test-split flag must not count: `flagged` is about training pairs.
    store.save_detector_run("hh", result_for("leak", [True]), [test_pairs[0].example_id])
    empty, hh = store.dataset_summaries()
    assert empty | {"created_at": None} == {
        "name": "empty", "source": "nothing", "created_at": None,
        "pairs": {"train": 0, "test": 0}, "flagged": 0, "detectors": [],
        "rated_prompts": 0, "rated_responses": 0, "ties": 0}
    assert (hh["name"], hh["pairs"], hh["flagged"], hh["detectors"]) == (
        "hh", {"train": 3, "test": 2}, 2, ["a", "b", "leak"])


def test_shared_sample_ingests_once(store: Store, sample_path: Path) -> None:
    with gzip.open(sample_path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    pairs = [pair_from_hh(r["chosen"], r["rejected"], source_index=i, split="test",
                          subset="harmless-base") for i, r in enumerate(rows)]
    first = store.ingest("sample", source(pairs, spec=str(sample_path)))
    assert (first.read, first.ingested, first.already_present) == (1512, 1512, 0)
    again = store.ingest("sample", source(pairs, spec=str(sample_path)))
    assert (again.ingested, again.already_present) == (0, 1512)
    assert again.by_group == {"test/harmless-base": {"ingested": 0, "already_present": 1512}}
    loaded = store.load_pairs("sample")
    assert [replace(p, example_id=None) for p in loaded] == pairs


def _create_tables(url: str, *ddl: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in ddl:
            conn.execute(text(statement))
    engine.dispose()


def _table_names(url: str) -> list[str]:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        return sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_foreign_database_is_refused_untouched(db_url: str) -> None:
    _create_tables(db_url, "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)",
                   "CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    with pytest.raises(StoreError, match=r"holds tables that are not rewardlab's: orders, users; "
                                         r".*another database"):
        Store(db_url)
    assert _table_names(db_url) == ["orders", "users"]  # nothing added


def test_same_table_names_other_columns_are_refused(db_url: str) -> None:
    _create_tables(db_url, "CREATE TABLE datasets (id INTEGER PRIMARY KEY, title TEXT)")
    with pytest.raises(StoreError, match=r"table 'datasets' lacks column\(s\) created_at, name, "
                                         r"source and has column\(s\) title"):
        Store(db_url)
    assert _table_names(db_url) == ["datasets"]


def test_rewardlab_database_with_an_extra_table_still_opens(db_url: str) -> None:
    Store(db_url).close()
    _create_tables(db_url, "CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    with Store(db_url) as store:  # every rewardlab table exists: nothing is added, so it opens
        assert store.dataset_names() == []


def test_sqlite_connections_wait_and_use_wal(tmp_path: Path) -> None:
    from sqlalchemy import text

    with Store(f"sqlite:///{tmp_path}/t.db") as store, store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_second_sqlite_writer_waits_past_five_seconds(tmp_path: Path) -> None:
    import sqlite3
    import threading
    import time

    path = tmp_path / "t.db"
    Store(f"sqlite:///{path}").close()
    locked = threading.Event()

    def hold_write_lock() -> None:  # another process's long ingest, as SQLite sees it
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(6)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    locked.wait()
    started = time.monotonic()
    try:
        with Store(f"sqlite:///{path}") as store:
            assert store.ingest("hh", source(make_pairs())).ingested == 5
    finally:
        holder.join()
    assert time.monotonic() - started > 5


_WRITER = """
import sys
from rewardlab.data.pairs import PreferencePair
from rewardlab.data.source_result import SourceResult
from rewardlab.store.store import Store

url, tag = sys.argv[1], sys.argv[2]
with Store(url) as store:
    for i in range(15):
        pairs = [PreferencePair(source_index=j, split="train", prompt=f"{tag} {i} {j}",
                                chosen="c", rejected="r") for j in range(300)]
        store.ingest(f"{tag}-{i}", SourceResult(spec=f"{tag}-{i}", pairs=pairs, read=300,
                                                rejected=[]))
        store.add_review(f"{tag}-{i}", source_index=0, detector="d", is_issue=True)
"""


def test_two_processes_write_one_sqlite_file_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/t.db"
    Store(url).close()
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, url, tag],
                                stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    with Store(url) as store:
        assert len(store.dataset_names()) == 30


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql+psycopg://u@h/db?password=secret&sslmode=require",
     "postgresql+psycopg://u@h/db?password=***&sslmode=require"),
    ("postgresql+psycopg://u:secret@h/db?sslmode=x&PASSWORD=secret",
     "postgresql+psycopg://u:***@h/db?sslmode=x&PASSWORD=***"),
    ("postgresql://h/db?sslpassword=secret", "postgresql://h/db?sslpassword=***"),
    ("host=h password=secret dbname=x", "host=h password=*** dbname=x"),
])
def test_mask_url_hides_query_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://u@127.0.0.1:1/db?password=secret&connect_timeout=2",
    "postgresql+psycopg://u@127.0.0.1:abc/db?password=secret",
    "mysql://u@localhost/db?password=secret",
    "host=localhost password=secret",
    "postgresql+psycopg://u@127.0.0.1:1/db?password=secret&nosuchoption=1",
])
def test_query_password_never_in_errors(url: str) -> None:
    with pytest.raises(StoreError) as info:
        Store(url)
    assert "secret" not in str(info.value) and "***" in str(info.value)


def test_nul_characters_reject_the_row_on_every_backend(store: Store) -> None:
    # PostgreSQL refuses NUL in text and SQLite stores it: both reject the row, naming the field.
    good = make_pairs()[:3]
    nul_reply = PreferencePair(source_index=7, split="train", prompt="p", chosen="a\x00b",
                               rejected="r", raw_chosen="\n\nHuman: p\n\nAssistant: a\x00b")
    nul_context = PreferencePair(source_index=8, split="train", prompt="p", chosen="c",
                                 rejected="r", context="Human: x\x00")
    counts = store.ingest("hh", source(good + [nul_reply, nul_context], rejected=[(9, "other")]))
    assert (counts.read, counts.ingested, counts.already_present) == (6, 3, 0)
    assert counts.rejected == [
        (7, "NUL character (\\x00) in 'chosen', 'raw_chosen' (the database cannot store it)"),
        (8, "NUL character (\\x00) in 'context' (the database cannot store it)"),
        (9, "other")]
    assert sorted(p.source_index for p in store.load_pairs("hh")) == [0, 1, 2]


def test_nul_in_a_file_names_its_row(store: Store, tmp_path: Path) -> None:
    from rewardlab.data.sources import read_source

    path = tmp_path / "nul.jsonl"
    rows = [{"chosen": "\n\nHuman: q\n\nAssistant: fine", "rejected": "\n\nHuman: q\n\nAssistant: x"},
            {"chosen": "\n\nHuman: q\n\nAssistant: a\u0000b", "rejected": "\n\nHuman: q\n\nAssistant: y"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    counts = store.ingest("nul", read_source(str(path)))
    assert counts.ingested == 1 and [i for i, _ in counts.rejected] == [1]
    assert "'chosen'" in counts.rejected[0][1]
