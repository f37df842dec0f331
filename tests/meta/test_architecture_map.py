"""docs/architecture.md is a true map: its tree names every module under src/rewardlab and nothing
that does not exist, and every signature its Python blocks quote is the one `inspect.signature` reads.

The tree block (the first code block under "## The tree"): a line `  name/` opens a folder (two
spaces of indent per level, the folder's modules on its line and the lines indented past it); a line
`  name.py` names a module of the folder above it. A package's `__init__.py` is named by its folder.

The Python blocks: a block checks against the modules its heading names (`## store/`,
`## data/sources.py`, a `### …` heading's own paths; a `###` heading without a path marks an
example, unchecked); a comment line `# evaluation/power.py` adds a module. There, every quoted
`def` must match the real parameter names, order, kinds, defaults and, where quoted, annotations and
return annotation (`...` or `…` in a parameter list stands for parameters left out); every `class`
must exist with the quoted bases; a `@dataclass` quoted with its fields lists them all, in order,
unless it ends in `…`; `NAME = value` must equal the real value.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import rewardlab

PACKAGE = Path(rewardlab.__file__).parent
DOC = PACKAGE.parents[1] / "docs" / "architecture.md"
ELIDED = ("...", "…")
# a module path: `data/sources.py`, `store/`, `errors.py` (no dots or dashes around it)
DECORATORS = r"(?:@[\w.]+(?:\([^)]*\))?\s+)*"  # `@dataclass`, `@dataclass(frozen=True)`
PATH_RE = re.compile(r"(?<![\w./-])((?:\w+/)*\w+\.py|(?:\w+/)+)(?![\w-])")


@dataclass
class Quote:
    """One checked statement of a Python block: where it is, what it says, where to look it up."""

    line: int           # 1-based line in docs/architecture.md
    text: str           # the statement, continuation lines joined
    owner: str | None   # the quoted class it sits in, if any
    modules: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the doc, split into its parts


def _doc_lines() -> list[str]:
    return DOC.read_text(encoding="utf-8").splitlines()


def _blocks() -> Iterator[tuple[str, str, str | None, int, list[str]]]:
    """(language, h2 heading, h3 heading, first line number, lines) of every fenced block."""
    h2, h3 = "", None
    lang: str | None = None
    start, body = 0, []
    for number, line in enumerate(_doc_lines(), 1):
        if lang is None and line.startswith("## "):
            h2, h3 = line[3:], None
        elif lang is None and line.startswith("### "):
            h3 = line[4:]
        elif line.startswith("```") and lang is None:
            lang, start, body = line[3:].strip(), number + 1, []
        elif line.startswith("```"):
            yield lang, h2, h3, start, body
            lang = None
        elif lang is not None:
            body.append(line)


def _tree_block() -> tuple[int, list[str]]:
    for _, h2, _, start, body in _blocks():
        if h2.startswith("The tree"):
            return start, body
    raise AssertionError("docs/architecture.md has no code block under '## The tree'")


# ---------------------------------------------------------------- the tree


def _module_of(path: Path) -> str:
    """src/rewardlab/a/b.py → 'a/b.py' (as the map writes it)."""
    return path.relative_to(PACKAGE).as_posix()


def _actual_modules() -> set[str]:
    return {_module_of(p) for p in PACKAGE.rglob("*.py")}


def _tree_names() -> list[tuple[int, str]]:
    """(doc line, 'folder/module.py' or 'folder/') for everything the tree names, in order."""
    start, body = _tree_block()
    folders: list[str] = []
    named: list[tuple[int, str]] = []
    for number, line in enumerate(body, start):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        entry = stripped.split(" ", 1)[0]
        if 0 < indent < 10 and stripped:  # an entry line; wider indents continue the entry above
            depth = indent // 2
            folders = folders[:depth - 1]
            if entry.endswith("/"):
                folders.append(entry.rstrip("/"))
                named.append((number, "/".join(folders) + "/"))
                stripped = stripped[len(entry):]
        here = "".join(f"{f}/" for f in folders)
        named += [(number, here + token) for token in PATH_RE.findall(stripped) if token.endswith(".py")]
    return named


def test_the_tree_names_every_module() -> None:
    named = {name for _, name in _tree_names()}
    # a package's __init__.py is named by its folder's line
    named |= {name + "__init__.py" for name in named if name.endswith("/")}
    missing = sorted(_actual_modules() - named)
    assert not missing, ("modules docs/architecture.md's tree does not name (add each to its folder's "
                         f"line): {missing}")


def test_everything_the_tree_names_exists() -> None:
    names = _tree_names()
    gone = [f"line {n}: {name}" for n, name in names if not (PACKAGE / name).exists()]
    assert not gone, f"docs/architecture.md's tree names what src/rewardlab lacks: {gone}"


def test_the_tree_parser_reads_folders_and_continuations() -> None:
    names = dict((name, n) for n, name in _tree_names())
    for name in ("__init__.py", "errors.py", "data/", "data/pairs.py", "data/synthetic.py",
                 "training/fast/", "models/packed.py", "flags/detectors/", "cli/main.py"):
        assert name in names, name
    assert "fast/packed.py" not in names and "packed.py" not in names


def test_every_path_the_doc_mentions_exists() -> None:
    """Headings and backticked paths that start at a stage folder name real modules."""
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    wrong = []
    for number, line in enumerate(_doc_lines(), 1):
        spans = [line] if line.startswith("#") else re.findall(r"`([^`]+)`", line)
        for span in spans:
            for path in PATH_RE.findall(span):
                if path.split("/")[0] in stages and not (PACKAGE / path).exists():
                    wrong.append(f"line {number}: {path}")
    assert not wrong, f"docs/architecture.md names paths src/rewardlab lacks: {wrong}"


def test_the_public_api_paragraph_lists_the_public_names() -> None:
    text = "\n".join(_doc_lines())
    paragraph = text.split("The public API (`import rewardlab as rl`):", 1)[1].split("Everything else", 1)[0]
    assert set(re.findall(r"`(\w+)`", paragraph)) == set(rewardlab._API)


# ---------------------------------------------------------------- the quoted signatures


def _modules_at(path: str) -> list[str]:
    """'store/' → every module of rewardlab.store; 'data/sources.py' → ['rewardlab.data.sources']."""
    target = PACKAGE / path
    assert target.exists(), f"docs/architecture.md names {path}, which src/rewardlab lacks"
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    names = []
    for file in files:
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _heading_paths(paths: list[str]) -> list[str]:
    """A heading's paths, a bare `stats.py` after `evaluation/crossed.py` read in that folder."""
    resolved: list[str] = []
    for path in paths:
        folder = resolved[-1].rpartition("/")[0] if resolved else ""
        sibling = f"{folder}/{path}" if folder else path
        resolved.append(path if (PACKAGE / path).exists() or "/" in path else sibling)
    return resolved


