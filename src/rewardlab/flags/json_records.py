"""JSON records from an untrusted file, each with its FILE:LINE: a JSONL file, or a JSON list.

Whatever the bytes hold, reading ends in records or in one SourceError naming FILE:LINE: text that
is not UTF-8, broken JSON, JSON nested deeper than Python's parser recurses (a
file of 100,000 `[` would otherwise end in a RecursionError), an integer of thousands of digits.

>>> import os, tempfile
>>> path = Path(tempfile.mkdtemp()) / "reviews.jsonl"
>>> _ = path.write_text('{"id": 1}\\n\\n{"id": 2}\\n', encoding="utf-8")
>>> [(os.path.basename(where), record) for where, record in jsonl_records(path)]
[('reviews.jsonl:1', {'id': 1}), ('reviews.jsonl:3', {'id': 2})]
>>> _ = path.write_text('{"id": 1}\\n{"id": 2', encoding="utf-8")
>>> list(jsonl_records(path))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
rewardlab.errors.SourceError: .../reviews.jsonl:2: not valid JSON: Expecting ',' delimiter
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rewardlab.errors import SourceError

__all__ = ["MAX_DEPTH", "jsonl_records", "json_list_records"]

MAX_DEPTH = 64  # named in the error: where a file that broke the parser first nests deeper
_DECODER = json.JSONDecoder()
_NON_SPACE = re.compile(r"\S")
_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # strings skipped whole, then brackets


def _skip_space(text: str, pos: int) -> int:
    """The first position at or after `pos` that is not white space (else the end)."""
    found = _NON_SPACE.search(text, pos)
    return found.start() if found else len(text)


class _Lines:
    """FILE:LINE of positions in `text`, counted on from the last one asked (a file is read in
    order, so it is counted once, not once per record)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.text, self.pos, self.line = path, text, 0, 1

    def __call__(self, pos: int) -> str:
        if pos < self.pos:
            self.pos, self.line = 0, 1
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return f"{self.path}:{self.line}"


def _too_deep_at(text: str, start: int) -> int:
    """Where the JSON value at `start` first nests deeper than MAX_DEPTH (else `start`)."""
    depth = 0
    for token in _BRACKET.finditer(text, start):
        if token.group() in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                return token.start()
        elif token.group() in ("]", "}"):
            depth -= 1
    return start


def _parse_value(text: str, pos: int, where_at: Callable[[int], str]) -> tuple[Any, int]:
    """The JSON value starting at `pos` and the position after it; any failure a SourceError."""
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as e:
        raise SourceError(f"{where_at(e.pos)}: not valid JSON: {e.msg}") from None
    except RecursionError:
        raise SourceError(f"{where_at(_too_deep_at(text, pos))}: JSON nested more than "
                          f"{MAX_DEPTH} levels deep") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise SourceError(f"{where_at(pos)}: not valid JSON: {e}") from None


def _at(where: str) -> Callable[[int], str]:
    """`where` for any position (a JSONL record is one line)."""
    return lambda _pos: where


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e.strerror}") from None


def _utf8(path: Path, raw: bytes, first_line: int = 1) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = first_line + raw.count(b"\n", 0, e.start)
        raise SourceError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the "
                          "file as UTF-8") from None


def jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    """("FILE:LINE", value) per non-blank line of a JSONL file."""
    for number, raw in enumerate(_read_bytes(path).split(b"\n"), start=1):
        line = _utf8(path, raw, number)
        start = _skip_space(line, 0)
        if start == len(line):
            continue
        where = f"{path}:{number}"
        record, end = _parse_value(line, start, _at(where))
        if line[end:].strip():
            raise SourceError(f"{where}: not valid JSON: extra data after the value")
        yield where, record


def json_list_records(path: Path, *, what: str = "records") -> Iterator[tuple[str, Any]]:
    """("FILE:LINE", value) per element of the JSON list a file holds, LINE where it starts."""
    text = _utf8(path, _read_bytes(path))
    where_at = _Lines(path, text)
    pos = _skip_space(text, 0)
    if text[pos:pos + 1] != "[":
        raise SourceError(f"{where_at(pos)}: expected a JSON list of {what}")
    pos = _skip_space(text, pos + 1)
    number = 0
    while text[pos:pos + 1] != "]":
        if number:
            if text[pos:pos + 1] != ",":
                raise SourceError(f"{where_at(pos)}: not valid JSON: expected ',' or ']' after "
                                  f"element {number} of the list")
            pos = _skip_space(text, pos + 1)
        number += 1
        value, end = _parse_value(text, pos, where_at)
        yield where_at(pos), value
        pos = _skip_space(text, end)
    if _skip_space(text, pos + 1) != len(text):
        raise SourceError(f"{where_at(_skip_space(text, pos + 1))}: not valid JSON: extra data "
                          "after the list")
