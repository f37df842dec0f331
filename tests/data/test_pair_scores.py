"""A pair row's own ratings (`score_chosen` / `score_rejected`, UltraFeedback-binarized's columns)
are kept in the pair's meta, refused one line per row when half there or not numbers, and reach
`rating_conflict` through ingest: the row whose rejected response was rated higher is flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewardlab.cli.main import main
from rewardlab.data.sources import read_source
from rewardlab.store.store import Store


def _row(prompt: str, chosen: str, rejected: str, **scores: object) -> dict[str, object]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **scores}


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_scores_are_kept_and_bad_ones_refused_per_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "uf.jsonl", [
        _row("Q1", "good", "bad", score_chosen=8.5, score_rejected="3"),  # CSV-like text is a number
        _row("Q2", "good", "bad", score_chosen=7),                         # half there
        _row("Q3", "good", "bad", score_chosen="high", score_rejected=1),  # not a number
        _row("Q4", "good", "bad"),                                         # none: nothing added
    ])
    result = read_source(str(path))
    assert [p.meta for p in result.pairs] == [{"score_chosen": 8.5, "score_rejected": 3.0}, {}]
    assert result.rejected == [
        (1, "field 'score_chosen' without 'score_rejected': a pair's ratings come as both"),
        (2, "field 'score_chosen' is 'high', expected a number")]


def test_a_pair_rated_against_its_label_is_flagged_after_ingest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path / "uf.jsonl", [
        _row("Name a fruit.", "Apple.", "Rock.", score_chosen=9, score_rejected=2),
        _row("Say hi.", "Go away.", "Hi!", score_chosen=2, score_rejected=8.5),  # PLANTED
        _row("Count.", "1 2 3", "3 2 1", score_chosen=5, score_rejected=5),      # equal: no evidence
    ])
    db = f"sqlite:///{tmp_path}/uf.db"
    assert main(["ingest", str(path), "--name", "uf", "--db", db]) == 0
    assert main(["flag", "uf", "--detectors", "rating_conflict", "--db", db, "--json"]) == 0
    capsys.readouterr()
    store = Store(db)
    rows = {r["source_index"]: r for r in store.flag_rows("uf", detector="rating_conflict")}
    store.close()
    assert sorted(rows) == [1]  # flag_rows: the flagged pairs
    assert rows[1]["reason"] == "rated 2.0 vs 8.5 (score_chosen < score_rejected)"
