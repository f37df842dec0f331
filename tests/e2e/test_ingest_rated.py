"""`rewardlab ingest` of rated files (issue 32) end to end: the counts it reports (ties apart from
pairs, responses per prompt), `datasets`, one-line refusals that store nothing, and derived pairs
feeding `rewardlab flag` unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _rated_files import arena_rows, feedback_rows, helpsteer_rows, write_jsonl

from rewardlab.cli.main import main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict | list:  # type: ignore[type-arg]
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def run_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def fails_with(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("rewardlab: error: ") and needle in err, err


def test_arena_votes_report_ties_apart_from_pairs(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/r.db"
    path = write_jsonl(tmp_path / "arena.jsonl", arena_rows(200))
    counts = run_json(capsys, "ingest", str(path), "--name", "arena", "--db", db)
    assert isinstance(counts, dict)
    assert {k: counts[k] for k in ("read", "rated_kind", "rated_prompts", "rated_responses",
                                   "ties", "pairs", "ingested", "rated_ingested")} == {
        "read": 200, "rated_kind": "vote", "rated_prompts": 200, "rated_responses": 400,
        "ties": 40, "pairs": 160, "ingested": 160, "rated_ingested": 200}
    again = run_text(capsys, "ingest", str(path), "--name", "arena", "--db", db)
    assert again.splitlines()[0] == ("dataset 'arena': 200 votes: 40 ties (not in pairs), 160 "
                                     "pairs; new prompts 0, pairs ingested 0, already present "
                                     "160, rejected 0")
    [summary] = run_json(capsys, "datasets", "--db", db)
    assert (summary["rated_prompts"], summary["rated_responses"], summary["ties"],
            summary["pairs"]) == (200, 400, 40, {"train": 160, "test": 0})
    table = run_text(capsys, "datasets", "--db", db).splitlines()
    assert table[0].split() == ["name", "train", "test", "prompts", "responses", "ties",
                                "flagged", "detectors", "source"]
    assert table[2].split()[:6] == ["arena", "160", "0", "200", "400", "40"]


def test_ultrafeedback_line_says_prompts_times_responses(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/r.db"
    path = write_jsonl(tmp_path / "uf.jsonl", feedback_rows(60, 4))
    out = run_text(capsys, "ingest", str(path), "--name", "uf", "--db", db)
    assert out.splitlines()[0] == ("dataset 'uf': 60 prompts × 4 responses = 240 responses, 360 "
                                   "pairs; new prompts 60, pairs ingested 360, already present "
                                   "0, rejected 0")
    hs = write_jsonl(tmp_path / "hs.jsonl", helpsteer_rows(10, 2))
    counts = run_json(capsys, "ingest", str(hs), "--name", "hs", "--score-field", "correctness",
                      "--db", db)
    assert isinstance(counts, dict)
    assert (counts["rated_prompts"], counts["rated_responses"], counts["pairs"]) == (10, 20, 10)


def test_bad_rows_are_one_line_and_store_nothing(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/r.db"
    rows = arena_rows(10)
    rows[6]["winner_tie"] = 1  # b won too: two ones
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    fails_with(capsys, ["ingest", str(bad), "--name", "arena", "--db", db],
               f"{bad}: row 7: winner_model_a=0, winner_model_b=1, winner_tie=1: exactly one of "
               "them must be 1")
    hs = write_jsonl(tmp_path / "hs.jsonl", helpsteer_rows(2, 2))
    fails_with(capsys, ["ingest", str(hs), "--name", "hs", "--score-field", "overall", "--db", db],
               "score field 'overall' (--score-field) is not a score column; columns: prompt, "
               "response, helpfulness")
    assert run_json(capsys, "datasets", "--db", db) == []


def test_derived_pairs_feed_flag_unchanged(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/r.db"
    rows = arena_rows(50)
    rows[1]["response_a"] = "   "  # vote 1: a won with an empty reply
    rows[5]["response_b"] = ""  # vote 5: a tie, in no pair
    path = write_jsonl(tmp_path / "arena.jsonl", rows)
    run_json(capsys, "ingest", str(path), "--name", "arena", "--db", db)
    result = run_json(capsys, "flag", "arena", "--detectors", "empty_response", "--db", db)
    assert isinstance(result, dict)
    assert result["train_pairs"] == 40
    assert {d["detector"]: d["flagged"] for d in result["detectors"]}["empty_response"] == 1
    [shown] = run_json(capsys, "flags", "show", "arena", "--db", db)
    assert (shown["source_index"], shown["prompt"], shown["chosen"], shown["rejected"],
            shown["reason"]) == (1, "Question 1?", "", "reply b1 is longer", "chosen reply is empty")
