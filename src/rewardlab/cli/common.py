"""Small pieces the CLI shares: printing tables/JSON and turning config dataclasses into flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rewardlab.errors import RewardlabError
from rewardlab.jsonable import to_jsonable

__all__ = ["add_config_args", "add_store_options", "check_at_least", "check_output_dir",
           "check_output_file", "config_file_values", "config_from_args", "emit", "format_table",
           "given_values", "named_at_source", "read_config_file", "server_config"]

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


def _help_with_default(help_text: str, default: Any) -> str:
    """The help plus "(default: X)", unless it states its default itself ("(default 1)",
    "(preset: 1)", "off by default") or the default is None: None means "derived" (from the preset,
    the source…), which the help explains and "(default: None)" would only contradict."""
    stated = "default" in help_text.lower() or "(preset" in help_text
    return help_text if stated or default is None else f"{help_text} (default: {default})"


def add_config_args(parser: argparse.ArgumentParser, cls: type, *,
                    skip: Sequence[str] = (), title: str | None = None,
                    given_only: bool = False) -> None:
    """One `--field-name` flag per dataclass field, help and default taken from the field, in an
    option group titled `title` (default: "<Class> (saved with the run)").

    `given_only`: every flag defaults to None, so `given_values` tells what the command line set
    (a `--config` file or a preset fills the rest; the help still shows the field's default)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title or f"{cls.__name__} (saved with the run)")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = _help_with_default(f.metadata.get("help", ""), default)
        if given_only:
            default = None
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


def given_values(cls: type, args: argparse.Namespace, *, skip: Sequence[str] = ()
                 ) -> dict[str, Any]:
    """The fields of `cls` the command line set (flags added with `given_only`: None = not given)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if f.name not in skip and getattr(args, f.name, None) is not None}


# ---- --config FILE ------------------------------------------------------------------------------

def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of options in a `--config` FILE: YAML for a .yaml/.yml file, JSON otherwise;
    one error line naming the file (and the line, where the parser gives it) otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise RewardlabError(f"--config {path}: cannot read ({e.strerror})") from e
    is_yaml = Path(path).suffix.lower() in (".yaml", ".yml")
    data = _parse_yaml(path, text) if is_yaml else _parse_json(path, text)
    if not isinstance(data, dict):
        raise RewardlabError(f"{path}: expected a {'YAML mapping' if is_yaml else 'JSON object'} "
                             f"of options, got {type(data).__name__}")
    return data


def _parse_json(path: str | Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RewardlabError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); --config takes a JSON "
                             "object of options (or YAML in a .yaml/.yml file)") from e


def _parse_yaml(path: str | Path, text: str) -> Any:
    import yaml  # only for a YAML file: one import fewer for every other command

    try:
        return yaml.safe_load(text)  # safe_load only: a config file must not build objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        what = " ".join(str(getattr(e, "problem", None) or e).split())
        raise RewardlabError(f"{path}{where}: invalid YAML ({what})") from e


def _number(text: str) -> float | str:
    """'1e-4' → 0.0001; anything else stays as it was (and is refused as not a float)."""
    try:
        return float(text)
    except ValueError:
        return text


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _file_value(path: str | Path, key: str, value: Any, hint: Any) -> Any:
    """`value` checked against the field's type; a list of words or numbers for a text field is
    joined with commas (the command line's form of a list: `--conditions a,b`)."""
    if value is None:
        return None  # the field's own "not given": the dataclass says whether None is allowed
    tp = bool if hint is bool else typing.cast(type, _flag_type(hint))  # int, float or str
    if tp is str and isinstance(value, list) and all(_scalar(v) for v in value):
        return ",".join(map(str, value))
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        value = _number(value)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is float:  # JSON writes 1e-3 and 1 alike; an int is a fine float
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:  # True is an int to Python, not a count or a name to the user
        ok = isinstance(value, tp) and not isinstance(value, bool)
    if not ok:
        raise RewardlabError(f"{path}: {key}: expected {'a list or ' if tp is str else ''}"
                             f"{tp.__name__}, got {json.dumps(value)[:60]}")
    return value


def config_file_values(path: str | Path, data: Mapping[str, Any], cls: type, *,
                       skip: Sequence[str] = (), prefix: str = "") -> dict[str, Any]:
    """`data`'s options for dataclass `cls`, each checked: an unknown key is one error line
    naming the file and the key (`prefix` + key, e.g. "train.lr")."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    values = {}
    for key, value in data.items():
        if key not in known:
            raise RewardlabError(f"{path}: unknown key {prefix + key!r}; {cls.__name__} options: "
                                 f"{', '.join(known)}")
        values[key] = _file_value(path, prefix + key, value, hints[key])
    return values


class _ServerConfig(Protocol):
    @property
    def host(self) -> str: ...


S = TypeVar("S", bound=_ServerConfig)


def server_config(cls: type[S], args: argparse.Namespace, *, command: str) -> tuple[S, str | None]:
    """A server command's config and token (`--token`, else $REWARDLAB_TOKEN) from its flags,
    refusing a bind beyond loopback without a token: all before the command does any work."""
    from rewardlab.web.security import check_bind, resolve_token

    config = config_from_args(cls, args)
    token = resolve_token(args.token)
    check_bind(config.host, token, command=command)
    return config, token


def add_store_options(p: argparse.ArgumentParser, *, handler: Callable[[argparse.Namespace], int],
                      json_flag: bool = True) -> None:
    """Close a store command's parser: --db URL and --json (last in --help), and its handler."""
    p.set_defaults(handler=handler)
    p.add_argument("--db", default=None, metavar="URL",
                   help="database URL (default: $REWARDLAB_DB or sqlite:///rewardlab.db; "
                        "PostgreSQL: postgresql+psycopg://user@host/db)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON document on stdout")


# Checked at the top of a handler, before any data is read or model trained: a typo in an option or
# an output path must cost a second, not the run.

def check_at_least(flag: str, value: int | None, minimum: int) -> None:
    """Refuse a count option below `minimum` (None = not given) with one error line."""
    if value is not None and value < minimum:
        raise RewardlabError(f"{flag} must be at least {minimum} (got {value})")


def _writable_dir(directory: Path, flag: str, path: Path) -> None:
    if not directory.is_dir():
        raise RewardlabError(f"{flag} {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise RewardlabError(f"{flag} {path}: directory {directory} is not writable")


def check_output_file(path: str | Path, flag: str = "-o") -> Path:
    """An output FILE that can be written: not a directory, its directory exists and is writable."""
    path = Path(path)
    if path.is_dir():
        raise RewardlabError(f"{flag} {path} is a directory; give a file name, e.g. "
                             f"{path / 'out.json'}")
    _writable_dir(path.parent, flag, path)
    return path


def check_output_dir(path: str | Path, flag: str = "-o") -> Path:
    """An output DIR: an existing directory, or one that can be created under a writable parent."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RewardlabError(f"{flag} {path} is an existing file, not a directory")
    # the nearest existing ancestor decides: parents end at "." or "/", which always exist
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise RewardlabError(f"{flag} {path}: {existing} is a file, not a directory")
    _writable_dir(existing, flag, path)
    return path


def named_at_source(error: RewardlabError, *, flags: Collection[str], path: str | None,
                     file_keys: Mapping[str, str]) -> RewardlabError:
    """`error`, a config's own refusal, naming where its value came from: the flag for a value
    given on the command line, the file and key for one from --config FILE. The configs' messages
    start with the option (TrainConfig: `epochs must be…`; CompareConfig: `--seeds must be…`).

    >>> from rewardlab.errors import ModelError
    >>> str(named_at_source(ModelError("epochs must be at least 1 (got 0)"), flags=(),
    ...                      path="cfg.yaml", file_keys={"epochs": "train.epochs"}))
    'cfg.yaml: train.epochs must be at least 1 (got 0)'
    >>> str(named_at_source(ModelError("max_length must be at least 1 (got 0)"),
    ...                      flags=("max_length",), path=None, file_keys={}))
    '--max-length must be at least 1 (got 0)'
    """
    option, _, rest = str(error).partition(" ")
    name = option.removeprefix("--").replace("-", "_")
    if name in flags:  # the command line wins over the file: its value is the one refused
        return type(error)(f"--{name.replace('_', '-')} {rest}")
    if path is not None and name in file_keys:
        return type(error)(f"{path}: {file_keys[name]} {rest}")
    return error
