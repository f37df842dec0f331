"""Small pieces the CLI shares: printing tables/JSON and turning config dataclasses into flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from rewardlab.jsonable import to_jsonable

__all__ = ["add_config_args", "add_store_options", "config_from_args", "emit", "format_table"]

C = TypeVar("C")


def emit(payload: Any, *, as_json: bool, render: Callable[[], str]) -> None:
    """Print `payload` as one JSON document (`--json`) or the human rendering."""
    if as_json:
        json.dump(to_jsonable(payload), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(render())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned text table; numbers right-aligned.

    >>> print(format_table([{"a": 1, "b": "x"}], ["a", "b"]))
    a  b
    -  -
    1  x
    """
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows)
               for c in columns]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _flag_type(tp: Any) -> Callable[[str], Any]:
    """The argparse `type` for a dataclass field annotation (Optional[X] → X)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp if tp in (int, float, str) else str


def add_config_args(parser: argparse.ArgumentParser, cls: type, *,
                    skip: Sequence[str] = ()) -> None:
    """One `--field-name` flag per dataclass field, help and default taken from the field."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} (saved with the run)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata.get("help", "")
        if "(default:" not in help_text:  # a help that explains its own default keeps it
            help_text += f" (default: {default})"
        if hints[f.name] is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                               help=help_text)
        else:
            group.add_argument(flag, type=_flag_type(hints[f.name]), default=default,
                               help=help_text, choices=f.metadata.get("choices"))


def config_from_args(cls: type[C], args: argparse.Namespace, **overrides: Any) -> C:
    """Build the dataclass from parsed flags (same names), with explicit overrides."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
              if hasattr(args, f.name)}
    return cls(**{**values, **overrides})


def add_store_options(p: argparse.ArgumentParser, *, handler: Callable[[argparse.Namespace], int],
                      json_flag: bool = True) -> None:
    """Close a store command's parser: --db URL and --json (last in --help), and its handler."""
    p.set_defaults(handler=handler)
    p.add_argument("--db", default=None, metavar="URL",
                   help="database URL (default: $REWARDLAB_DB or sqlite:///rewardlab.db; "
                        "PostgreSQL: postgresql+psycopg://user@host/db)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
