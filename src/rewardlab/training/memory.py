"""A run's memory: resident size now and at its peak, and what a run leaves behind given back.

An experiment trains its runs one after another in one process (`rewardlab compare`), so whatever a
run leaves allocated is still there when the next one starts. Measured (docs/benchmarks.md, "Memory"):
the model, its optimizer state and the packed wrapper are freed by reference count when a run's
objects go (nothing global keeps them). What stays is (1) glibc's heap: a MiniLM run ends with
~1 GB of freed pages still mapped, which glibc keeps until asked to trim them (`release_memory`
gives them back: 1.5 GB → 0.46 GB after a run), and (2) on CPUs where bf16 matmuls run through
oneDNN, its per-shape primitive cache (~0.65 MB a shape, up to the cache's capacity: `ONEDNN_CACHE`).
What climbs is the peak: glibc serves each step's differently-sized tensors from a heap whose holes
the next sizes do not fit. So the `rewardlab` command runs on jemalloc where it is installed
(`exec_with_jemalloc`; `make run`'s six runs: 1,765–1,800 MB instead of 2,595 → 3,521 MB).

`measured_run()` wraps one run: it resets the peak at the start and reports the peak and the size
after `release_memory()` at the end. On Linux resetting the peak (VmHWM) also resets what
`getrusage(...).ru_maxrss` reports for this process.

>>> with measured_run() as usage:
...     block = bytearray(64 * 2**20)  # 64 MB, written (zeroed) page by page
...     del block
>>> round(usage.peak_mb - usage.start_mb) >= 64
True
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import resource
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ONEDNN_CACHE", "ALLOCATOR_ENV", "JEMALLOC_CONF", "RunMemory", "rss_mb", "peak_rss_mb",
           "reset_peak", "release_memory", "measured_run", "released_after", "bound_onednn_cache",
           "allocator", "jemalloc_library", "exec_with_jemalloc"]

# oneDNN (PyTorch's CPU backend for bf16 matmuls) JIT-compiles a primitive per matrix shape (~0.6 ms)
# and keeps each (~0.65 MB) in a cache of ONEDNN_PRIMITIVE_CACHE_CAPACITY entries (1,024 by default),
# read once, when oneDNN makes its first primitive. Packed training meets new shapes every step, so a
# large cache grows through every run of an experiment (4,096: up to ~2.6 GB). The capacity below was
# chosen by an interleaved A/B of whole runs (docs/benchmarks.md, "Memory"): the same pairs/s within
# noise, a bounded cache. A value the user set wins.
ONEDNN_CACHE = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")

# The heap allocator a `rewardlab` process runs on: "jemalloc" (the default, where the library is
# installed: `exec_with_jemalloc`) or "system" (glibc's malloc, as Python starts).
ALLOCATOR_ENV = "REWARDLAB_ALLOCATOR"
# jemalloc's settings unless the user gave MALLOC_CONF: freed pages stay with the process for
# the next step's tensors instead of going back to the kernel after 10 s (its default), so a
# step does not fault them in again; `release_memory` gives them back after each run. Measured
# (160-pair MiniLM run, 3 interleaved reps, quiet): steps 9.7/8.9/9.3 s vs glibc's 10.5/8.4/9.9,
# page faults 291 K vs 454 K; with jemalloc's default decay 10.5/10.3/13.4 s and 947 K-1,016 K.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"

_MB = 2**20
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


@dataclass
class RunMemory:
    """Resident memory of one run, in MB (2^20 bytes).

    Parameters
    ----------
    start_mb : float
        RSS when the run started.
    peak_mb : float
        Peak RSS during the run. On Linux the kernel's high-water mark (VmHWM), reset at the run's
        start (`per_run_peak` True); elsewhere the process's peak so far (`ru_maxrss`), which a
        later run can only equal or exceed (`per_run_peak` False).
    after_mb : float
        RSS after the run, once `release_memory()` gave back what it left.
    per_run_peak : bool
        Whether `peak_mb` is this run's own peak (see `peak_mb`).
    """

    start_mb: float = 0.0
    peak_mb: float = 0.0
    after_mb: float = 0.0
    per_run_peak: bool = False


def _status_mb(field: str) -> float | None:
    """A `VmRSS`/`VmHWM` line of /proc/self/status in MB; None where there is no /proc."""
    try:
        with open(_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """This process's resident set size now, in MB."""
    now = _status_mb("VmRSS")
    if now is not None:
        return now
    import psutil  # macOS, Windows: no /proc

    return float(psutil.Process().memory_info().rss) / _MB


