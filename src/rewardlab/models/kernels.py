"""rewardlab's compiled CPU kernels (`csrc/`): built once per environment, loaded from a cache after that.

One kernel today: row attention with the rows spread over threads (`csrc/row_attention.cpp`, used
by `rewardlab.models.packed` on CPUs; bit-identical to the Python loop it replaces, ~5%
faster training steps).
It is built with torch's own extension builder (`torch.utils.cpp_extension`: g++ and ninja, ~30 s)
into torch's extension cache (`TORCH_EXTENSIONS_DIR`, default ~/.cache/torch_extensions), in a
directory named by everything that makes one build differ from another (`BuildEnv`: the source,
torch's version, build and install path, the compiler and its version, the flags, the Python ABI),
so two environments on one machine each keep their own build instead of rebuilding over each
other's; a cached build loads in ~0.1 s. A build runs in a scratch directory that is renamed into
place when it is complete, under a lock that a second process waits on instead of building too,
and says so on stderr ("rewardlab: building the CPU attention kernel ...").

Where it cannot be built (no compiler, no ninja), training runs the Python loop, a little slower,
with one warning that says why. `REWARDLAB_KERNELS=0` switches the compiled kernels off.

Use (the first call may build for ~30 s, so it is not run as a doctest):

    kernels = compiled_kernels()   # None where it cannot be built or is switched off
    out = kernels.row_attention_forward(qkv, lengths, heads, scale) if kernels else None
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

__all__ = ["BuildEnv", "compiled_kernels", "current_build_env", "kernels_enabled", "module_name"]

log = logging.getLogger("rewardlab")
SOURCES = [Path(__file__).parent / "csrc" / "row_attention.cpp"]
CFLAGS = ("-O3", "-fopenmp")
LDFLAGS = ("-fopenmp",)


@dataclass(frozen=True)
class BuildEnv:
    """Everything a build of the kernels depends on: two environments that differ in any field
    get two cache directories (`module_name`)."""

    sources: str  # sha256 of the kernel sources
    torch_version: str  # torch.__version__ and the commit it was built from
    torch_path: str  # where torch is installed: the headers and libraries the build links to
    compiler: str  # the resolved path of $CXX (else c++), as torch's builder picks it
    compiler_version: str  # the first line of `compiler --version` ("" where it does not run)
    flags: str  # the extra compile and link flags
    python_abi: str  # the extension-module suffix, e.g. .cpython-311-x86_64-linux-gnu.so
    root: str  # the cache directory (see module_name)


def module_name(env: BuildEnv) -> str:
    """`rewardlab_kernels_<hash of env>`: the module's name and its directory's.

    The cache root is in it too: torch's in-process registry of loaded extensions (which rebuilds
    a name it meets again with another build directory) never sees one name in two places.
    """
    digest = hashlib.sha256("\0".join(astuple(env)).encode("utf-8", "surrogatepass"))
    return f"rewardlab_kernels_{digest.hexdigest()[:16]}"


def current_build_env(root: Path) -> BuildEnv:
    """The `BuildEnv` of this process: its torch, compiler and Python, for a cache under `root`."""
    import torch

    compiler = _compiler()
    sources = hashlib.sha256()
    for source in SOURCES:
        sources.update(source.read_bytes())
    return BuildEnv(
        sources=sources.hexdigest(),
        torch_version=f"{torch.__version__} {torch.version.git_version}",
        torch_path=str(Path(torch.__file__).resolve().parent),
        compiler=compiler, compiler_version=_compiler_version(compiler),
        flags=" ".join((*CFLAGS, "|", *LDFLAGS)),
        python_abi=str(sysconfig.get_config_var("EXT_SUFFIX") or sys.implementation.cache_tag),
        root=str(root.resolve()))


def _compiler() -> str:
    """torch's builder runs $CXX, else `c++`; resolved, so a new compiler behind one name counts."""
    name = os.environ.get("CXX", "c++")
    found = shutil.which(name)
    return str(Path(found).resolve()) if found else name


@functools.cache
def _compiler_version(compiler: str) -> str:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return ""  # no such compiler: the build fails and says so
    return (done.stdout.strip().splitlines() or [""])[0]


def kernels_enabled() -> bool:
    """False when the user switched the compiled kernels off (REWARDLAB_KERNELS=0)."""
    return os.environ.get("REWARDLAB_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def compiled_kernels() -> Any | None:
    """The compiled kernel module, built on first use; None where it is off or cannot be built."""
    if not kernels_enabled():
        return None
    root = _cache_root()
    try:
        final = root / module_name(current_build_env(root))
        return _load_or_build(final, build=_build, load=_load)
    except Exception as e:  # any build failure means: run the Python loop instead
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        log.warning("rewardlab: compiled CPU attention unavailable (%s; cache %s); training uses the "
                    "Python loop, ~5%% slower (set REWARDLAB_KERNELS=0 to skip this build)",
                    reason, root)
        return None


def _load_or_build(final: Path, *, build: Callable[[str, Path], Any],
                   load: Callable[[Path], Any]) -> Any:
    """The module in `final`, built first where it is not there yet.

    `build(name, scratch)` builds (and loads) module `name` in a fresh scratch directory, which is then
    renamed to `final`: a directory named `final` is a complete build, whoever made it. Under a
    lock, so a second process waits for the first one's build and loads it.
    """
    if _built(final):
        return load(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(final.parent / f".{final.name}.lock"):
        if _built(final):  # another process built it while this one waited
            return load(final)
        if final.exists():  # not a complete build (none is renamed here unfinished): start over
            shutil.rmtree(final)
        scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            module = build(final.name, scratch)
            scratch.rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # only left after a failed build
        return module


def _built(directory: Path) -> bool:
    return (directory / f"{directory.name}.so").is_file()


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (flock: released by the OS if the holder dies mid-build)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; the scratch-and-rename build still never clobbers
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"rewardlab: waiting for another process building the CPU attention kernel "
                 f"in {path.parent} ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(name: str, scratch: Path) -> Any:
    """Compile the kernels as module `name` in `scratch` and load them."""
    from torch.utils import cpp_extension

    _say("rewardlab: building the CPU attention kernel (once, ~30 s) ...")
    start = time.monotonic()
    with _ninja_on_path():
        module = cpp_extension.load(name, [str(s) for s in SOURCES], build_directory=str(scratch),
                                    extra_cflags=list(CFLAGS), extra_ldflags=list(LDFLAGS))
    _say(f"rewardlab: CPU attention kernel built in {time.monotonic() - start:.0f} s, cached in "
         f"{scratch.parent / name}")
    return module


def _load(directory: Path) -> Any:
    """Import a finished build without torch's builder: no ninja run, ~0.1 s."""
    import torch  # noqa: F401 (the module links against torch's libraries, loaded by this import)

    name = directory.name
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.so")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {directory / f'{name}.so'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _say(line: str) -> None:
    """A progress line on stderr, shown whatever the log level (a build takes half a minute)."""
    print(line, file=sys.stderr, flush=True)


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
