"""Rated data in the store (issue 32), on SQLite and PostgreSQL: prompts, responses, scores, ranks
and ties round-trip; derived pairs are examples that hold no texts of their own; ingest is
idempotent and `replace` clears it all; a schema-4 store migrates in place keeping every row."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from _rated_files import arena_rows, feedback_rows, helpsteer_rows, ranking_rows, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    ForeignKey,
    MetaData,
    Table,
    UniqueConstraint,
    create_engine,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.pool import NullPool

from rewardlab.data.rated import RatedPrompt, derived_pairs, ranks_from_scores
from rewardlab.data.source_result import SourceResult
from rewardlab.data.sources import read_source
from rewardlab.errors import StoreError
from rewardlab.store.records import DetectorResult
from rewardlab.store.schema import (
    RATED_TABLES,
    SCHEMA_VERSION,
    Base,
    Example,
    RatedPromptRow,
    RatedResponse,
    RatedTie,
)
from rewardlab.store.store import Store


def _without_id(prompts: list[RatedPrompt]) -> list[RatedPrompt]:
    return [replace(p, meta={k: v for k, v in p.meta.items() if k != "rated_id"})
            for p in prompts]


def _sorted(prompts: list[RatedPrompt]) -> list[RatedPrompt]:
    return sorted(prompts, key=lambda p: (p.split, p.source_index))


def _table_rows(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t.__tablename__: conn.scalar(select(func.count()).select_from(t)) or 0
                for t in (Example, RatedPromptRow, RatedResponse, RatedTie)}


SHAPES = {
    "arena": lambda: arena_rows(200),
    "ultrafeedback": lambda: feedback_rows(60, 4),
    "helpsteer": lambda: helpsteer_rows(10, 3),
    "ranking": lambda: ranking_rows(20, 4),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_rated_files_round_trip(store: Store, tmp_path: Path, shape: str) -> None:
    source = read_source(write_jsonl(tmp_path / f"{shape}.jsonl", SHAPES[shape]()))
    counts = store.ingest("rated", source)
    assert (counts.rated_prompts, counts.rated_responses, counts.ties, counts.pairs) == (
        len(source.rated), source.n_responses, source.n_ties, len(source.pairs))
    assert counts.ingested == len(source.pairs) and counts.rated_ingested == len(source.rated)
    loaded = store.load_rated("rated")
    assert _without_id(loaded) == _sorted(source.rated)  # texts, scores, ranks, ties, meta, kind
    assert len({p.meta["rated_id"] for p in loaded}) == len(loaded)
    pairs = store.load_pairs("rated")
    expected = [pair for rated in loaded for pair in derived_pairs(rated)]
    assert [replace(p, example_id=None) for p in pairs] == expected
    assert all(p.example_id is not None for p in pairs)


def test_arena_counts_and_split_filter(store: Store, tmp_path: Path) -> None:
    counts = store.ingest("arena", read_source(write_jsonl(tmp_path / "a.jsonl", arena_rows(200))))
    assert (counts.rated_kind, counts.read, counts.rated_prompts, counts.ties, counts.pairs) == (
        "vote", 200, 200, 40, 160)
    summary = store.dataset_summaries()[0]
    assert (summary["rated_prompts"], summary["rated_responses"], summary["ties"]) == (200, 400, 40)
    assert summary["pairs"] == {"train": 160, "test": 0}
    assert store.load_rated("arena", split="test") == []
    pair = store.load_pairs("arena", split="train")[0]
    assert pair.meta == {"rated_id": pair.meta["rated_id"], "a": 0, "b": 1}


def test_response_texts_are_stored_once(store: Store, tmp_path: Path) -> None:
    store.ingest("uf", read_source(write_jsonl(tmp_path / "uf.jsonl", feedback_rows(60, 4))))
    assert _table_rows(store) == {"examples": 360, "rated_prompts": 60, "rated_responses": 240,
                                  "rated_ties": 0}
    with store.engine.connect() as conn:  # derived examples point at responses, copy nothing
        texts = conn.execute(select(Example.context, Example.prompt, Example.chosen,
                                    Example.rejected).distinct()).all()
        assert texts == [("", "", "", "")]
        assert conn.scalar(select(func.count()).where(Example.rated_id.is_(None))) == 0


def test_synthetic_rated_round_trip_keeps_splits_and_scores(store: Store) -> None:
    source = read_source("synthetic:n=30,k=4,ties=0.2,test_n=10")
    counts = store.ingest("syn", source)
    assert counts.ties == source.n_ties > 0 and counts.rated_responses == 160
    assert _without_id(store.load_rated("syn")) == _sorted(source.rated)
    train = store.load_rated("syn", split="train")
    assert [p.source_index for p in train] == list(range(30))
    assert train[0].meta["tie_band"] == source.rated[0].meta["tie_band"]


def test_ingest_is_idempotent_and_replace_clears_rated_rows(store: Store, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", arena_rows(50))
    first = store.ingest("arena", read_source(path))
    before = _table_rows(store)
    second = store.ingest("arena", read_source(path))
    assert (second.ingested, second.already_present, second.rated_ingested) == (0, 40, 0)
    assert (first.ingested, first.rated_ingested) == (40, 50)
    assert _table_rows(store) == before == {"examples": 40, "rated_prompts": 50,
                                            "rated_responses": 100, "rated_ties": 10}
    # replacing with other rated data leaves nothing of the first
    other = write_jsonl(tmp_path / "r.jsonl", ranking_rows(5, 3))
    store.ingest("arena", read_source(other), replace=True)
    assert _table_rows(store) == {"examples": 15, "rated_prompts": 5, "rated_responses": 15,
                                  "rated_ties": 0}
    assert {p.kind for p in store.load_rated("arena")} == {"ranking"}
    # another source into the bound split is refused, nothing changes
    with pytest.raises(StoreError, match="is another source"):
        store.ingest("arena", read_source(path))
    assert _table_rows(store)["rated_prompts"] == 5


def test_derived_pairs_take_flags_and_show_their_texts(store: Store, tmp_path: Path) -> None:
    store.ingest("arena", read_source(write_jsonl(tmp_path / "a.jsonl", arena_rows(10))))
    pairs = store.load_pairs("arena")
    flagged = [i == 0 for i in range(len(pairs))]
    store.save_detector_run("arena", DetectorResult(
        detector="d", scores=[1.0] * len(pairs), flagged=flagged,
        reasons=["why" if f else "" for f in flagged], threshold=None, threshold_kind="data",
        params={}), [p.example_id for p in pairs])  # type: ignore[misc]
    row = store.flag_rows("arena")[0]
    assert (row["prompt"], row["chosen"], row["rejected"]) == (
        pairs[0].prompt, pairs[0].chosen, pairs[0].rejected) == ("Question 1?", "answer a1",
                                                                 "reply b1 is longer")
    item = store.review_queue("arena")["items"][0]
    assert (item["prompt"], item["chosen"], item["context"]) == ("Question 1?", "answer a1", "")


def test_a_nul_character_refuses_the_whole_rated_source(store: Store, tmp_path: Path) -> None:
    rows = ranking_rows(3, 3)
    rows[2]["responses"][1] = "bad\x00text"
    with pytest.raises(StoreError, match=r"train prompt at source index 2: NUL character "
                                         r"\(\\x00\) in response 1"):
        store.ingest("rank", read_source(write_jsonl(tmp_path / "r.jsonl", rows)))
    assert store.dataset_names() == []


def test_pairs_only_datasets_load_as_before(store: Store) -> None:
    source = read_source("synthetic:n=8,seed=0")
    store.ingest("pairs", source)
    assert store.load_rated("pairs") == []
    loaded = store.load_pairs("pairs")
    assert [replace(p, example_id=None) for p in loaded] == sorted(
        source.pairs, key=lambda p: (p.split, p.source_index))
    assert store.dataset_summaries()[0]["ties"] == 0


# ---- the v4 → v5 migration ---------------------------------------------------------------------

_V5_COLUMNS = ("rated_id", "chosen_pos", "rejected_pos")


def _v4_metadata() -> MetaData:
    """The tables as schema version 4 had them: no rated tables, `examples` without the v5
    columns (every other table as today)."""
    meta = MetaData()
    for table in Base.metadata.sorted_tables:
        if table.name in RATED_TABLES:
            continue
        if table.name != "examples":
            table.to_metadata(meta)
            continue
        columns = [Column(c.name, c.type, *[ForeignKey(fk.target_fullname, ondelete=fk.ondelete)
                                            for fk in c.foreign_keys],
                          primary_key=c.primary_key, nullable=c.nullable)
                   for c in table.columns if c.name not in _V5_COLUMNS]
        Table("examples", meta, *columns,
              UniqueConstraint("dataset_id", "content_hash", name="uq_examples_dataset_hash"))
    return meta


_WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _make_v4(url: str) -> list[dict[str, Any]]:
    """A schema-4 store holding one dataset of 10 pairs and a detector run flagging one."""
    pairs = read_source("synthetic:n=8,seed=0").pairs
    meta = _v4_metadata()
    t = meta.tables
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(insert(t["rewardlab_schema"]), [{"version": 4}])
        conn.execute(insert(t["datasets"]), [{"name": "old", "source": "synthetic:n=8",
                                              "created_at": _WHEN}])
        dataset_id = conn.scalar(select(t["datasets"].c.id))
        conn.execute(insert(t["examples"]), [{
            "dataset_id": dataset_id, "split": p.split, "source_index": p.source_index,
            "subset": p.subset, "context": p.context, "prompt": p.prompt, "chosen": p.chosen,
            "rejected": p.rejected, "raw_chosen": None, "raw_rejected": None,
            "histories_differ": False, "parse_issue": None, "meta": p.meta,
            "content_hash": p.content_hash} for p in pairs])
        rows = [dict(r) for r in conn.execute(select(t["examples"])).mappings()]
        conn.execute(insert(t["detector_runs"]), [{
            "dataset_id": dataset_id, "detector": "d", "params": {}, "threshold": None,
            "threshold_kind": "data", "n_total": 10, "n_flagged": 1, "seconds": 0.0,
            "created_at": _WHEN}])
        run_id = conn.scalar(select(t["detector_runs"].c.id))
        conn.execute(insert(t["flags"]), [{"run_id": run_id, "example_id": r["id"], "score": 1.0,
                                           "flagged": r is rows[2], "reason": ""} for r in rows])
    engine.dispose()
    return rows


def test_a_schema_4_store_migrates_in_place(db_url: str, tmp_path: Path) -> None:
    rows = _make_v4(db_url)
    with Store(db_url) as store:
        loaded = store.load_pairs("old")
        assert sorted((p.example_id, p.chosen, p.meta["quality_chosen"]) for p in loaded) == sorted(
            (r["id"], r["chosen"], r["meta"]["quality_chosen"]) for r in rows)
        assert store.flagged_example_ids("old") == {"d": {rows[2]["id"]}}
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT version FROM rewardlab_schema")).all() == [
                (SCHEMA_VERSION,)]
        # the migrated store takes rated data beside the old pairs
        store.ingest("arena", read_source(write_jsonl(tmp_path / "a.jsonl", arena_rows(20))))
        assert len(store.load_pairs("arena")) == 16 and len(store.load_rated("arena")) == 20
        store.ingest("arena", read_source(tmp_path / "a.jsonl"), replace=True)
        assert len(store.load_pairs("old")) == 10
    with Store(db_url) as store:  # a second open finds version 5: nothing to do
        assert len(store.load_pairs("old")) == 10 and store.load_rated("old") == []


def test_awkward_texts_and_nan_scores_round_trip(store: Store) -> None:
    """COPY on PostgreSQL and executemany on SQLite keep tabs, newlines, backslashes, quotes and
    non-ASCII text exactly; a NaN score (a missing rating) comes back as NaN."""
    rated = RatedPrompt(0, "train", 'tab\there "q" \\N', ("a\nb\\c", "ü 😀 \r\n", "x\ty"),
                        (2.0, math.nan, 1.0), (0, 2, 1), meta={"context": "Human: c\\d"})
    source = SourceResult(spec="hand-made", pairs=derived_pairs(rated), read=1, rejected=[],
                          rated=[rated])
    store.ingest("odd", source)
    [loaded] = store.load_rated("odd")
    assert (loaded.prompt, loaded.responses, loaded.meta["context"]) == (
        rated.prompt, rated.responses, "Human: c\\d")
    assert loaded.scores[0] == 2.0 and math.isnan(loaded.scores[1]) and loaded.ranks == (0, 2, 1)
    assert [(p.chosen, p.rejected) for p in store.load_pairs("odd")] == [
        (p.chosen, p.rejected) for p in derived_pairs(rated)]


_scores = st.lists(st.sampled_from([0.0, 1.0, 2.5, 3.0]), min_size=1, max_size=5)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_scores, min_size=1, max_size=6))
def test_any_ratings_round_trip_with_their_decided_pairs(all_scores: list[list[float]]) -> None:
    """Property: whatever the ratings (equal ones are ties, K from 1), the store gives the prompts
    back as written and K(K-1)/2 − ties pairs per prompt, each chosen ranked above its rejected."""
    prompts = [RatedPrompt(i, "train", f"p{i}", tuple(f"r{i}.{k}" for k in range(len(scores))),
                           tuple(scores), ranks_from_scores(scores),
                           tuple((a, b) for a in range(len(scores))
                                 for b in range(a + 1, len(scores)) if scores[a] == scores[b]))
               for i, scores in enumerate(all_scores)]
    source = SourceResult(spec="prop", rejected=[], read=len(prompts), rated=prompts,
                          pairs=[p for r in prompts for p in derived_pairs(r)])
    with Store("sqlite://") as store:
        store.ingest("prop", source)
        loaded = store.load_rated("prop")
        pairs = store.load_pairs("prop")
    assert _without_id(loaded) == prompts
    by_id = {r.meta["rated_id"]: r for r in loaded}
    for rated in loaded:
        k = len(rated.responses)
        mine = [p for p in pairs if p.meta["rated_id"] == rated.meta["rated_id"]]
        assert len(mine) == k * (k - 1) // 2 - len(rated.ties)
    for pair in pairs:
        rated = by_id[pair.meta["rated_id"]]
        assert rated.ranks[pair.meta["a"]] < rated.ranks[pair.meta["b"]]
        assert (pair.chosen, pair.rejected) == (rated.responses[pair.meta["a"]],
                                                rated.responses[pair.meta["b"]])
