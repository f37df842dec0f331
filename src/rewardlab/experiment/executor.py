"""Carrying out independent jobs (the runs of a plan): here, in N local processes, or as Ray tasks.

`execute(job, tasks, shared=..., execution=...)` calls `job(task, shared)` for every task and
yields each outcome as it finishes, in finishing order. `job` is a module-level function (it is
pickled by name) and `shared` (the test pairs) goes to each worker once, not with every task.

- `Execution()` (workers 1, no Ray): one after another in this process; an error propagates, as
  it always did.
- `workers=N`: N spawned processes, started once and fed one task at a time; each sets its torch
  threads to its share of the cores and sees only its own GPUs (`CUDA_VISIBLE_DEVICES`: worker i
  the i-th `gpus_per_run` of them), so no two runs share a GPU; with `gpus_per_run` > 1 (workers 1
  too) the job launches each run on the worker's GPUs as one multi-process job. A worker that
  dies (SIGKILL, out of memory) is replaced and its task tried again.
- `ray="local" | ADDRESS`: each task a Ray task with `num_cpus`/`num_gpus`; Ray retries a task
  whose worker died or raised (`max_retries`, `retry_exceptions`). `local` starts a cluster on this
  machine with `workers` CPUs and stops it at the end.

A failed task is tried again up to `retries` times, then yielded as failed while the others go on;
a `RewardlabError` (the input is at fault: trying again gives the same answer) is not tried again.
Ctrl-C stops the workers (or cancels the Ray tasks) and re-raises: what was yielded is kept.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rewardlab.errors import RewardlabError
from rewardlab.experiment.ray_tasks import LOCAL as RAY_LOCAL
from rewardlab.experiment.ray_tasks import on_ray

if TYPE_CHECKING:
    from rewardlab.experiment.compare_config import CompareConfig

__all__ = ["Execution", "Outcome", "execute", "check_execution", "thread_share_for", "one_line", "RAY_LOCAL"]

log = logging.getLogger("rewardlab")
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Execution:
    """How the jobs run: `CompareConfig`'s workers, ray, gpus_per_run and retries."""

    workers: int = 1
    ray: str | None = None  # "local" or a Ray address
    gpus_per_run: int | None = None  # None: 1 where CUDA GPUs are, 0 elsewhere
    retries: int = 1

    @classmethod
    def of(cls, config: CompareConfig) -> Execution:
        """The execution a compare config asks for."""
        return cls(workers=config.workers, ray=config.ray, gpus_per_run=config.gpus_per_run,
                   retries=config.retries)

    @property
    def in_process(self) -> bool:
        """One after another in this process (today's compare). Not for runs on several GPUs: each
        is a job a worker launches on its GPUs (experiment/run_job.py), retried as any task."""
        return self.workers == 1 and self.ray is None and (self.gpus_per_run or 0) <= 1

    @property
    def remote(self) -> bool:
        """Workers may run on other machines: a Ray address other than `local`."""
        return self.ray is not None and self.ray != RAY_LOCAL


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One finished task: the job's result, or why it failed after `attempts` tries."""

    task: T
    result: Any  # the job's return value; None when it failed
    error: str | None  # one line; None when it succeeded
    attempts: int


def check_execution(execution: Execution, store_url: str) -> None:
    """Refuse, before any work, what cannot run as asked: one line naming the option.

    >>> try:
    ...     check_execution(Execution(ray="ray://head:10001"), "sqlite:///rewardlab.db")
    ... except RewardlabError as e:
    ...     print(str(e)[:85])
    --ray ray://head:10001 with the SQLite store sqlite:///rewardlab.db: workers on other
    """
    from rewardlab.store.engine import mask_url

    sqlite = store_url.startswith("sqlite")
    if execution.remote and sqlite:
        raise RewardlabError(
            f"--ray {execution.ray} with the SQLite store {mask_url(store_url)}: workers on other "
            "nodes write their runs to the store themselves and cannot reach this machine's file; "
            "use a PostgreSQL store (--db postgresql+psycopg://USER@HOST/DB) or --ray local")
    if execution.ray is not None and sqlite and _in_memory(store_url):
        raise RewardlabError(f"--ray with the in-memory store {store_url}: Ray workers write "
                             "their runs to the store themselves; use a file or PostgreSQL store")
    if execution.ray is not None:
        _check_ray_installed()
    if not execution.in_process and not execution.remote:
        _local_gpus(execution)  # more GPUs asked for than this machine has


