"""The layout is a contract: stages import only stages below them, and no modules import in a cycle.

Every import counts, at module level, inside functions and under TYPE_CHECKING alike: a lazy import
that points up a layer is still a dependency that points the wrong way.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

import rewardlab

PACKAGE = Path(rewardlab.__file__).parent
# the data flow, bottom to top (docs/architecture.md); the package root modules sit below everything
STAGES = ["data", "store", "models", "training", "evaluation", "flags", "report", "experiment",
          "web", "integrations", "cli"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every rewardlab module `path` imports (a `from pkg import name` counts pkg.name if it is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rewardlab")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rewardlab"):
            assert node.level == 0, f"{path}: relative import (use absolute rewardlab.… imports)"
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if (PACKAGE.parent / f"{node.module}.{a.name}".replace(".", "/")).exists()
                      or (PACKAGE.parent / (f"{node.module}.{a.name}".replace(".", "/") + ".py")).exists()}
    return found


@functools.cache  # parsing all ~125 modules takes ~1 s; every parametrized case reads it
def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    # a module importing its own package (`from rewardlab.cli import data`) is no dependency
    return {name: {m for m in _imports(path) if m in modules and not name.startswith(m)}
            for name, path in modules.items()}


def _stage(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in STAGES:
        return -1  # rewardlab, rewardlab.errors, rewardlab._version, rewardlab.__main__
    return STAGES.index(parts[1])


def test_every_subpackage_is_a_known_stage() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(STAGES), folders - set(STAGES)


@pytest.mark.parametrize("module", sorted(_graph()))
def test_imports_point_down_the_stages(module: str) -> None:
    if module in ("rewardlab", "rewardlab.__main__"):
        return  # the facade re-exports every stage; `python -m rewardlab` is the CLI
    up = sorted(m for m in _graph()[module] if _stage(m) > _stage(module))
    assert not up, f"{module} (stage {_stage(module)}) imports a later stage: {up}"


def test_no_import_cycles() -> None:
    graph = dict(_graph())  # a copy: the cached graph serves every test
    graph.pop("rewardlab", None)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == "rewardlab":
                continue
            assert state.get(nxt) != 1, "import cycle: " + " → ".join(path + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_public_api_resolves() -> None:
    assert "train_reward_model" in rewardlab.__all__ and "Store" in rewardlab.__all__
    for name in rewardlab.__all__:
        assert getattr(rewardlab, name) is not None, name


def test_public_api_lists_each_name_once() -> None:
    assert sorted(rewardlab.__all__) == sorted(["__version__", *rewardlab._API])
