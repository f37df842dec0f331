"""Store round trips on SQLite and PostgreSQL: every test runs on both via the `db_url` fixture."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from rewardlab.data.pairs import PreferencePair, pair_from_hh
from rewardlab.errors import StoreError
from rewardlab.store import schema as store_schema
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


@dataclass
class FakeSource:
    """Same fields as sources.SourceResult (the store only reads them)."""

    spec: str
    pairs: list[PreferencePair]
    read: int
    rejected: list[tuple[int, str]]


def source(pairs: list[PreferencePair], spec: str = "hand-made",
           rejected: list[tuple[int, str]] | None = None) -> FakeSource:
    rejected = rejected or []
    return FakeSource(spec=spec, pairs=pairs, read=len(pairs) + len(rejected), rejected=rejected)


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
def store(db_url: str) -> Iterator[Store]:
    with Store(db_url) as opened:
        yield opened


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
        rejected=[(7, "missing field 'chosen'")],
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
    pairs = make_pairs()
    store.ingest("hh", source(pairs, spec="a.jsonl"))
    again = store.ingest("hh", source(pairs, spec="a.jsonl"))
    assert (again.ingested, again.already_present) == (0, 5)
    assert again.by_group["train/-"] == {"ingested": 0, "already_present": 1}
    new = PreferencePair(source_index=9, split="test", prompt="p", chosen="c", rejected="r")
    more = store.ingest("hh", source([new, new, pairs[0]], spec="b.jsonl"))
    # The in-source duplicate of `new` counts as already present, never as a second row.
    assert (more.ingested, more.already_present) == (1, 2)
    assert len(store.load_pairs("hh")) == 6
    summary = store.dataset_summaries()[0]
    assert summary["source"] == "a.jsonl + b.jsonl"


def test_failed_ingest_leaves_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_schema, "CHUNK", 1)  # so some rows are written before the failure
    good = make_pairs()
    bad = replace(good[0], source_index=99, prompt=None)  # type: ignore[arg-type]  # NOT NULL
    with pytest.raises(StoreError, match="rolled back, nothing saved"):
        store.ingest("broken", source([good[1], good[2], bad, good[3]]))
    assert store.dataset_names() == []
    store.ingest("hh", source(good[:2]))
    with pytest.raises(StoreError):
        store.ingest("hh", source([good[2], bad], spec="other"))
    assert len(store.load_pairs("hh")) == 2
    assert store.dataset_summaries()[0]["source"] == "hand-made"


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
    assert reviews[0] | {"created_at": None} == {
        "id": first, "example_id": loaded[2].example_id, "source_index": 2, "split": "train",
        "subset": "harmless-base", "detector": "dup", "is_issue": True, "note": "real",
        "created_at": None}
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
                  "checkpoint": None}]}
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
        "pairs": {"train": 0, "test": 0}, "flagged": 0, "detectors": []}
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
