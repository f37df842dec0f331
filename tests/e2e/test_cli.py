"""The CLI end to end on the shared sample: ingest, idempotency, flags round trip, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rewardlab.cli.main import main


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _raw_rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _before_last_reply(text: str) -> str:
    return text[: text.rfind("\n\nAssistant:")]


@pytest.fixture
def ingested(tmp_path: Path, sample_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    db = f"sqlite:///{tmp_path}/cli.db"
    run_json(capsys, "ingest", str(sample_path), "--name", "hh", "--test-fraction", "0.3",
             "--db", db)
    return db


def test_ingest_reads_every_pair_and_is_idempotent(tmp_path: Path, sample_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path}/cli.db"
    first = run_json(capsys, "ingest", str(sample_path), "--name", "hh", "--test-fraction", "0.3",
                     "--db", db)
    assert first["read"] == 1512 and first["ingested"] == 1512 and first["already_present"] == 0
    second = run_json(capsys, "ingest", str(sample_path), "--name", "hh", "--test-fraction", "0.3",
                      "--db", db)
    assert second["read"] == 1512 and second["ingested"] == 0 and second["already_present"] == 1512
    datasets = run_json(capsys, "datasets", "--db", db)
    assert [(d["name"], sum(d["pairs"].values())) for d in datasets] == [("hh", 1512)]
    assert 0.2 < datasets[0]["pairs"]["test"] / 1512 < 0.4


def _exported(capsys: pytest.CaptureFixture[str], db: str, detector: str, path: Path) -> set[int]:
    run_json(capsys, "flags", "export", "hh", "-o", str(path), "--detectors", detector,
             "--db", db)
    return set(json.loads(path.read_text()))


def test_flag_finds_empty_replies_and_diverging_histories(
        ingested: str, sample_path: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # the two rule detectors alone (the default set, model-based ones included, is
    # tests/e2e/test_options_hardening.py's): what they find is computed below from the raw file
    table = run_json(capsys, "flag", "hh", "--detectors", "empty_response,diverging_context",
                     "--db", ingested)
    assert {r["detector"] for r in table["detectors"]} == {"empty_response", "diverging_context",
                                                           "union"}
    # Computed from the raw file, independently of rewardlab's parser.
    rows = _raw_rows(sample_path)
    empty = {i for i, r in enumerate(rows) if r["chosen"].rstrip().endswith("Assistant:")
             or r["rejected"].rstrip().endswith("Assistant:")}
    diverging = {i for i, r in enumerate(rows)
                 if _before_last_reply(r["chosen"]) != _before_last_reply(r["rejected"])}
    test_split = _test_indices(ingested)
    assert empty - test_split and diverging - test_split, "the sample has both kinds in train"
    assert _exported(capsys, ingested, "empty_response", tmp_path / "e.json") == empty - test_split
    assert _exported(capsys, ingested, "diverging_context", tmp_path / "d.json") == \
        diverging - test_split


def _test_indices(db: str) -> set[int]:
    from rewardlab.store.store import Store

    return {p.source_index for p in Store(db).load_pairs("hh", split="test")}


def test_export_then_import_reproduces_the_flagged_set(
        ingested: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_json(capsys, "flag", "hh", "--detectors", "empty_response,identical_responses,length_ratio",
             "--db", ingested)
    first = tmp_path / "a.json"
    run_json(capsys, "flags", "export", "hh", "-o", str(first), "--db", ingested)
    run_json(capsys, "flags", "import", "hh", str(first), "--as", "notebook", "--db", ingested)
    second = tmp_path / "b.json"
    run_json(capsys, "flags", "export", "hh", "-o", str(second), "--detectors", "notebook",
             "--db", ingested)
    indices = json.loads(first.read_text())
    assert indices == sorted(set(indices)) and len(indices) > 0
    assert json.loads(second.read_text()) == indices


def test_import_out_of_range_indices_is_an_error(ingested: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([0, 99999, 123456]))
    assert main(["flags", "import", "hh", str(bad), "--as", "x", "--db", ingested]) == 2
    assert "2" in capsys.readouterr().err
    assert "x" not in run_json(capsys, "datasets", "--db", ingested)[0]["detectors"]


def test_broken_third_line_ingests_nothing(tmp_path: Path, sample_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    lines = gzip.open(sample_path, "rt", encoding="utf-8").read().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines[:2] + ['{"chosen": "oops'] + lines[3:]) + "\n")
    db = f"sqlite:///{tmp_path}/cli.db"
    assert main(["ingest", str(broken), "--name", "broken", "--db", db]) != 0
    err = capsys.readouterr().err
    assert "broken.jsonl:3" in err and "Traceback" not in err
    assert run_json(capsys, "datasets", "--db", db) == []


@pytest.mark.parametrize("argv, needle", [
    (["ingest", "no/such/file.jsonl", "--name", "x"], "unknown source"),
    (["datasets", "--db", "nosuchdriver://x"], "nosuchdriver"),
    (["flag", "missing-dataset"], "missing-dataset"),
    (["evaluate", "no/such/dir", "hh"], "no/such/dir"),
])
def test_bad_input_is_one_clear_line(argv: list[str], needle: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDLAB_DB", f"sqlite:///{tmp_path}/empty.db")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    commands = [["ingest"], ["datasets"], ["flag"], ["flags", "show"], ["flags", "export"],
                ["flags", "import"], ["flags", "review"], ["train"], ["evaluate"], ["score"],
                ["compare"], ["experiments"], ["demo"]]
    for cmd in commands:
        with pytest.raises(SystemExit) as done:
            main([*cmd, "--help"])
        assert done.value.code == 0
        assert "usage: rewardlab " + " ".join(cmd) in capsys.readouterr().out