def _in_memory(url: str) -> bool:
    return url in ("sqlite://", "sqlite:///:memory:") or ":memory:" in url


def _check_ray_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise RewardlabError("--ray needs Ray, an optional extra: pip install 'rewardlab[ray]'")


def thread_share_for(workers: int) -> int:
    """Torch threads for each of `workers` processes on this machine: the cores split evenly."""
    from rewardlab.training.runtime import thread_share

    return thread_share(workers)


def _visible_gpus() -> list[str]:
    """The CUDA devices this process may hand out, as CUDA_VISIBLE_DEVICES names them."""
    import torch

    count = torch.cuda.device_count()
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [d.strip() for d in given.split(",") if d.strip()] if given else []
    return names[:count] if names else [str(i) for i in range(count)]


def _local_gpus(execution: Execution) -> list[str | None]:
    """Per local worker, the CUDA_VISIBLE_DEVICES it gets (None: leave it as inherited).

    GPUs here and `gpus_per_run` not 0: worker i gets devices [i·G, (i+1)·G), never shared; 0
    hides them all (a CPU run). No GPU here: nothing to assign."""
    gpus = _visible_gpus()
    per_run = execution.gpus_per_run if execution.gpus_per_run is not None else int(bool(gpus))
    if per_run == 0:
        return ["" if gpus else None] * execution.workers
    needed = per_run * execution.workers
    if needed > len(gpus):
        raise RewardlabError(f"--workers {execution.workers} × --gpus-per-run {per_run} needs "
                             f"{needed} GPUs; this machine shows {len(gpus)}: lower --workers "
                             "or --gpus-per-run (0 for CPU runs)")
    return [",".join(gpus[i * per_run:(i + 1) * per_run]) for i in range(execution.workers)]


def execute(job: Callable[[T, Any], R], tasks: Sequence[T], *, shared: Any,
            execution: Execution) -> Iterator[Outcome[T]]:
    """Every task's outcome, as each finishes (see the module's docstring for the executors)."""
    if not tasks:
        return iter(())
    if execution.ray is not None:
        return _on_ray(job, tasks, shared, execution)
    if execution.in_process:
        return (Outcome(t, job(t, shared), None, 1) for t in tasks)
    return _in_processes(job, tasks, shared, execution)


def _on_ray(job: Callable[[T, Any], R], tasks: Sequence[T], shared: Any, execution: Execution
            ) -> Iterator[Outcome[T]]:
    assert execution.ray is not None
    local = execution.ray == RAY_LOCAL  # a remote task gets 1 CPU, so 1 thread
    for task, kind, value in on_ray(job, tasks, shared=shared, address=execution.ray,
                                    cpus=execution.workers, gpus_per_run=execution.gpus_per_run,
                                    retries=execution.retries,
                                    threads=thread_share_for(execution.workers) if local else 1):
        if kind == "ok":
            yield Outcome(task, value, None, 1)
        elif kind == "refused":
            yield Outcome(task, None, str(value), 1)
        else:  # Ray tried it 1 + retries times
            yield Outcome(task, None, one_line(value), execution.retries + 1)


# ---- local processes ----------------------------------------------------------------------------

