"""rewardlab's compiled CPU kernels (`csrc/`): built once per machine, loaded from a cache after that.

One kernel today: row attention with the rows spread over threads (`csrc/row_attention.cpp`, used
by `rewardlab.training.fast.packed` on CPUs; bit-identical to the Python loop it replaces, ~5%
faster training steps).
It is built with torch's own extension builder (`torch.utils.cpp_extension`: g++ and ninja, ~30 s)
into torch's extension cache (`TORCH_EXTENSIONS_DIR`, default ~/.cache/torch_extensions), keyed by
the source, the torch version and the cache directory, so a new torch or a changed kernel builds
afresh; a cached build loads in ~0.1 s.

Where it cannot be built (no compiler, no ninja), training runs the Python loop, a little slower,
with one warning that says why. `REWARDLAB_KERNELS=0` switches the compiled kernels off.

>>> # kernels = compiled_kernels(); kernels.row_attention_forward(qkv, lengths, heads, scale) if kernels
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["compiled_kernels", "kernels_enabled"]

log = logging.getLogger("rewardlab")
SOURCES = [Path(__file__).parent / "csrc" / "row_attention.cpp"]


def kernels_enabled() -> bool:
    """False when the user switched the compiled kernels off (REWARDLAB_KERNELS=0)."""
    return os.environ.get("REWARDLAB_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def compiled_kernels() -> Any | None:
    """The compiled kernel module, built on first use; None where it is off or cannot be built."""
    if not kernels_enabled():
        return None
    import torch
    from torch.utils import cpp_extension

    root = _cache_root()
    name = _module_name(torch.__version__, root)
    build_dir = root / name
    if not (build_dir / f"{name}.so").exists():
        log.info("building rewardlab's compiled CPU attention (once per machine, ~30 s) in %s", build_dir)
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        with _ninja_on_path():
            return cpp_extension.load(name, [str(s) for s in SOURCES], build_directory=str(build_dir),
                                      extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"])
    except Exception as e:  # any build failure means: run the Python loop instead
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        log.warning("rewardlab: compiled CPU attention unavailable (%s); training uses the Python "
                    "loop, ~5%% slower (set REWARDLAB_KERNELS=0 to skip this build)", reason)
        return None


def _module_name(torch_version: str, root: Path) -> str:
    """Unique per kernel source, torch version and cache directory: a cached build is never loaded
    into another torch, and torch's in-process registry of loaded extensions (which rebuilds a name
    it meets again with another build directory) never sees one name in two places."""
    digest = hashlib.sha256(f"{torch_version}\0{root.resolve()}".encode())
    for source in SOURCES:
        digest.update(source.read_bytes())
    return f"rewardlab_kernels_{digest.hexdigest()[:12]}"


def _cache_root() -> Path:
    """torch's extension cache: TORCH_EXTENSIONS_DIR, else ~/.cache/torch_extensions."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(root) if root else Path.home() / ".cache" / "torch_extensions"


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """torch's builder calls `ninja` from PATH; the pip-installed one sits in the venv, which a
    `.venv/bin/rewardlab` run without activating the venv does not have on PATH."""
    before = os.environ.get("PATH", "")
    try:
        import ninja  # the `ninja` wheel, a rewardlab dependency

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + before
    except ImportError:
        pass  # a system ninja on PATH works too
    try:
        yield
    finally:
        os.environ["PATH"] = before