def peak_rss_mb() -> float:
    """Peak RSS in MB: since the last `reset_peak()` on Linux, else since the process started."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KiB


def reset_peak() -> bool:
    """Start a new peak at the current RSS (Linux: "5" into /proc/self/clear_refs resets VmHWM);
    False where the peak cannot be reset, so `peak_rss_mb()` keeps the process's whole peak."""
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _jemalloc_mallctl() -> Any | None:
    """jemalloc's `mallctl` where jemalloc is this process's allocator (preloaded), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallctl = ctypes.CDLL(None).mallctl  # the process's global symbols: preloaded libraries
    except (OSError, AttributeError):
        return None
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                        ctypes.c_size_t]
    mallctl.restype = ctypes.c_int
    return mallctl


def allocator() -> str:
    """The heap allocator of this process: "jemalloc" (preloaded) or "system" (the C library's).

    >>> allocator() in ("jemalloc", "system")
    True
    """
    return "jemalloc" if _jemalloc_mallctl() is not None else "system"


def _jemalloc_purge() -> bool:
    """Give jemalloc's unused dirty pages of every arena back to the kernel now (it would after
    its decay time, 10 s by default); False where jemalloc is not the allocator."""
    mallctl = _jemalloc_mallctl()
    if mallctl is None:
        return False
    # MALLCTL_ARENAS_ALL (4096) addresses every arena at once
    return int(mallctl(b"arena.4096.purge", None, None, None, 0)) == 0


def _malloc_trim() -> None:
    """Give the allocator's free heap pages back to the kernel (its arenas keep them mapped
    otherwise): jemalloc's purge where it runs, glibc's `malloc_trim` else."""
    if not sys.platform.startswith("linux") or _jemalloc_purge():
        return
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others: no malloc_trim
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def release_memory() -> None:
    """Free what the last run left: unreachable cycles (autograd graphs, modules) and the heap's
    free pages. Call it after the run's objects are dropped; it keeps nothing a caller still holds.

    A full collection walks every object the process holds: ~0.55 s once torch and transformers
    are imported, paid per run. Inside `released_after()` it walks only what the block made."""
    gc.collect()
    _malloc_trim()


_scopes = 0  # open `released_after()` blocks in this process; the outermost one freezes


@contextlib.contextmanager
def released_after() -> Iterator[None]:
    """Free what the block made once it ends: `release_memory()`, walking only the block's objects.

    The objects alive at the start are set aside for the block (`gc.freeze()`), so the collection
    at its end traverses what the block created (a run's modules, tensors, autograd graphs)
    instead of the ~1M objects of the imported libraries; they go back to the collector after it
    (`gc.unfreeze()`), so nothing is kept from later collections. Blocks nest: only the outermost
    freezes. Measured (`bow` compare of 10 runs): 35 full collections took 19 s of its 54 s.

    >>> import gc, weakref
    >>> class Node: ...
    >>> with released_after():
    ...     node = Node()
    ...     node.me = node  # a cycle: reference counting alone never frees it
    ...     alive = weakref.ref(node)
    ...     del node
    >>> alive() is None, gc.get_freeze_count()  # collected at the end; nothing left set aside
    (True, 0)
    """
    global _scopes
    outermost = _scopes == 0
    if outermost:
        gc.freeze()
    _scopes += 1
    try:
        yield
    finally:
        _scopes -= 1
        release_memory()  # walks only the block's objects while the older ones are set aside
        if outermost:
            gc.unfreeze()


def bound_onednn_cache() -> None:
    """Bound oneDNN's primitive cache (`ONEDNN_CACHE`) unless the user set it; it takes effect when
    oneDNN makes its first primitive, so call it before any bf16 work (train and the CLI do)."""
    os.environ.setdefault(*ONEDNN_CACHE)


@contextlib.contextmanager
def measured_run() -> Iterator[RunMemory]:
    """Measure one run: its start, its peak (reset here), and the RSS once what the run made is
    freed (`released_after()`); the objects the run made must be dropped inside the block."""
    _malloc_trim()  # the free pages an earlier block or the caller left count in no run
    usage = RunMemory(start_mb=rss_mb(), per_run_peak=reset_peak())
    try:
        with released_after():
            yield usage
    finally:
        usage.peak_mb = peak_rss_mb()  # a high-water mark: what the collection freed stays in it
        usage.after_mb = rss_mb()


def jemalloc_library() -> str | None:
    """jemalloc's shared library as the dynamic linker finds it (`libjemalloc.so.2`), or None
    where it is not installed (Debian/Ubuntu: `apt install libjemalloc2`; conda: `jemalloc`)."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.util.find_library("jemalloc")


def _launched_as_rewardlab(argv0: str) -> bool:
    """Whether this process is the `rewardlab` command (console script or `python -m rewardlab`),
    the only case where running it again with other settings runs the same thing."""
    path = Path(argv0)
    return path.name == "rewardlab" or (path.name == "__main__.py" and path.parent.name == "rewardlab")


def exec_with_jemalloc() -> None:
    """Run this `rewardlab` command again, at once and in this same process (same pid, stdin,
    stdout, signals), with jemalloc preloaded as its heap allocator; return without doing anything
    where it is already loaded, not installed, not Linux, or `REWARDLAB_ALLOCATOR=system`.

    Why: glibc's malloc serves a training step's tensors, a new size every step (packed token
    counts), from a heap whose holes the next sizes do not fit, so the peak climbs step over step
    and run over run (an experiment: +36% by its sixth run; docs/benchmarks.md, "Memory").
    jemalloc's size classes reuse those holes: the same peaks stay flat, at today's speed. Only a
    process that starts with it can use it (`LD_PRELOAD`), as PyTorch's own CPU launcher does
    (`torch.backends.xeon.run_cpu --enable-jemalloc`). Child processes (workers, launched
    jobs) inherit it through the environment.
    """
    if os.environ.get(ALLOCATOR_ENV, "jemalloc") == "system" or allocator() == "jemalloc":
        return
    library = jemalloc_library()
    # a preload of the user's own (another allocator, or jemalloc that failed to load) is theirs
    # to keep, and it stops a second exec: never a loop
    if library is None or os.environ.get("LD_PRELOAD") or not _launched_as_rewardlab(sys.argv[0]):
        return
    env = {**os.environ, "LD_PRELOAD": library}
    if JEMALLOC_CONF:
        env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)
