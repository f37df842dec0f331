"""Files as users really have them: byte-order marks, rows that only look like pairs, and what
`datasets` users keep on disk (save_to_disk folders, .arrow files, hub-style parquet shards)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import pytest

from rewardlab.cli.main import main
from rewardlab.data.sources import read_source
from rewardlab.errors import SourceError

BOM = "\ufeff"
ROWS = [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome"}]


def _csv_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _text(fmt: str, rows: list[dict[str, str]]) -> str:
    if fmt == "csv":
        return _csv_text(rows)
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    return json.dumps(rows)  # json: a list of objects


def _write(path: Path, text: str) -> Path:
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


# ------------------------------------------------------------------ item 2: byte-order marks


@pytest.mark.parametrize("name", ["p.csv", "p.csv.gz", "p.jsonl", "p.jsonl.gz", "p.json",
                                  "p.json.gz"])
def test_a_utf8_bom_is_dropped_in_every_text_format(tmp_path: Path, name: str) -> None:
    fmt = name.split(".")[1]
    result = read_source(str(_write(tmp_path / name, BOM + _text(fmt, ROWS))))
    assert [(p.prompt, p.chosen, p.rejected) for p in result.pairs] == [
        ("What is 2+2?", "4", "5"), ("Capital of France?", "Paris", "Rome")]
    assert result.rejected == [] and result.read == 2


def test_a_bom_inside_a_cell_is_kept(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "chosen": BOM + "c", "rejected": "r"}]
    result = read_source(str(_write(tmp_path / "p.csv", BOM + _csv_text(rows))))
    assert result.pairs[0].chosen == BOM + "c"  # only the file's leading mark is not data


# --------------------------------------- item 3: implicit-prompt rows without markers, reporting

UNMARKED = {"chosen": "The sky is blue.", "rejected": "The sky is green."}


def _hh(question: str) -> dict[str, str]:
    return {"chosen": f"\n\nHuman: {question}\n\nAssistant: good",
            "rejected": f"\n\nHuman: {question}\n\nAssistant: bad"}


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows))


def test_an_implicit_prompt_row_without_turn_markers_is_rejected_with_its_reason(
        tmp_path: Path) -> None:
    result = read_source(str(_jsonl(tmp_path / "m.jsonl", [_hh("a"), UNMARKED, _hh("c")])))
    assert [p.source_index for p in result.pairs] == [0, 2]
    assert [p.prompt for p in result.pairs] == ["a", "c"]
    assert len(result.rejected) == 1 and result.rejected[0][0] == 1
    assert "no 'Human:'/'Assistant:' turn markers" in result.rejected[0][1]
    assert "'prompt' column" in result.rejected[0][1]


def test_an_ingest_where_every_row_is_rejected_fails_naming_file_and_reasons(
        tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "all.jsonl", [UNMARKED, {"chosen": None, "rejected": "x"}, UNMARKED])
    with pytest.raises(SourceError) as info:
        read_source(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: all 3 rows rejected")
    assert "row 0: no 'Human:'/'Assistant:' turn markers" in message
    assert "row 1: field 'chosen' is null" in message
    assert "\n" not in message


def test_ingest_reports_rejected_rows_and_parse_issues(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    ends_with_human = {"chosen": "\n\nHuman: q\n\nAssistant: a\n\nHuman: more?",
                       "rejected": "\n\nHuman: q\n\nAssistant: b\n\nHuman: more?"}
    path = _jsonl(tmp_path / "m.jsonl", [_hh("a"), UNMARKED, ends_with_human])
    db = f"sqlite:///{tmp_path}/r.db"
    assert main(["ingest", str(path), "--name", "m", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "rejected 1" in out and "turn markers" in out
    assert "parse issues 1" in out and "dialogue ends with a human turn" in out
    assert main(["ingest", str(path), "--name", "m2", "--db", db, "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert [i for i, _ in counts["rejected"]] == [1]
    assert [i for i, _ in counts["parse_issues"]] == [2]


def test_ingest_of_an_all_rejected_file_exits_2_and_stores_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _jsonl(tmp_path / "all.jsonl", [UNMARKED, UNMARKED])
    db = f"sqlite:///{tmp_path}/r.db"
    assert main(["ingest", str(path), "--name", "x", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "all 2 rows rejected" in err and "Traceback" not in err
    assert main(["datasets", "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


# ------------------------------------------ item 18: what `datasets` users keep on disk

DS_ROWS = {"prompt": ["q0", "q1", "q2", "q3"], "chosen": ["c0", "c1", None, "c3"],
           "rejected": ["r0", "r1", "r2", "r3"]}


@pytest.fixture
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """load_dataset converts a local folder into its cache: keep that inside the test."""
    import datasets

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def _dataset(rows: dict[str, list[str | None]] = DS_ROWS) -> object:
    import datasets

    return datasets.Dataset.from_dict(rows)


def _triples(result: object) -> list[tuple[str, int, str, str]]:
    return [(p.split, p.source_index, p.prompt, p.chosen) for p in result.pairs]  # type: ignore[attr-defined]


def test_a_save_to_disk_dataset_folder(tmp_path: Path) -> None:
    _dataset().save_to_disk(str(tmp_path / "ds"))  # type: ignore[attr-defined]
    result = read_source(str(tmp_path / "ds"))
    assert _triples(result) == [("train", 0, "q0", "c0"), ("train", 1, "q1", "c1"),
                                ("train", 3, "q3", "c3")]
    assert result.rejected == [(2, "field 'chosen' is null")] and result.read == 4
    assert {p.split for p in read_source(str(tmp_path / "ds"), split="test").pairs} == {"test"}
    assert len(read_source(str(tmp_path / "ds"), limit=2).pairs) == 2


def test_a_save_to_disk_dataset_dict_with_train_and_test(tmp_path: Path) -> None:
    import datasets

    ds = _dataset()
    datasets.DatasetDict({"train": ds, "test": ds.select([0, 3])}).save_to_disk(  # type: ignore[attr-defined]
        str(tmp_path / "dd"))
    result = read_source(str(tmp_path / "dd"))
    assert _triples(result) == [("train", 0, "q0", "c0"), ("train", 1, "q1", "c1"),
                                ("train", 3, "q3", "c3"), ("test", 0, "q0", "c0"),
                                ("test", 1, "q3", "c3")]
    assert result.rejected == [(2, "train: field 'chosen' is null")] and result.read == 6
    only_test = read_source(str(tmp_path / "dd"), split="test")
    assert [p.prompt for p in only_test.pairs] == ["q0", "q3"]


def test_a_split_other_than_train_or_test_is_named_not_dropped(tmp_path: Path) -> None:
    import datasets

    ds = _dataset()
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "dd"))  # type: ignore[attr-defined]
    with pytest.raises(SourceError, match="'validation'.*--split"):
        read_source(str(tmp_path / "dd"))
    assert len(read_source(str(tmp_path / "dd"), split="train").pairs) == 3


def test_arrow_files_from_datasets_and_from_pyarrow(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.feather as feather

    _dataset().save_to_disk(str(tmp_path / "ds"))  # type: ignore[attr-defined]
    written = next((tmp_path / "ds").glob("*.arrow"))
    stream = tmp_path / "prefs.arrow"
    stream.write_bytes(written.read_bytes())  # the Arrow stream datasets writes
    assert [p.prompt for p in read_source(str(stream)).pairs] == ["q0", "q1", "q3"]
    ipc = tmp_path / "ipc.arrow"
    feather.write_feather(pa.table(DS_ROWS), str(ipc))  # the Arrow IPC file format
    assert [p.prompt for p in read_source(str(ipc)).pairs] == ["q0", "q1", "q3"]
    bad = tmp_path / "bad.arrow"
    bad.write_text("not arrow")
    with pytest.raises(SourceError, match=r"bad\.arrow: cannot read"):
        read_source(str(bad))


def test_a_hub_style_folder_of_parquet_shards(tmp_path: Path, datasets_cache: Path) -> None:
    ds = _dataset()
    data = tmp_path / "hub" / "data"
    data.mkdir(parents=True)
    for i in range(3):  # rows 0-1, 2, 3 over three shards
        ds.select([[0, 1], [2], [3]][i]).to_parquet(str(data / f"train-0000{i}-of-00003.parquet"))  # type: ignore[attr-defined]
    ds.select([1]).to_parquet(str(data / "test-00000-of-00001.parquet"))  # type: ignore[attr-defined]
    result = read_source(str(tmp_path / "hub"))
    assert _triples(result) == [("train", 0, "q0", "c0"), ("train", 1, "q1", "c1"),
                                ("train", 3, "q3", "c3"), ("test", 0, "q1", "c1")]
    assert result.rejected == [(2, "train: field 'chosen' is null")]


def test_a_hub_style_folder_with_readme_configs(tmp_path: Path, datasets_cache: Path) -> None:
    root = tmp_path / "hub"
    (root / "prefs").mkdir(parents=True)
    _dataset().to_parquet(str(root / "prefs" / "all_train.parquet"))  # type: ignore[attr-defined]
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        "    path: prefs/all_train.parquet\n---\n# prefs\n", encoding="utf-8")
    result = read_source(str(root))
    assert [p.prompt for p in result.pairs] == ["q0", "q1", "q3"]
