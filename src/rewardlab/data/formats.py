"""Preference files and rows: read a file into rows, turn rows into `PreferencePair`s.

Three row shapes are understood, whatever the file format:

- **HH dialogues** (Anthropic HH-RLHF, TRL "implicit prompt"): `chosen` and `rejected` are whole
  transcripts (`"\\n\\nHuman: …\\n\\nAssistant: …"`), parsed by `pairs.pair_from_hh`.
- **Explicit prompt**: text columns `prompt`, `chosen`, `rejected`. A prompt that is itself an HH
  transcript (e.g. ending in `"Assistant:"`) is split into context and last human turn.
- **TRL conversational**: `chosen`/`rejected` (and optionally `prompt`) are lists of
  `{"role", "content"}` messages. Roles map user→Human, assistant→Assistant, system→System; a system
  message stays in the context as a `System: …` line. Without `prompt`, the history is what precedes
  each side's final reply, and `histories_differ` is set when the two sides disagree, as for HH.

A `subset` text column, when present, overrides the subset the caller passes. A `margin` column
(TRL's: how much better `chosen` is) gives each pair its own margin in the BT loss, kept in
`pair.meta["margin"]`; a present but null, non-numeric or non-finite margin rejects the row.
Rows that cannot be turned into a pair (a null or non-text field, an unknown role, plain-text
`chosen`/`rejected` with no HH markers and no `prompt` column: nothing says where the prompt
is) are returned as `(index, reason)`, never dropped silently; problems with the file itself
raise `SourceError` naming `FILE[:LINE]`.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from rewardlab.data.pairs import (
    ASSISTANT,
    HUMAN,
    PreferencePair,
    Split,
    Turn,
    pair_from_hh,
    pair_from_turns,
    parse_dialogue,
    render_turns,
)
from rewardlab.errors import SourceError

__all__ = [
    "FILE_SUFFIXES",
    "RowError",
    "parse_number",
    "file_format",
    "read_rows",
    "check_columns",
    "pair_from_row",
    "pairs_from_rows",
    "split_prompt",
]

FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz", ".parquet",
                 ".arrow")
_ROLES = {"user": HUMAN, "assistant": ASSISTANT, "system": "System"}
_HH_COLUMNS = ("chosen", "rejected")
_PROMPT_COLUMNS = ("prompt", "chosen", "rejected")
_NO_MARKERS = ("no 'Human:'/'Assistant:' turn markers in 'chosen' or 'rejected' and no 'prompt' "
               "column: the prompt cannot be told from the response")
# Real HH transcripts run to tens of KB; the csv module's default 128 KB cell limit is too close.
_CSV_FIELD_LIMIT = 2**31 - 1

Rows = tuple[list[str], list[dict[str, Any]]]  # (column names, rows)


class RowError(ValueError):
    """One row cannot become a pair; the message is the reason recorded in `rejected`."""


def file_format(path: Path) -> str | None:
    """'jsonl' | 'json' | 'csv' | 'parquet' from the file name (a `.gz` suffix allowed), else None."""
    name = path.name.lower()
    for suffix in FILE_SUFFIXES:
        if name.endswith(suffix):
            return suffix.removesuffix(".gz").lstrip(".")
    return None


def read_rows(path: Path, *, limit: int | None = None) -> Rows:
    """Column names and the first `limit` rows (all if None) of a preference file.

    Raises `SourceError` for an unsupported suffix, an unreadable file, malformed JSON/CSV
    (`FILE:LINE: …`, 1-based lines) or a file with no rows.
    """
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv,
               "parquet": _read_parquet, "arrow": _read_arrow}
    fmt = file_format(path)
    if fmt is None:
        raise SourceError(f"{path}: unsupported file type; expected {', '.join(FILE_SUFFIXES)}")
    try:
        columns, rows = readers[fmt](path, limit)
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
        # One line naming the file: bad gzip, truncated file, permission denied, not UTF-8.
        raise SourceError(f"{path}: cannot read ({_reason(e)})") from e
    if not rows:
        raise SourceError(f"{path}: no rows")
    return columns, rows


def _reason(error: BaseException) -> str:
    """The OS reason without the file name repeated (OSError's str() includes the path)."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _open_text(path: Path) -> Any:
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8", Windows editors) is dropped, not read as
    # part of the first column's name or the first JSON value; without one it is plain UTF-8
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _read_jsonl(path: Path, limit: int | None) -> Rows:
    rows: list[dict[str, Any]] = []
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():  # blank lines (e.g. a trailing one) are not rows
                rows.append(_json_object(path, lineno, line))
    return (list(rows[0]) if rows else []), rows


def _parse_json(path: Path, text: str, *, lineno: int | None = None) -> Any:
    """`json.loads(text)`; a syntax error becomes one SourceError naming the file and line
    (`lineno` for a line of JSON lines, else the line within `text`)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        line = e.lineno if lineno is None else lineno
        raise SourceError(f"{path}:{line}: invalid JSON ({e.msg} at column {e.colno})") from e
    _refuse_lone_surrogates(path, text, value, lineno)
    return value


# `"\ud800"` is valid JSON but decodes to a lone UTF-16 surrogate, which is not text: hashing and
# storing it fail later with a traceback. A high+low pair (an emoji written by ensure_ascii) is fine.
_LONE_SURROGATE = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                             r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def _refuse_lone_surrogates(path: Path, text: str, value: Any, lineno: int | None) -> None:
    found = _LONE_SURROGATE.search(text)
    if found is None:
        return
    try:  # the regex only locates; an escaped backslash before "ud800" is plain text
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        line = lineno if lineno is not None else text.count("\n", 0, found.start()) + 1
        raise SourceError(f"{path}:{line}: {found.group()} is a lone UTF-16 surrogate escape, "
                          "not text") from None


def _json_object(path: Path, lineno: int, line: str) -> dict[str, Any]:
    row = _parse_json(path, line, lineno=lineno)
    if not isinstance(row, dict):
        raise SourceError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
    return row


def _read_json(path: Path, limit: int | None) -> Rows:
    """A JSON list of objects; a file starting with `{` is read as JSON lines, because that is what
    `datasets.Dataset.to_json("x.json")` writes."""
    with _open_text(path) as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        return _read_jsonl(path, limit)
    data = _parse_json(path, text)
    if not isinstance(data, list):
        raise SourceError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    rows = data[:limit] if limit is not None else data
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise SourceError(f"{path}: item {i} is {type(row).__name__}, expected an object")
    return (list(rows[0]) if rows else []), rows


def _read_csv(path: Path, limit: int | None) -> Rows:
    """Every cell is text (no type guessing: pandas would turn the answer "NA" into NaN)."""
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    rows: list[dict[str, Any]] = []
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        try:
            for row in reader:
                if limit is not None and len(rows) >= limit:
                    break
                row.pop(None, None)  # cells past the header
                rows.append(row)
        except csv.Error as e:
            raise SourceError(f"{path}:{reader.line_num}: invalid CSV ({e})") from e
        columns = [c for c in (reader.fieldnames or []) if c]
    return columns, rows


def _read_parquet(path: Path, limit: int | None) -> Rows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except pa.ArrowException as e:
        raise SourceError(f"{path}: cannot read parquet ({e})") from e
    if limit is not None:
        table = table.slice(0, limit)
    return table.column_names, table.to_pylist()


def _read_arrow(path: Path, limit: int | None) -> Rows:
    """An `.arrow` file: the Arrow stream `datasets` writes (`Dataset.from_file`, memory-mapped),
    else the Arrow IPC file format pyarrow and feather write."""
    import datasets
    import pyarrow as pa

    try:
        dataset = datasets.Dataset.from_file(str(path))
    except pa.ArrowInvalid:
        try:
            table = pa.ipc.open_file(path).read_all()
        except pa.ArrowException as e:
            raise SourceError(f"{path}: cannot read arrow ({e})") from e
        table = table.slice(0, limit) if limit is not None else table
        return table.column_names, table.to_pylist()
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.column_names, dataset.to_list()


def check_columns(columns: Sequence[str], name: str) -> bool:
    """True if rows have an explicit `prompt` column; `SourceError` naming what is missing."""
    expected = _PROMPT_COLUMNS if "prompt" in columns else _HH_COLUMNS
    missing = [c for c in expected if c not in columns]
    if missing:
        raise SourceError(
            f"{name}: missing column(s) {', '.join(repr(c) for c in missing)}; found: "
            f"{', '.join(columns) or 'none'}; expected: {', '.join(_HH_COLUMNS)} (HH dialogues) "
            f"or {', '.join(_PROMPT_COLUMNS)}")
    return "prompt" in columns


def pairs_from_rows(rows: Iterable[Mapping[str, Any]], *, columns: Sequence[str], name: str,
                    split: Split, subset: str = "", reason_prefix: str = "",
                    ) -> tuple[list[PreferencePair], list[tuple[int, str]], int]:
    """(pairs, rejected rows, rows read); `source_index` is the row's 0-based position in `rows`.

    Raises `SourceError` (naming `name`) when the columns cannot hold preference pairs.
    """
    explicit = check_columns(columns, name)
    pairs: list[PreferencePair] = []
    rejected: list[tuple[int, str]] = []
    read = 0
    for index, row in enumerate(rows):
        read += 1
        try:
            pairs.append(pair_from_row(row, source_index=index, split=split, subset=subset,
                                       explicit=explicit))
        except RowError as e:
            rejected.append((index, f"{reason_prefix}{e}"))
    return pairs, rejected, read


def pair_from_row(row: Mapping[str, Any], *, source_index: int, split: Split, subset: str = "",
                  explicit: bool) -> PreferencePair:
    """One row (any of the three shapes) → pair; raises `RowError` with the reason it cannot.

    Kept in `meta` when the row has them: TRL's `margin`, and the two responses' ratings
    `score_chosen` / `score_rejected` (UltraFeedback-binarized's columns; the `rating_conflict`
    detector flags a pair whose rejected response was rated higher).
    """
    extras = {name: value for name in ("margin", *SCORE_FIELDS)
              if (value := _number(row, name)) is not None}
    if (SCORE_FIELDS[0] in extras) != (SCORE_FIELDS[1] in extras):
        given, missing = SCORE_FIELDS if SCORE_FIELDS[0] in extras else SCORE_FIELDS[::-1]
        raise RowError(f"field {given!r} without {missing!r}: a pair's ratings come as both")
    pair = _pair_from_shape(row, source_index=source_index, split=split, subset=subset,
                            explicit=explicit)
    return replace(pair, meta={**pair.meta, **extras}) if extras else pair


# The per-response ratings a pair row may carry (UltraFeedback-binarized), chosen's first.
SCORE_FIELDS = ("score_chosen", "score_rejected")


def _number(row: Mapping[str, Any], name: str) -> float | None:
    """An optional numeric field (`margin`, a score) as a finite number, None when absent."""
    if name not in row:
        return None
    if row[name] is None:
        raise RowError(f"field {name!r} is null")
    return parse_number(row[name], f"field {name!r}")


def parse_number(value: Any, what: str) -> float:
    """A finite number from a number or its text (CSV cells are text); `what` names it in the
    one-line refusal.

    >>> parse_number("2.5", "field 'margin'")
    2.5
    """
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise RowError(f"{what} is {value!r}, expected a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError(f"{what} is {'null' if value is None else type(value).__name__}, "
                       "expected a number")
    if not math.isfinite(value):
        raise RowError(f"{what} is {value}, expected a finite number")
    return float(value)


def _pair_from_shape(row: Mapping[str, Any], *, source_index: int, split: Split, subset: str,
                     explicit: bool) -> PreferencePair:
    chosen, rejected = _field(row, "chosen"), _field(row, "rejected")
    row_subset = row.get("subset")
    if isinstance(row_subset, str) and row_subset:
        subset = row_subset
    if explicit:
        prompt = _to_turns(_field(row, "prompt"), "prompt")
        return pair_from_turns(
            prompt + _to_turns(chosen, "chosen"), prompt + _to_turns(rejected, "rejected"),
            source_index=source_index, split=split, subset=subset,
            raw_chosen=chosen if isinstance(chosen, str) else None,
            raw_rejected=rejected if isinstance(rejected, str) else None)
    if isinstance(chosen, str) and isinstance(rejected, str):
        if not parse_dialogue(chosen) and not parse_dialogue(rejected):
            # TRL's implicit prompt lives in the HH markers; plain text on both sides has no prompt,
            # and storing it as an empty one would train on pairs that look fine but are not
            raise RowError(_NO_MARKERS)
        return pair_from_hh(chosen, rejected, source_index=source_index, split=split,
                            subset=subset)
    if isinstance(chosen, list) and isinstance(rejected, list):
        return pair_from_turns(_messages_to_turns(chosen, "chosen"),
                               _messages_to_turns(rejected, "rejected"),
                               source_index=source_index, split=split, subset=subset)
    raise RowError("'chosen' and 'rejected' must both be text or both be message lists")


def _field(row: Mapping[str, Any], key: str) -> str | list[Any]:
    if key not in row:
        raise RowError(f"missing field '{key}'")
    value = row[key]
    if value is None:
        raise RowError(f"field '{key}' is null")
    if not isinstance(value, (str, list)):
        raise RowError(f"field '{key}' is {type(value).__name__}, expected text or messages")
    return value


def _to_turns(value: str | list[Any], key: str) -> list[Turn]:
    """An explicit-prompt field as turns: messages, an HH transcript, or plain text."""
    if isinstance(value, list):
        return _messages_to_turns(value, key)
    if key != "prompt":
        return [Turn(ASSISTANT, value.strip())]
    turns = parse_dialogue(value)
    if not turns:
        return [Turn(HUMAN, value.strip())]
    # Text before the first HH marker (an instruction preamble) is kept as a system line.
    preamble = value.split(f"{turns[0].role}:", 1)[0].strip()
    if preamble:
        turns = [Turn(_ROLES["system"], preamble), *turns]
    # "…\n\nAssistant:" at the end of an HH-style prompt is the slot for the reply, not a turn.
    if turns[-1].role == ASSISTANT and not turns[-1].text:
        turns = turns[:-1]
    return turns


def split_prompt(value: str | list[Any], key: str = "prompt") -> tuple[str, str]:
    """(context, prompt) of an explicit prompt field: its last human turn, and the earlier turns
    rendered HH-style (`PreferencePair.context`); plain text is one human turn. `RowError` when
    it holds no human turn last.

    >>> split_prompt("Human: hi\\n\\nAssistant: hello\\n\\nHuman: and you?")
    ('Human: hi\\n\\nAssistant: hello', 'and you?')
    """
    turns = _to_turns(value, "prompt")
    if not turns or turns[-1].role != HUMAN:
        raise RowError(f"field '{key}' does not end with a user turn")
    return render_turns(turns[:-1]), turns[-1].text


def _messages_to_turns(messages: list[Any], key: str) -> list[Turn]:
    turns = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise RowError(f"'{key}' holds a {type(message).__name__}, expected role/content")
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise RowError(f"unknown role {role!r} in '{key}'; expected user, assistant, system")
        if not isinstance(content, str):
            raise RowError(f"message content in '{key}' is {type(content).__name__}, "
                           "expected text")
        turns.append(Turn(_ROLES[role], content.strip()))
    return turns
