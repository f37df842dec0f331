"""Sources: specs, file formats, HH directory/hub layouts, split carving and every bad input."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rewardlab.data.pairs import PreferencePair
from rewardlab.data.sources import assign_split_by_hash, read_hh_hub, read_source
from rewardlab.errors import SourceError
from tests._rated_files import write_csv

# Three pairs with the traps a writer can get wrong: commas, quotes, newlines, "NA", a multi-turn
# prompt and a subset column.
PROMPT_ROWS = [
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "NA", "subset": "math"},
    {"prompt": "Say \"hi\", please", "chosen": "hi, there", "rejected": "no\nway",
     "subset": "chat"},
    {"prompt": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:", "chosen": " yes",
     "rejected": " no", "subset": "chat"},
]
EXPECTED = [  # (subset, context, prompt, chosen, rejected)
    ("math", "", "What is 2+2?", "4", "NA"),
    ("chat", "", 'Say "hi", please', "hi, there", "no\nway"),
    ("chat", "Human: a\n\nAssistant: b", "c", "yes", "no"),
]


def fields(pairs: list[PreferencePair]) -> list[tuple[str, ...]]:
    return [(p.subset, p.context, p.prompt, p.chosen, p.rejected) for p in pairs]


def hh_row(question: str, good: str = "good", bad: str = "bad") -> dict[str, str]:
    return {"chosen": f"\n\nHuman: {question}\n\nAssistant: {good}",
            "rejected": f"\n\nHuman: {question}\n\nAssistant: {bad}"}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_json(path: Path, rows: list[Any]) -> Path:
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


WRITERS: dict[str, Callable[[Path, list[Any]], Path]] = {
    "p.jsonl": write_jsonl, "p.jsonl.gz": write_jsonl, "p.json": write_json,
    "p.csv": write_csv, "p.parquet": write_parquet,
}


def hub_layout(root: Path, subsets: dict[str, int]) -> Path:
    """`<root>/<subset>/{train,test}.jsonl.gz` like github.com/anthropics/hh-rlhf."""
    for subset, n in subsets.items():
        (root / subset).mkdir(parents=True)
        for split in ("train", "test"):
            write_jsonl(root / subset / f"{split}.jsonl.gz",
                        [hh_row(f"{subset} {split} {i}") for i in range(n)])
    return root


# --- the shared HH sample ---------------------------------------------------------------------

def test_sample_reads_every_pair_as_train(sample_path: Path) -> None:
    result = read_source(str(sample_path))
    assert (len(result.pairs), result.read, result.rejected) == (1512, 1512, [])
    assert {p.split for p in result.pairs} == {"train"}
    assert [p.source_index for p in result.pairs] == list(range(1512))
    assert result.spec == str(sample_path)


def test_split_option_labels_a_single_file(sample_path: Path) -> None:
    result = read_source(str(sample_path), split="test", limit=5)
    assert [p.split for p in result.pairs] == ["test"] * 5


def test_test_fraction_carves_a_prompt_disjoint_deterministic_split(sample_path: Path) -> None:
    first = read_source(str(sample_path), test_fraction=0.3)
    test = [p for p in first.pairs if p.split == "test"]
    train = [p for p in first.pairs if p.split == "train"]
    assert 0.25 < len(test) / 1512 < 0.35
    assert len(test) + len(train) == 1512
    assert not {p.prompt_text for p in test} & {p.prompt_text for p in train}
    again = read_source(str(sample_path), test_fraction=0.3)
    assert [p.split for p in again.pairs] == [p.split for p in first.pairs]


def test_same_prompt_up_to_case_and_spaces_lands_in_one_split() -> None:
    rows = [hh_row(f"question {i}") for i in range(200)]
    pairs = [read_pair(r, i) for i, r in enumerate(rows)]
    twins = [read_pair(hh_row(f"QUESTION   {i}", "x", "y"), i) for i in range(200)]
    split_a = assign_split_by_hash(pairs, 0.5)
    split_b = assign_split_by_hash(twins, 0.5)
    assert [p.split for p in split_a] == [p.split for p in split_b]
    assert 60 < sum(p.split == "test" for p in split_a) < 140


def read_pair(row: dict[str, str], index: int) -> PreferencePair:
    from rewardlab.data.formats import pair_from_row

    return pair_from_row(row, source_index=index, split="train", explicit=False)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_test_fraction_outside_zero_one_is_refused(sample_path: Path, fraction: float) -> None:
    with pytest.raises(SourceError, match="between 0 and 1"):
        read_source(str(sample_path), test_fraction=fraction)


def test_test_fraction_on_a_two_split_source_is_refused(tmp_path: Path) -> None:
    root = hub_layout(tmp_path / "hh", {"harmless-base": 2})
    with pytest.raises(SourceError, match="already has train and test"):
        read_source(str(root), test_fraction=0.2)
    with pytest.raises(SourceError, match="not both"):
        read_source(str(root), split="train", test_fraction=0.2)


def test_limit_keeps_the_first_rows(sample_path: Path) -> None:
    result = read_source(str(sample_path), limit=10)
    assert [p.source_index for p in result.pairs] == list(range(10))
    assert result.read == 10
    for bad in (0, -1, 2.5):
        with pytest.raises(SourceError, match="positive integer"):
            read_source(str(sample_path), limit=bad)  # type: ignore[arg-type]


# --- file formats -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(WRITERS))
def test_explicit_prompt_formats_round_trip(tmp_path: Path, name: str) -> None:
    path = WRITERS[name](tmp_path / name, PROMPT_ROWS)
    result = read_source(str(path))
    assert fields(result.pairs) == EXPECTED
    assert (result.read, result.rejected) == (3, [])
    assert result.pairs[0].raw_chosen == "4"


@pytest.mark.parametrize("name", ["p.csv", "p.parquet", "p.json"])
def test_hh_dialogue_rows_read_the_same_in_every_format(tmp_path: Path, name: str,
                                                        sample_path: Path) -> None:
    hh = read_source(str(sample_path), limit=3).pairs
    rows = [{"chosen": p.raw_chosen, "rejected": p.raw_rejected} for p in hh]
    assert read_source(str(WRITERS[name](tmp_path / name, rows)), limit=3).pairs == hh


def test_json_lines_in_a_dot_json_file_are_read(tmp_path: Path) -> None:
    # datasets.Dataset.to_json("x.json") writes JSON lines, not a list
    path = write_jsonl(tmp_path / "lines.json", PROMPT_ROWS)
    assert fields(read_source(str(path)).pairs) == EXPECTED


def test_subset_comes_from_an_hh_subset_parent_folder(tmp_path: Path) -> None:
    (tmp_path / "helpful-base").mkdir()
    path = write_jsonl(tmp_path / "helpful-base" / "test.jsonl", [hh_row("q")])
    assert read_source(str(path)).pairs[0].subset == "helpful-base"
    assert read_source(str(write_jsonl(tmp_path / "x.jsonl", [hh_row("q")]))).pairs[0].subset == ""


# --- TRL conversational format ----------------------------------------------------------------

def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def test_trl_conversational_explicit_prompt(tmp_path: Path) -> None:
    row = {"prompt": [msg("system", "Be brief."), msg("user", "Hi"), msg("assistant", "Hello"),
                      msg("user", "Sky colour?")],
           "chosen": [msg("assistant", "Blue.")], "rejected": [msg("assistant", "Green.")]}
    pair = read_source(str(write_parquet(tmp_path / "c.parquet", [row]))).pairs[0]
    assert pair.context == "System: Be brief.\n\nHuman: Hi\n\nAssistant: Hello"
    assert (pair.prompt, pair.chosen, pair.rejected) == ("Sky colour?", "Blue.", "Green.")
    assert not pair.histories_differ and pair.parse_issue is None
    assert pair.raw_chosen is None


def test_trl_conversational_implicit_prompt(tmp_path: Path) -> None:
    same = [msg("user", "Sky colour?"), msg("assistant", "Blue."), msg("user", "Sure?")]
    rows = [
        {"chosen": same + [msg("assistant", "Yes.")], "rejected": same + [msg("assistant", "No.")]},
        {"chosen": [msg("user", "Q"), msg("assistant", "A1"), msg("user", "R"),
                    msg("assistant", "good")],
         "rejected": [msg("user", "Q"), msg("assistant", "A2"), msg("user", "R"),
                      msg("assistant", "bad")]},
    ]
    pairs = read_source(str(write_jsonl(tmp_path / "c.jsonl", rows))).pairs
    assert (pairs[0].context, pairs[0].prompt) == ("Human: Sky colour?\n\nAssistant: Blue.", "Sure?")
    assert (pairs[0].chosen, pairs[0].rejected, pairs[0].histories_differ) == ("Yes.", "No.", False)
    assert (pairs[1].context, pairs[1].histories_differ) == ("Human: Q\n\nAssistant: A1", True)


# --- bad input --------------------------------------------------------------------------------

def test_broken_third_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    lines = [json.dumps(hh_row("a")), json.dumps(hh_row("b")), '{"chosen": "x", "rejected": ']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"broken\.jsonl:3: invalid JSON") as info:
        read_source(str(path))
    assert "\n" not in str(info.value)


def test_line_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "list.jsonl", [hh_row("a"), ["chosen", "rejected"]])
    with pytest.raises(SourceError, match=r"list\.jsonl:2: expected a JSON object, got list"):
        read_source(str(path))


def test_missing_column_names_found_and_expected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": "p", "chosen": "c", "answer": "a"}])
    with pytest.raises(SourceError) as info:
        read_source(str(path))
    assert str(info.value) == (
        f"{path}: missing column(s) 'rejected'; found: prompt, chosen, answer; expected: "
        "chosen, rejected (HH dialogues) or prompt, chosen, rejected")


def test_bad_rows_are_rejected_and_counted_not_dropped(tmp_path: Path) -> None:
    rows = [hh_row("a"), {"chosen": None, "rejected": "x"}, hh_row("c"),
            {"chosen": "x", "rejected": 3}, {"chosen": "x"},
            {"chosen": [msg("tool", "t")], "rejected": [msg("assistant", "a")]},
            {"chosen": "x", "rejected": [msg("assistant", "a")]}]
    result = read_source(str(write_jsonl(tmp_path / "r.jsonl", rows)))
    assert [p.source_index for p in result.pairs] == [0, 2]
    assert result.rejected == [
        (1, "field 'chosen' is null"),
        (3, "field 'rejected' is int, expected text or messages"),
        (4, "missing field 'rejected'"),
        (5, "unknown role 'tool' in 'chosen'; expected user, assistant, system"),
        (6, "'chosen' and 'rejected' must both be text or both be message lists"),
    ]
    assert result.read == 7


def test_empty_csv_cell_and_short_row(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("prompt,chosen,rejected\np,,r\np,c\n", encoding="utf-8")
    result = read_source(str(path))
    assert [(p.chosen, p.rejected) for p in result.pairs] == [("", "r")]
    assert result.rejected == [(1, "field 'rejected' is null")]


@pytest.mark.parametrize("spec", ["no-such-source", "missing/file.jsonl"])
def test_unknown_source_lists_what_is_accepted(spec: str) -> None:
    with pytest.raises(SourceError, match=rf"^unknown source '{spec}': .*\.parquet.*"
                                          r"'hh-rlhf\[:subset\]', 'hh-rlhf-sample' or 'synthetic:"):
        read_source(spec)


def test_unreadable_files_give_one_line_naming_the_file(tmp_path: Path) -> None:
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_text(json.dumps(hh_row("a")) + "\n", encoding="utf-8")
    truncated = write_jsonl(tmp_path / "cut.jsonl.gz", [hh_row(str(i)) for i in range(50)])
    truncated.write_bytes(truncated.read_bytes()[:-20])
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("prompt,chosen,rejected\ncaf\xe9,a,b\n".encode("latin-1"))
    bad_parquet = tmp_path / "bad.parquet"
    bad_parquet.write_text("not parquet", encoding="utf-8")
    for path in (not_gzip, truncated, latin1, bad_parquet):
        with pytest.raises(SourceError, match=rf"^{re.escape(str(path))}: cannot read") as info:
            read_source(str(path))
        assert "\n" not in str(info.value)


def test_other_bad_files(tmp_path: Path) -> None:
    cases = {"empty.jsonl": ("\n", "no rows"), "notes.txt": ("hi", "unsupported file type"),
             "obj.json": ('{"a": 1', r"obj\.json:1: invalid JSON"),
             "num.json": ("3", "expected a JSON list of objects, got int")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(SourceError, match=message):
            read_source(str(tmp_path / name))


# --- HH-RLHF directory layout and the hub code path ---------------------------------------------

def test_directory_laid_out_like_the_hh_repo(tmp_path: Path) -> None:
    root = hub_layout(tmp_path / "hh-rlhf", {"harmless-base": 3, "helpful-base": 2})
    (root / "red-team-attempts").mkdir()
    write_jsonl(root / "red-team-attempts" / "train.jsonl", [{"transcript": "x"}])
    result = read_source(str(root))
    keys = [(p.subset, p.split, p.source_index) for p in result.pairs]
    assert len(set(keys)) == len(keys) == result.read == 10
    assert keys[:4] == [("harmless-base", "train", 0), ("harmless-base", "train", 1),
                        ("harmless-base", "train", 2), ("harmless-base", "test", 0)]
    assert all(p.prompt == f"{p.subset} {p.split} {p.source_index}" for p in result.pairs)
    assert len(read_source(str(root), split="test", limit=1).pairs) == 2  # one per subset
    subset_dir = read_source(str(root / "helpful-base"))
    assert {(p.subset, p.split) for p in subset_dir.pairs} == {("helpful-base", "train"),
                                                               ("helpful-base", "test")}


def test_directory_without_split_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(SourceError, match="laid out like github.com/anthropics/hh-rlhf"):
        read_source(str(tmp_path))


def test_hub_code_path_on_a_local_hub_shaped_directory(tmp_path: Path) -> None:
    root = hub_layout(tmp_path / "hub", {"harmless-base": 3, "helpful-base": 2})
    write_jsonl(root / "helpful-base" / "test.jsonl.gz",
                [hh_row("q"), {"chosen": None, "rejected": "x"}])
    result = read_hh_hub(["harmless-base", "helpful-base"], repo=str(root),
                         cache_dir=str(tmp_path / "cache"))
    local = read_source(str(root))
    assert fields(result.pairs) == fields(local.pairs)  # same rows → pairs conversion
    assert [(p.subset, p.split, p.source_index) for p in result.pairs] == [
        (p.subset, p.split, p.source_index) for p in local.pairs]
    assert result.rejected == local.rejected == [(1, "helpful-base/test: field 'chosen' is null")]
    assert result.read == 3 + 3 + 2 + 2
    limited = read_hh_hub(["harmless-base"], repo=str(root), split="test", limit=2,
                          cache_dir=str(tmp_path / "cache"))
    assert [(p.split, p.source_index) for p in limited.pairs] == [("test", 0), ("test", 1)]


def test_offline_hub_points_to_the_local_form() -> None:
    with pytest.raises(SourceError) as info:
        read_source("hh-rlhf:harmless-base")
    message = str(info.value)
    assert "unreachable" in message and "offline" in message
    assert "path/to/hh-rlhf/harmless-base/train.jsonl.gz" in message
    assert "\n" not in message


@pytest.mark.parametrize(("spec", "message"), [
    ("hh-rlhf:red-team-attempts", "not preference data"),
    ("hh-rlhf:harmless", "unknown hh-rlhf subset 'harmless'; subsets: harmless-base"),
])
def test_bad_hub_subsets_are_refused_before_loading(spec: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        read_source(spec)


def test_unknown_split_is_refused(sample_path: Path) -> None:
    with pytest.raises(SourceError, match="unknown split 'dev'"):
        read_source(str(sample_path), split="dev")  # type: ignore[arg-type]


def test_the_embedded_hh_sample_reads_offline_split_70_30() -> None:
    """`hh-rlhf-sample` is the package's own copy of the shared sample (with Anthropic's notice)."""
    from rewardlab.data.sources import SAMPLE, sample_path

    result = read_source(SAMPLE)
    assert result.read == len(result.pairs) == 1512 and not result.rejected
    n_test = sum(p.split == "test" for p in result.pairs)
    assert 0.25 < n_test / 1512 < 0.35
    assert "Anthropic" in (sample_path().parent / "LICENSE").read_text()
    shared = Path(__file__).resolve().parents[3] / "shared/data/hh-rlhf/harmless-sample.jsonl.gz"
    if shared.exists():
        assert sample_path().read_bytes() == shared.read_bytes()
    assert read_source(SAMPLE, split="test").pairs[0].split == "test"  # an explicit split wins