def _worker_main(conn: Connection, job: Callable[[Any, Any], Any], shared: Any, threads: int,
                 devices: str | None) -> None:
    """A worker process: its devices set before CUDA starts (torch reads CUDA_VISIBLE_DEVICES
    then) and its threads, then one task at a time until the parent sends None (or goes away)."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    os.environ["OMP_NUM_THREADS"] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    import torch

    torch.set_num_threads(threads)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        conn.send(_call(job, task, shared))


def _call(job: Callable[[Any, Any], Any], task: Any, shared: Any) -> tuple[str, Any]:
    """("ok", result) | ("refused", why): a RewardlabError is the input's fault, not tried again |
    ("error", why): anything else, tried again."""
    try:
        return "ok", job(task, shared)
    except RewardlabError as e:
        return "refused", str(e)
    except Exception as e:  # noqa: BLE001 - reported for this task; the other tasks go on
        return "error", one_line(e)


def one_line(e: BaseException) -> str:
    """An exception as one line of a report: its type and the first line of its message."""
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


@dataclass
class _Slot:
    """One local worker: its process and pipe (None until started), the task it holds."""

    devices: str | None
    process: Any = None  # multiprocessing's SpawnProcess
    conn: Connection | None = None
    task: Any = None
    attempt: int = 0

    @property
    def busy(self) -> bool:
        return self.conn is not None and self.attempt > 0


def _start(slot: _Slot, job: Callable[[Any, Any], Any], shared: Any, threads: int) -> None:
    ctx = mp.get_context("spawn")  # never fork a parent that holds torch threads and a store
    parent, child = ctx.Pipe()
    slot.process = ctx.Process(target=_worker_main, args=(child, job, shared, threads,
                                                          slot.devices), daemon=True)
    slot.process.start()
    child.close()
    slot.conn = parent


def _stop(slot: _Slot) -> None:
    if slot.process is None:
        return
    if slot.process.is_alive() and slot.conn is not None and not slot.busy:
        try:
            slot.conn.send(None)
        except OSError:
            pass
        slot.process.join(timeout=10)
    if slot.process.is_alive():  # busy (Ctrl-C, an error elsewhere) or not leaving
        slot.process.terminate()
        slot.process.join()
    if slot.conn is not None:
        slot.conn.close()
    slot.process, slot.conn, slot.attempt = None, None, 0


def _death(slot: _Slot) -> str:
    code = slot.process.exitcode if slot.process is not None else None
    if code is not None and code < 0:
        return f"its worker process was killed ({signal.Signals(-code).name})"
    return f"its worker process exited (status {code})"


def _in_processes(job: Callable[[T, Any], R], tasks: Sequence[T], shared: Any,
                  execution: Execution) -> Iterator[Outcome[T]]:
    n = min(execution.workers, len(tasks))
    slots = [_Slot(devices) for devices in _local_gpus(execution)[:n]]
    threads = thread_share_for(n)
    todo: deque[tuple[T, int]] = deque((t, 1) for t in tasks)
    try:
        while todo or any(s.busy for s in slots):
            for slot in slots:
                if todo and not slot.busy:
                    if slot.process is None:
                        _start(slot, job, shared, threads)
                    slot.task, slot.attempt = todo.popleft()
                    _hand_over(slot)
            yield from _collect(slots, todo, execution.retries)
    finally:  # done, Ctrl-C or an error in the caller: no worker outlives the experiment
        for slot in slots:
            _stop(slot)


def _hand_over(slot: _Slot) -> None:
    """Send the slot's task to its worker. A worker killed before the task reached it (its pipe is
    broken) is not an error of the experiment: `_collect` finds it dead and tries the task again."""
    assert slot.conn is not None
    try:
        slot.conn.send(slot.task)
    except OSError:  # BrokenPipeError, ConnectionResetError: the worker is gone
        pass


def _collect(slots: list[_Slot], todo: deque[tuple[Any, int]], retries: int
             ) -> Iterator[Outcome[Any]]:
    """Wait for a busy worker to answer or die; yield the outcomes that are final."""
    busy = [s for s in slots if s.busy]
    ready = set(wait([s.conn for s in busy if s.conn is not None]
                     + [s.process.sentinel for s in busy]))
    for slot in busy:
        assert slot.conn is not None
        if slot.conn not in ready and slot.process.sentinel not in ready:
            continue
        task, attempt = slot.task, slot.attempt
        try:  # a worker that answered and then died still answered
            kind, value = slot.conn.recv() if slot.conn.poll() else ("died", None)
        except (EOFError, OSError):
            kind, value = "died", None
        if kind == "died":
            slot.process.join()
            value = _death(slot)
            _stop(slot)  # started again for its next task
        slot.attempt = 0
        if kind == "ok":
            yield Outcome(task, value, None, attempt)
        elif kind == "error" or kind == "died":
            if attempt <= retries:
                log.warning("%s failed (%s): trying again (%d of %d)", _name(task), value,
                            attempt, retries)
                todo.appendleft((task, attempt + 1))
            else:
                yield Outcome(task, None, str(value), attempt)
        else:
            yield Outcome(task, None, str(value), attempt)


def _name(task: Any) -> str:
    """A task as log lines name it (its `label` when it has one)."""
    return str(getattr(task, "label", task))
