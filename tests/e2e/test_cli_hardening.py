"""Issue 17: bad input and options give one clear line (exit 2) before any work, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rewardlab.cli.main import main


def fails_with(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    """Run the CLI; assert exit 2 and one `rewardlab: error:` line containing every needle."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("rewardlab: error: "), err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def run_ok(capsys: pytest.CaptureFixture[str], argv: list[str]) -> object:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def syn_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A store holding `syn`: 60 synthetic train pairs (+ test), flagged by one rule detector."""
    db = f"sqlite:///{tmp_path}/syn.db"
    run_ok(capsys, ["ingest", "synthetic:n=60,noise=0.2,seed=0", "--name", "syn", "--db", db])
    run_ok(capsys, ["flag", "syn", "--detectors", "empty_response", "--db", db])
    return db


# ---------------------------------------------------------------- item 8: tracebacks → one line

def test_lone_surrogate_in_jsonl_names_file_and_line(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    good = {"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nAssistant: b"}
    path = tmp_path / "s.jsonl"
    # the second row carries the JSON escape of a lone high surrogate (valid JSON, invalid text)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good).replace("hi", "hi\\ud800", 1) + "\n")
    db = f"sqlite:///{tmp_path}/s.db"
    fails_with(capsys, ["ingest", str(path), "--name", "s", "--db", db], "s.jsonl:2", "surrogate")
    assert run_ok(capsys, ["datasets", "--db", db]) == []


def test_paired_surrogate_escapes_are_still_fine(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    row = {"chosen": "\n\nHuman: hi \U0001f600\n\nAssistant: a",
           "rejected": "\n\nHuman: hi \U0001f600\n\nAssistant: b"}
    path = tmp_path / "emoji.jsonl"
    path.write_text(json.dumps(row) + "\n")  # ensure_ascii: the emoji is written as \ud83d\ude00
    assert "\\ud83d" in path.read_text()
    counts = run_ok(capsys, ["ingest", str(path), "--name", "e", "--db",
                             f"sqlite:///{tmp_path}/e.db"])
    assert isinstance(counts, dict) and counts["ingested"] == 1


@pytest.mark.parametrize("line", ['["a", "b"]', '"just a string"', "42", "null"])
def test_score_file_line_that_is_not_an_object(line: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n" + line + "\n")
    fails_with(capsys, ["score", str(tmp_path / "no-model"), "--file", str(path)],
               "pairs.jsonl:2", "JSON object")


def test_non_numeric_port_in_db_url(capsys: pytest.CaptureFixture[str]) -> None:
    fails_with(capsys, ["datasets", "--db", "postgresql+psycopg://u@h:abc/db"], "database URL")


def test_flags_show_negative_limit_is_refused(syn_db: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # SQLite reads LIMIT -1 as "no limit", PostgreSQL refuses it: the option is checked first
    fails_with(capsys, ["flags", "show", "syn", "--limit", "-1", "--db", syn_db], "--limit", "-1")


def test_flags_export_to_a_directory(syn_db: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    fails_with(capsys, ["flags", "export", "syn", "-o", str(out), "--db", syn_db],
               str(out), "directory")
    assert list(out.iterdir()) == []


def test_flags_import_of_a_huge_integer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "flagged.json"
    path.write_text("[1, " + "9" * 5000 + "]\n")  # past Python's 4,300-digit int-string limit
    fails_with(capsys, ["flags", "import", "syn", str(path), "--as", "x", "--db",
                        f"sqlite:///{tmp_path}/x.db"], "flagged.json", "item 1", "5,000-digit")


def test_train_lr_nan_is_refused_before_any_work(syn_db: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    fails_with(capsys, ["train", "syn", "-o", str(out), "--model", "bow", "--lr", "nan",
                        "--db", syn_db], "lr", "nan")
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "compare"])
def test_negative_max_pairs_is_refused(command: str, syn_db: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = (["train", "syn", "-o", str(out), "--model", "bow"] if command == "train" else
            ["compare", "--train", "synthetic:n=60,seed=0", "-o", str(out), "--model", "bow"])
    fails_with(capsys, [*argv, "--max-pairs", "-5", "--db", syn_db], "--max-pairs", "-5")
    assert not out.exists()


def test_sample_stratified_refuses_a_negative_size() -> None:
    from rewardlab.data.pairs import PreferencePair
    from rewardlab.errors import SelectionError
    from rewardlab.flags.selection import sample_stratified

    pairs = [PreferencePair(i, "train", "p", "a", "b") for i in range(5)]
    with pytest.raises(SelectionError, match="max_pairs"):
        sample_stratified(pairs, -5)


# ---------------------------------------------------------------- item 9: options checked first

@pytest.mark.parametrize("field", ["lr", "margin", "warmup_ratio", "weight_decay", "max_grad_norm",
                                   "label_smoothing"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_train_config_refuses_non_finite_floats(field: str, value: float) -> None:
    from rewardlab.errors import ModelError
    from rewardlab.training.train_config import TrainConfig

    with pytest.raises(ModelError, match=field):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("flag, value, needle", [
    ("--margin", "nan", "--margin"), ("--warmup-ratio", "5", "--warmup-ratio"),
    ("--warmup-ratio", "-0.1", "--warmup-ratio"), ("--max-grad-norm", "inf", "--max-grad-norm")])
def test_train_bad_float_option_before_any_work(flag: str, value: str, needle: str, syn_db: str,
                                                tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    fails_with(capsys, ["train", "syn", "-o", str(out), "--model", "bow", flag, value,
                        "--db", syn_db], needle, value)
    assert not out.exists()


def test_warmup_ratio_bounds_are_allowed() -> None:
    from rewardlab.training.train_config import TrainConfig

    assert TrainConfig(warmup_ratio=0.0).warmup_ratio == 0.0
    assert TrainConfig(warmup_ratio=1.0).warmup_ratio == 1.0


def test_evaluate_output_in_a_missing_directory_fails_first(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    out = tmp_path / "no" / "such" / "dir" / "x.json"
    # the checkpoint does not exist either: the output path is checked before it is even loaded
    fails_with(capsys, ["evaluate", str(tmp_path / "ckpt"), "syn", "-o", str(out), "--db",
                        f"sqlite:///{tmp_path}/e.db"], f"-o {out}", "does not exist")


def test_evaluate_output_that_is_a_directory(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    fails_with(capsys, ["evaluate", str(tmp_path / "ckpt"), "syn", "-o", str(tmp_path), "--db",
                        f"sqlite:///{tmp_path}/e.db"], str(tmp_path), "is a directory")


@pytest.mark.parametrize("command", ["train", "compare"])
def test_output_dir_that_is_an_existing_file(command: str, syn_db: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "taken"
    existing.write_text("keep me\n")
    argv = (["train", "syn", "--model", "bow"] if command == "train" else
            ["compare", "--train", "synthetic:n=60,seed=0", "--model", "bow", "--name", "c"])
    fails_with(capsys, [*argv, "-o", str(existing), "--db", syn_db], str(existing), "file")
    assert existing.read_text() == "keep me\n"
    if command == "compare":  # refused before the ingest
        datasets = run_ok(capsys, ["datasets", "--db", syn_db])
        assert isinstance(datasets, list) and [d["name"] for d in datasets] == ["syn"]


def test_output_dir_below_a_file(syn_db: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "taken"
    existing.write_text("keep me\n")
    fails_with(capsys, ["train", "syn", "--model", "bow", "-o", str(existing / "sub"),
                        "--db", syn_db], str(existing), "not a directory")


# ---------------------------------------------------------------- item 10: review a detector that ran

def test_review_refuses_a_detector_that_never_ran(syn_db: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fails_with(capsys, ["flags", "review", "syn", "0", "--detector", "length_ratio", "--issue",
                        "--db", syn_db], "'length_ratio'", "syn", "empty_response")
    # issue 35 item 2: a detector that ran but did not flag the pair is refused too
    fails_with(capsys, ["flags", "review", "syn", "0", "--detector", "empty_response",
                        "--not-issue", "--db", syn_db], "did not flag train pair 0",
               "it flagged no pair")


# ---------------------------------------------------------------- item 14: a closed stdout pipe

def test_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """`rewardlab … --json | head -1`: the reader goes away; no BrokenPipeError traceback."""
    argv = [sys.executable, "-m", "rewardlab", "ingest", "synthetic:n=60,seed=0", "--name", "p",
            "--json", "--db", f"sqlite:///{tmp_path}/p.db"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the child (still importing) writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141), err
    assert "BrokenPipeError" not in err and "Traceback" not in err and "Exception" not in err, err