def _statements(body: list[str], start: int) -> Iterator[tuple[int, int, str, str]]:
    """(doc line, indent, first line, code) per statement, comments dropped: a statement runs on
    while a bracket is open, and over deeper-indented lines that do not open a statement of their own."""
    i = 0
    while i < len(body):
        line = body[i]
        indent = len(line) - len(line.lstrip())
        code, j = _strip_comment(line.strip()), i
        while j + 1 < len(body) and (_paren_depth(code) > 0 or _continues(body[j + 1], indent)):
            j += 1
            code += " " + _strip_comment(body[j].strip())
        yield start + i, indent, line.strip(), code.strip()
        i = j + 1


def _continues(line: str, indent: int) -> bool:
    stripped = line.strip()
    deeper = len(line) - len(line.lstrip()) > indent
    opens = re.match(DECORATORS + r"(def|class)\s|#|\w+\s*:|\w+\s*=", stripped)
    return bool(stripped) and deeper and not opens


def _paren_depth(text: str) -> int:
    return sum({"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(c, 0) for c in _unquoted(text))


def _unquoted(text: str) -> str:
    return re.sub(r'"[^"]*"|\'[^\']*\'', '""', text)


def _strip_comment(text: str) -> str:
    """`text` without its trailing `# comment` (a # inside a string stays)."""
    quote = None
    for k, c in enumerate(text):
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == "#" and (k == 0 or text[k - 1].isspace()):
            return text[:k].rstrip()
    return text.rstrip()


def _quotes() -> list[Quote]:
    quotes: list[Quote] = []
    for lang, h2, h3, start, body in _blocks():
        paths = PATH_RE.findall(h3 if h3 is not None else h2)
        if lang != "python" or not paths:
            continue  # an example, or a block of another language
        modules = [m for path in _heading_paths(paths) for m in _modules_at(path)]
        owner: tuple[str, int] | None = None
        decorators = ""
        for number, indent, first, code in _statements(body, start):
            comment_path = re.fullmatch(r"#\s*((?:\w+/)+\w+\.py)\s*", first)
            if comment_path:
                modules = modules + _modules_at(comment_path[1])
            if not code:
                continue
            if re.fullmatch(r"(@[\w.]+(\([^)]*\))?\s*)+", code):
                decorators += code + " "  # `@dataclass` on its own line belongs to the class below
                continue
            code, decorators = decorators + code, ""
            if owner and indent <= owner[1]:
                owner = None
            quotes.append(Quote(number, code, owner[0] if owner else None, modules))
            klass = re.match(DECORATORS + r"class\s+(\w+)", code)
            if klass:
                owner = (klass[1], indent)
    return quotes


def _def_parts(code: str) -> tuple[str, str, str] | None:
    """(name, parameters, return annotation) of a quoted `def`, or None."""
    opening = re.match(DECORATORS + r"def\s+(\w+)\(", code)
    if not opening:
        return None
    depth, end = 1, opening.end()
    for end in range(opening.end(), len(code)):
        if not _in_string(code, end):
            depth += {"(": 1, ")": -1}.get(code[end], 0)
        if depth == 0:
            break
    rest = code[end + 1:].strip()
    returns = rest[2:].strip().rstrip(":").strip() if rest.startswith("->") else ""
    return opening[1], code[opening.end():end], returns


def _in_string(text: str, at: int) -> bool:
    quote = None
    for c in text[:at]:
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
    return quote is not None


def _lookup(name: str, modules: list[str]) -> Any:
    """The one object called `name` in `modules` (re-exports of it count once)."""
    found: dict[int, Any] = {}
    for module_name in modules:
        module: ModuleType = importlib.import_module(module_name)
        if name in vars(module):
            value = vars(module)[name]
            found.setdefault(id(value), value)
    assert found, f"{name} is defined in none of {modules}"
    assert len(found) == 1, f"{name} is ambiguous in {modules}"
    return next(iter(found.values()))


def _annotation(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return ""
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _same_annotation(quoted: str, real: Any) -> bool:
    return re.sub(r"\s", "", quoted) == re.sub(r"\s", "", _annotation(real))


def _value(source: str, module: str) -> Any:
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return eval(source, vars(importlib.import_module(module)))  # noqa: S307 (our own doc's text)


def _split_top(text: str, sep: str) -> list[str]:
    """`text` split at `sep` outside brackets and quotes."""
    parts, depth, current, quote = [], 0, "", None
    for c in text:
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += c
    return [*parts, current]


def _quoted_parameters(params: str) -> tuple[list[tuple[str, inspect._ParameterKind, str, str | None]], bool]:
    """(name, kind, annotation, default source) per quoted parameter, and whether some are left out."""
    pieces = [p.strip() for p in _split_top(params, ",") if p.strip()]
    elided = any(p in ELIDED for p in pieces)
    tree = ast.parse(f"def f({', '.join(p for p in pieces if p not in ELIDED)}): pass").body[0]
    assert isinstance(tree, ast.FunctionDef)
    args = tree.args
    kinds = inspect.Parameter
    rows: list[tuple[ast.arg, inspect._ParameterKind, ast.expr | None]] = []
    positional = args.posonlyargs + args.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    rows += [(a, kinds.POSITIONAL_ONLY if a in args.posonlyargs else kinds.POSITIONAL_OR_KEYWORD, d)
             for a, d in zip(positional, defaults)]
    rows += [(args.vararg, kinds.VAR_POSITIONAL, None)] if args.vararg else []
    rows += [(a, kinds.KEYWORD_ONLY, d) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    rows += [(args.kwarg, kinds.VAR_KEYWORD, None)] if args.kwarg else []
    return [(a.arg, kind, ast.unparse(a.annotation) if a.annotation else "",
             ast.unparse(d) if d is not None else None) for a, kind, d in rows], elided


def _function(owner: Any, name: str) -> Any:
    member = inspect.getattr_static(owner, name)
    for wrapper in ("__func__", "fget"):  # classmethod/staticmethod, property
        member = getattr(member, wrapper, member)
    return member


def _check_def(quote: Quote, parts: tuple[str, str, str], where: str) -> list[str]:
    name, params, returns = parts
    owner = _lookup(quote.owner, quote.modules) if quote.owner else None
    function = _function(owner, name) if owner else _lookup(name, quote.modules)
    signature = inspect.signature(function)
    real = list(signature.parameters.values())
    quoted, elided = _quoted_parameters(params)
    problems = []
    names = [q[0] for q in quoted]
    real_names = [p.name for p in real]
    in_order = iter(real_names)
    if (names != real_names) if not elided else not all(n in in_order for n in names):
        problems.append(f"{where} parameters {names}, the code has {real_names}")
    module = inspect.getmodule(function).__name__  # type: ignore[union-attr]
    for q_name, kind, annotation, default in quoted:
        param = signature.parameters.get(q_name)
        if param is None:
            continue
        if param.kind != kind:
            problems.append(f"{where} {q_name} is {kind.description}, the code has {param.kind.description}")
        if annotation and not _same_annotation(annotation, param.annotation):
            problems.append(f"{where} {q_name}: {annotation}, the code has {_annotation(param.annotation)}")
        real_default = param.default
        if default is None and real_default is not param.empty:
            problems.append(f"{where} {q_name} quoted without its default {real_default!r}")
        elif default is not None and (real_default is param.empty or _value(default, module) != real_default):
            problems.append(f"{where} {q_name}={default}, the code's default is {real_default!r}")
    if returns and not _same_annotation(returns, signature.return_annotation):
        problems.append(f"{where} returns {returns}, the code {_annotation(signature.return_annotation)}")
    return problems


def _class_fields(cls: type) -> dict[str, tuple[str, Any]]:
    """name → (annotation, default or empty) of a class's fields, bases first."""
    if dataclasses.is_dataclass(cls):
        empty = inspect.Parameter.empty
        return {f.name: (_annotation(f.type),
                         f.default if f.default is not dataclasses.MISSING
                         else f.default_factory() if f.default_factory is not dataclasses.MISSING else empty)
                for f in dataclasses.fields(cls)}
    return _annotated(cls)


def _annotated(cls: type) -> dict[str, tuple[str, Any]]:
    """name → (annotation, value or empty) of every annotated name of `cls` and its bases."""
    found: dict[str, tuple[str, Any]] = {}
    for base in reversed(cls.__mro__):
        for name, annotation in inspect.get_annotations(base).items():
            found[name] = (_annotation(annotation), vars(base).get(name, inspect.Parameter.empty))
    return found


def _check_member(cls: type, piece: str, module: str, where: str) -> tuple[str | None, list[str]]:
    """One `name: type = default` of a quoted class; (its name or None if elided, problems)."""
    if piece in ELIDED or piece.startswith(ELIDED) or piece.startswith(('"', "'")):
        return None, []
    member = re.fullmatch(r"(\w+)\s*(?::\s*(.+?))?\s*(?:=\s*(.+))?", piece)
    assert member, f"{where} cannot read {piece!r}"
    name, annotation, default = member[1], member[2], member[3]
    fields = {**_annotated(cls), **_class_fields(cls)}
    if name not in fields:
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, property):  # a quoted property: its return annotation is its type
            real = _annotation(inspect.signature(attr.fget).return_annotation) if attr.fget else ""
            ok = not annotation or _same_annotation(annotation, real)
            return name, [] if ok else [f"{where} {name}: {annotation}, the code has {real}"]
        return name, [f"{where} {cls.__name__} has no field {name}"]
    real_annotation, real_default = fields[name]
    problems = []
    if annotation and not _same_annotation(annotation, real_annotation):
        problems.append(f"{where} {name}: {annotation}, the code has {real_annotation}")
    if default is not None and _value(default, module) != real_default:
        problems.append(f"{where} {name}={default}, the code's default is {real_default!r}")
    return name, problems


def _check_class(quote: Quote, match: re.Match[str], members: list[str], where: str) -> list[str]:
    cls = _lookup(match["name"], quote.modules)
    assert inspect.isclass(cls), f"{where} {match['name']} is not a class"
    problems = []
    if match["bases"] is not None:
        bases = [b.strip().split("[")[0] for b in match["bases"].split(",") if b.strip()]
        real_bases = [b.__name__ for b in cls.__bases__]
        if bases != real_bases:
            problems.append(f"{where} {cls.__name__}({', '.join(bases)}), the code has {real_bases}")
    module = cls.__module__
    named = []
    for piece in members:
        name, found = _check_member(cls, piece, module, where)
        problems += found
        named += [name] if name else []
    is_dataclass = "@dataclass" in match["decorators"]
    elided = any(p.startswith(ELIDED) for p in members)
    if is_dataclass:
        if not dataclasses.is_dataclass(cls):
            problems.append(f"{where} {cls.__name__} is quoted as a dataclass and is not one")
        elif named and not elided and named != list(_class_fields(cls)):
            problems.append(f"{where} {cls.__name__} fields {named}, the code has {list(_class_fields(cls))}")
    return problems


CLASS_RE = re.compile(rf"(?P<decorators>{DECORATORS})class\s+(?P<name>\w+)\s*"
                      r"(?:\((?P<bases>[^)]*)\))?\s*:(?P<rest>.*)$")
NAME_RE = re.compile(r"(?P<name>[A-Z_][A-Za-z0-9_]*)\s*(?::\s*(?P<annotation>[^=]+?))?"
                     r"\s*(?:=\s*(?P<value>.+))?")


def _pieces(text: str) -> list[str]:
    return [p.strip() for p in _split_top(text, ";") if p.strip()]


def _check(quote: Quote, quotes: list[Quote]) -> list[str]:
    where = f"docs/architecture.md:{quote.line}:"
    if quote.text in ELIDED:
        return []
    if (parts := _def_parts(quote.text)):
        return _check_def(quote, parts, where)
    if (match := CLASS_RE.match(quote.text)):
        # members: the class line's own `a: int; b = 1` and its member lines (defs are checked alone)
        members = _pieces(match["rest"])
        members += [p for q in quotes if q.owner == match["name"] and q.line > quote.line
                    and not _def_parts(q.text) for p in _pieces(q.text)]
        return _check_class(quote, match, members, where)
    if quote.owner:
        return []  # a member line of a quoted class: checked with its class
    problems = []
    for piece in _pieces(quote.text):
        match = NAME_RE.fullmatch(piece)
        if not match:
            continue  # a line of an example, not a name
        value = _lookup(match["name"], quote.modules)
        if match["value"] and _value(match["value"], quote.modules[0]) != value:
            problems.append(f"{where} {match['name']} = {match['value']}, the code has {value!r}")
    return problems


def test_the_quoted_signatures_are_the_code_s() -> None:
    quotes = _quotes()
    assert sum(bool(_def_parts(q.text)) for q in quotes) >= 40, "the signature blocks were not read"
    problems = [p for quote in quotes for p in _check(quote, quotes)]
    assert not problems, ("docs/architecture.md quotes signatures the code does not have:\n"
                          + "\n".join(problems))


@pytest.mark.parametrize("params, names, elided", [
    ("self, path, *, info=None", ["self", "path", "info"], False),
    ("pairs, *, config: TrainConfig, ...", ["pairs", "config"], True),
    ("spec: str, *, split: Split | None = None, limit: dict[str, int] = {}",
     ["spec", "split", "limit"], False),
])
def test_the_signature_reader(params: str, names: list[str], elided: bool) -> None:
    quoted, was_elided = _quoted_parameters(params)
    assert [q[0] for q in quoted] == names and was_elided == elided
    assert quoted[-1][1] == inspect.Parameter.KEYWORD_ONLY


# ---------------------------------------------------------------- the public names' docstrings


def _documented_parameters(doc: str) -> dict[str, str]:
    """name → its line of a numpydoc "Parameters" section (`a, b : type, default x` gives both)."""
    lines = inspect.cleandoc(doc).splitlines()
    start = next((i + 2 for i, line in enumerate(lines[:-1])
                  if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}), None)
    if start is None:
        return {}
    found: dict[str, str] = {}
    for line in lines[start:]:
        if not line.strip() or (line.strip() and set(line.strip()) == {"-"}):
            break
        if line.startswith(" ") or " : " not in line:
            continue  # a description line
        names, _, kind = line.partition(" : ")
        found |= {name.strip().lstrip("*"): kind for name in names.split(",")}
    return found


def _real_default(owner: Any, param: inspect.Parameter) -> Any:
    if dataclasses.is_dataclass(owner) and repr(param.default) == "<factory>":
        return {f.name: f for f in dataclasses.fields(owner)}[param.name].default_factory()  # type: ignore[misc]
    return param.default


PUBLIC = sorted(rewardlab._API)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names_document_every_parameter(name: str) -> None:
    """cleanlab-style: every parameter of a public name has its line, `name : type[, default x]`,
    and the default quoted there is the real one."""
    obj = getattr(rewardlab, name)
    documented = _documented_parameters(obj.__doc__ or "")
    assert documented, f"rewardlab.{name}'s docstring has no Parameters section"
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return  # an exception takes its message: documented, not introspected
    params = [p for p in inspect.signature(obj).parameters.values() if p.name not in ("self", "cls")]
    assert sorted(documented) == sorted(p.name for p in params), name
    module = obj.__module__
    for param in params:
        line = documented[param.name]
        quoted = re.search(r"\bdefault (.+)$", line)
        if param.default is param.empty:
            assert not quoted, f"{name}({param.name}) has no default, the doc says {line!r}"
            continue
        assert quoted, f"{name}({param.name}): the doc line {line!r} does not give its default"
        assert _value(quoted[1], module) == _real_default(obj, param), f"{name}({param.name}): {line!r}"
