"""Reviews in the store, on SQLite and PostgreSQL: one editable row per flag × reviewer, the queue's
filters and order, reviewed precision, the v1 → v2 migration, review files out and back in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _review_seed import LENGTH_FLAGGED, XSS, seed_pairs, seed_store
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from rewardlab.data.source_result import SourceResult
from rewardlab.errors import SelectionError, SourceError, StoreError
from rewardlab.evaluation.metrics import wilson_interval
from rewardlab.flags.detector_precision import consensus, precision_stats, score_buckets
from rewardlab.flags.flagging import review_flag
from rewardlab.flags.review_files import (
    export_review_file,
    import_reviews,
    read_review_file,
    review_tasks,
)
from rewardlab.flags.selection import flagged_by, split_reviewed
from rewardlab.store.records import QueuePage
from rewardlab.store.schema import SCHEMA_VERSION
from rewardlab.store.store import Store


def test_one_editable_row_per_flag_and_reviewer(store: Store, ids: list[int]) -> None:
    first = store.save_review("rev", example_id=ids[0], detector="length_ratio", verdict="tp",
                              reviewer="ann", note="")
    edited = store.save_review("rev", example_id=ids[0], detector="length_ratio", verdict="fp",
                               reviewer=" ann ", note="just verbose")
    assert edited["id"] == first["id"]
    assert (edited["verdict"], edited["is_issue"], edited["note"], edited["reviewer"]) == (
        "fp", False, "just verbose", "ann")
    assert edited["created_at"] == first["created_at"] and edited["updated_at"] >= first["updated_at"]
    store.save_review("rev", example_id=ids[0], detector="length_ratio", verdict="needs_review",
                      reviewer="bob")
    store.save_review("rev", example_id=ids[0], detector="oof_margin", verdict="tp",
                      reviewer="ann")  # another detector's flag on the same pair: its own row
    rows = store.reviews("rev")
    assert [(r["reviewer"], r["detector"], r["verdict"]) for r in rows] == [
        ("ann", "length_ratio", "fp"), ("bob", "length_ratio", "needs_review"),
        ("ann", "oof_margin", "tp")]


def test_cli_review_edits_in_place_under_the_default_reviewer(
        store: Store, ids: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDLAB_REVIEWER", "carol")
    first = review_flag(store, "rev", source_index=3, detector="length_ratio", is_issue=True)
    again = review_flag(store, "rev", source_index=3, detector="length_ratio", is_issue=False,
                        note="changed my mind")
    assert first == again
    (row,) = store.reviews("rev")
    assert (row["reviewer"], row["verdict"], row["is_issue"], row["source_index"]) == (
        "carol", "fp", False, 3)


def test_bad_reviews_are_refused_and_nothing_is_saved(store: Store, ids: list[int]) -> None:
    with pytest.raises(StoreError, match="verdict 'maybe' is not one of tp, fp, needs_review"):
        store.save_review("rev", example_id=ids[0], detector="length_ratio",
                          verdict="maybe", reviewer="ann")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="reviewer name must be 1..200 characters"):
        store.save_review("rev", example_id=ids[0], detector="length_ratio", verdict="tp",
                          reviewer="  ")
    store.ingest("other", SourceResult(spec="o", pairs=seed_pairs()[:2], read=2, rejected=[]))
    foreign = store.load_pairs("other")[0].example_id
    with pytest.raises(StoreError, match=f"example {foreign} is not in dataset 'rev'"):
        store.save_review("rev", example_id=int(foreign or 0), detector="length_ratio",
                          verdict="tp", reviewer="ann")
    good = {"example_id": ids[1], "detector": "length_ratio", "verdict": "tp",
            "reviewer": "ann", "note": ""}
    with pytest.raises(StoreError, match="verdict 'x'"):
        store.save_reviews("rev", [good, {**good, "example_id": ids[2], "verdict": "x"}])
    assert store.reviews("rev") == []  # the good one before the bad one was rolled back too


def _keys(page: QueuePage) -> list[tuple[str, int]]:
    return [(item["detector"], item["source_index"]) for item in page["items"]]


def test_queue_filters_sorts_and_pages(store: Store, ids: list[int]) -> None:
    everything = store.review_queue("rev", limit=100)
    assert everything["total"] == LENGTH_FLAGGED + 10
    # every detector: one after another, each by its own score
    assert [d for d, _ in _keys(everything)] == ["length_ratio"] * LENGTH_FLAGGED + [
        "oof_margin"] * 10
    for detector in ("length_ratio", "oof_margin"):
        scores = [i["score"] for i in everything["items"] if i["detector"] == detector]
        assert scores == sorted(scores, reverse=True)
    top = store.review_queue("rev", detector="length_ratio", limit=3)
    assert (top["total"], _keys(top)) == (LENGTH_FLAGGED, [("length_ratio", i) for i in (0, 1, 2)])
    assert top["items"][0]["prompt"] == f"Tell me about {XSS} please"
    assert top["items"][1]["context"].startswith("Human: turn 0 question")
    page2 = store.review_queue("rev", detector="length_ratio", offset=3, limit=3)
    assert _keys(page2) == [("length_ratio", i) for i in (3, 4, 5)]
    low = store.review_queue("rev", detector="oof_margin", ascending=True, limit=2)
    assert _keys(low) == [("oof_margin", 20), ("oof_margin", 21)]

    def save(i: int, verdict: str, reviewer: str) -> None:
        store.save_review("rev", example_id=ids[i], detector="length_ratio",
                          verdict=verdict, reviewer=reviewer)  # type: ignore[arg-type]

    save(0, "tp", "ann")
    save(1, "fp", "ann")
    save(1, "tp", "bob")  # a disagreement
    save(2, "needs_review", "bob")

    def count(state: str, **kw: object) -> int:
        return store.review_queue("rev", detector="length_ratio", state=state, **kw)["total"]

    assert [count(s) for s in ("all", "unreviewed", "reviewed", "needs_review",
                               "disagreements")] == [LENGTH_FLAGGED, LENGTH_FLAGGED - 3, 3, 1, 1]
    assert count("unreviewed", reviewer="ann") == LENGTH_FLAGGED - 2  # bob's pair 2 still open
    assert count("reviewed", reviewer="bob") == 2
    first = store.review_queue("rev", detector="length_ratio", state="reviewed")["items"][1]
    assert [(r["reviewer"], r["verdict"]) for r in first["reviews"]] == [("ann", "fp"),
                                                                          ("bob", "tp")]
    # reviews belong to their detector: oof_margin's flag of pair 20 is still unreviewed
    assert store.review_queue("rev", detector="oof_margin", state="unreviewed")["total"] == 10
    with pytest.raises(StoreError, match="state 'done' is not one of"):
        store.review_queue("rev", state="done")
    with pytest.raises(StoreError, match="limit 1..500"):
        store.review_queue("rev", limit=0)
    with pytest.raises(StoreError, match="no run of detector nope"):
        store.review_queue("rev", detector="nope")


def test_precision_stats_with_wilson_ci_and_score_buckets(store: Store, ids: list[int]) -> None:
    # length_ratio: the 10 most suspect reviewed; the top 6 are right, the next 4 wrong
    for i in range(10):
        store.save_review("rev", example_id=ids[i], detector="length_ratio",
                          verdict="tp" if i < 6 else "fp", reviewer="ann")
    store.save_review("rev", example_id=ids[10], detector="length_ratio", verdict="needs_review",
                      reviewer="ann")
    store.save_review("rev", example_id=ids[11], detector="length_ratio", verdict="tp",
                      reviewer="ann")
    store.save_review("rev", example_id=ids[11], detector="length_ratio", verdict="fp",
                      reviewer="bob")  # a tie: undecided
    stats = precision_stats(store, "rev", buckets=2)
    lr = stats["length_ratio"]
    assert (lr["flagged"], lr["reviewed"], lr["tp"], lr["fp"], lr["undecided"],
            lr["disagreements"], lr["reviewers"]) == (LENGTH_FLAGGED, 10, 6, 4, 2, 1,
                                                      ["ann", "bob"])
    assert lr["precision"] == pytest.approx(0.6)
    assert lr["ci"] == pytest.approx(list(wilson_interval(6, 10)))
    # scores 24..15: the lower half (15..19) holds 1 tp of 5, the upper (20..24) 5 of 5
    assert [(b["lo"], b["hi"], b["reviewed"], b["tp"]) for b in lr["buckets"]] == [
        (15.0, 19.0, 5, 1), (20.0, 24.0, 5, 5)]
    assert stats["oof_margin"]["precision"] is None and stats["oof_margin"]["ci"] is None
    assert flagged_by(store, "rev", ["reviewed:length_ratio"]) == {
        "reviewed:length_ratio": set(ids[:6])}
    with pytest.raises(SelectionError, match="have not run"):
        flagged_by(store, "rev", ["reviewed:nope"])


def test_a_new_run_counts_only_the_flags_it_still_raises(store: Store, ids: list[int]) -> None:
    from _review_seed import _run

    store.save_review("rev", example_id=ids[0], detector="length_ratio", verdict="tp",
                      reviewer="ann")
    store.save_review("rev", example_id=ids[1], detector="length_ratio", verdict="fp",
                      reviewer="ann")
    flags = [i == 1 for i in range(len(ids))]
    store.save_detector_run("rev", _run("length_ratio", [float(f) for f in flags], flags,
                                        ["x" if f else "" for f in flags]), ids)
    stats = precision_stats(store, "rev")["length_ratio"]
    assert (stats["flagged"], stats["reviewed"], stats["tp"], stats["fp"]) == (1, 1, 0, 1)
    assert len(store.reviews("rev")) == 2  # the review of pair 0 is kept, just not counted


def test_consensus_buckets_and_reviewed_names() -> None:
    assert consensus({"a": "tp", "b": "fp"}) == "undecided"
    assert consensus({"a": "fp", "b": "fp", "c": "tp"}) == "fp"
    assert consensus({}) == "undecided"
    one = score_buckets([(1.0, True)] * 3 + [(1.0, False)], buckets=5)
    assert [(b["reviewed"], b["tp"]) for b in one] == [(4, 3)]  # equal scores share a bucket
    assert score_buckets([], buckets=3) == []
    assert split_reviewed(["a", "reviewed:b"]) == (["a"], ["b"])
    with pytest.raises(SelectionError, match="needs a detector name"):
        split_reviewed(["reviewed:"])


# ---- schema versions -------------------------------------------------------------------------

_V1_REVIEWS = """CREATE TABLE reviews (id {id_type} PRIMARY KEY, example_id INTEGER NOT NULL
    REFERENCES examples(id) ON DELETE CASCADE, detector VARCHAR(200) NOT NULL,
    is_issue BOOLEAN NOT NULL, note TEXT NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL)"""


def _make_v1(url: str) -> list[int]:
    """A store as rewardlab wrote it before schema versions: v1 reviews, no version table."""
    with Store(url) as store:
        ids = seed_store(store)
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE reviews"))
        conn.execute(text("DROP TABLE rewardlab_schema"))
        id_type = "SERIAL" if conn.dialect.name == "postgresql" else "INTEGER"
        conn.execute(text(_V1_REVIEWS.format(id_type=id_type)))
        rows = [(ids[0], "length_ratio", True, "first", "2024-01-01 10:00:00+00:00"),
                (ids[0], "length_ratio", False, "second thoughts", "2024-01-02 10:00:00+00:00"),
                (ids[2], "oof_margin", True, "", "2024-01-03 10:00:00+00:00")]
        for example_id, detector, is_issue, note, created in rows:
            conn.execute(text("INSERT INTO reviews (example_id, detector, is_issue, note, "
                              "created_at) VALUES (:e, :d, :i, :n, :c)"),
                         {"e": example_id, "d": detector, "i": is_issue, "n": note, "c": created})
    engine.dispose()
    return ids


def test_a_v1_store_is_migrated_in_place(db_url: str) -> None:
    ids = _make_v1(db_url)
    with Store(db_url) as store:
        rows = store.reviews("rev")
        # v1 appended a row per call: the latest review of a flag is kept
        assert [(r["example_id"], r["detector"], r["verdict"], r["note"], r["reviewer"])
                for r in rows] == [(ids[0], "length_ratio", "fp", "second thoughts", "unknown"),
                                   (ids[2], "oof_margin", "tp", "", "unknown")]
        assert rows[0]["created_at"] == rows[0]["updated_at"] == "2024-01-02T10:00:00+00:00"
        assert len(store.load_pairs("rev")) == 34  # nothing else touched
        store.save_review("rev", example_id=ids[0], detector="length_ratio", verdict="tp",
                          reviewer="unknown")  # the unique key holds on the migrated table
        assert len(store.reviews("rev")) == 2
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT version FROM rewardlab_schema")).all() == [
                (SCHEMA_VERSION,)]
    with Store(db_url) as store:  # a second open finds version 2: nothing to do
        assert len(store.reviews("rev")) == 2


def test_a_store_from_a_newer_rewardlab_is_refused(db_url: str) -> None:
    Store(db_url).close()
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("UPDATE rewardlab_schema SET version = :v"), {"v": SCHEMA_VERSION + 1})
    engine.dispose()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this "
                                         f"rewardlab reads \\({SCHEMA_VERSION}\\): upgrade"):
        Store(db_url)


# ---- review files ----------------------------------------------------------------------------

def test_review_files_round_trip_in_both_formats(store: Store, ids: list[int],
                                                 tmp_path: Path) -> None:
    store.save_review("rev", example_id=ids[0], detector="length_ratio", verdict="tp",
                      reviewer="ann", note="clear <b>case</b>")
    store.save_review("rev", example_id=ids[21], detector="oof_margin", verdict="fp",
                      reviewer="bob")
    queue = review_tasks(store, "rev", state="unreviewed")
    assert len(queue) == LENGTH_FLAGGED + 10 - 2
    assert export_review_file(store, "rev", tmp_path / "r.jsonl", state="reviewed") == 2
    assert export_review_file(store, "rev", tmp_path / "r.json", state="reviewed") == 2
    ls = json.loads((tmp_path / "r.json").read_text())
    assert ls[0]["data"]["prompt"] == f"Tell me about {XSS} please"
    assert ls[0]["annotations"][0]["result"][0]["value"] == {"choices": ["tp"]}
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(t["detector"], t["reviews"][0]["reviewer"]) for t in lines] == [
        ("length_ratio", "ann"), ("oof_margin", "bob")]
    before = [(r["example_id"], r["detector"], r["reviewer"], r["verdict"], r["note"])
              for r in store.reviews("rev")]
    for name in ("r.jsonl", "r.json"):  # into a second dataset holding the same pairs
        other = f"copy-{name}"
        seed_store(store, other)
        counts = import_reviews(store, other, tmp_path / name)
        assert (counts.tasks, counts.saved, counts.skipped) == (2, 2, [])
        copy_ids = {p.content_hash: p.example_id for p in store.load_pairs(other)}
        here = {p.example_id: p.content_hash for p in store.load_pairs("rev")}
        assert [(copy_ids[here[e]], d, r, v, n) for e, d, r, v, n in before] == [
            (r["example_id"], r["detector"], r["reviewer"], r["verdict"], r["note"])
            for r in store.reviews(other)]


def test_label_studio_export_with_annotators_imports(store: Store, ids: list[int],
                                                     tmp_path: Path) -> None:
    """A file shaped like Label Studio's JSON export: annotator ids, cancelled work, no hash."""
    tasks = [
        {"id": 1, "data": {"detector": "length_ratio", "split": "train", "subset": "harmless-base",
                           "source_index": 4},
         "annotations": [{"completed_by": 7, "was_cancelled": False, "result": [
             {"from_name": "verdict", "to_name": "prompt", "type": "choices",
              "value": {"choices": ["False positive: the pair is fine"]}},
             {"from_name": "note", "to_name": "prompt", "type": "textarea",
              "value": {"text": ["fine"]}}]},
             {"completed_by": 8, "was_cancelled": True, "result": []}]},
        {"id": 2, "data": {"detector": "length_ratio", "source_index": 5,
                           "subset": "harmless-base"}, "annotations": []},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    counts = import_reviews(store, "rev", path)
    assert (counts.saved, counts.skipped) == (1, [(f"{path}:1 (task 1)", "annotation was cancelled"),
                                                  (f"{path}:1 (task 2)", "no annotation")])
    (row,) = store.reviews("rev")
    assert (row["source_index"], row["reviewer"], row["verdict"], row["note"]) == (
        4, "labelstudio-user-7", "fp", "fine")


def test_a_bad_review_file_names_the_line_and_saves_nothing(store: Store, ids: list[int],
                                                            tmp_path: Path) -> None:
    good = {"detector": "length_ratio", "source_index": 0, "subset": "harmless-base",
            "verdict": "tp", "reviewer": "ann"}
    cases = [
        ({**good, "verdict": "yes"}, "r.jsonl:2: verdict 'yes' is not one of tp, fp"),
        ({**good, "detector": "nope"}, "r.jsonl:2: detector 'nope' has not run"),
        ({**good, "source_index": 999}, "r.jsonl:2: no pair split='train'"),
        ({**good, "content_hash": "f" * 64}, "r.jsonl:2: no pair with content_hash"),
    ]
    path = tmp_path / "r.jsonl"
    for bad, message in cases:
        path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(SourceError, match=message):
            import_reviews(store, "rev", path)
    path.write_text(json.dumps(good) + "\n{oops\n")
    with pytest.raises(SourceError, match="r.jsonl:2: not valid JSON"):
        read_review_file(path)
    (tmp_path / "r.txt").write_text("")
    with pytest.raises(SourceError, match="cannot tell the format"):
        read_review_file(tmp_path / "r.txt")
    assert store.reviews("rev") == []
