"""Jobs as Ray tasks (`compare --ray local|ADDRESS`, through `executor.execute`): Ray places and
retries them.

Each task asks for `num_cpus=1` and `num_gpus` (the run's `--gpus-per-run`; 1 where the cluster has
GPUs); Ray starts it on a node with them free and sets its CUDA_VISIBLE_DEVICES, so no two runs
share a GPU. A task of G > 1 GPUs launches its run there as one accelerate job of G processes on
exactly those GPUs (`experiment/run_job.py`). A task whose worker dies (a preempted node,
SIGKILL) or raises is started again up to `retries` times by Ray itself (`max_retries`,
`retry_exceptions`); a `RewardlabError` comes back as an answer instead, since trying again gives
the same one. `local` starts a cluster here with
`cpus` CPUs (no dashboard; $RAY_TMPDIR for its files) and shuts it down at the end; an address
joins a running cluster, whose nodes need rewardlab installed (the job is pickled by name). Ray is
imported only inside these functions, when asked for: it is an optional extra (`rewardlab[ray]`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from rewardlab.errors import RewardlabError

__all__ = ["on_ray", "LOCAL"]

T = TypeVar("T")
LOCAL = "local"  # `--ray local`: a cluster started here, for this experiment only


def _task(job: Callable[[Any, Any], Any], task: Any, shared: Any, threads: int
          ) -> tuple[str, Any]:
    """What runs on a Ray worker: the job with this task's threads. ("ok", result), or
    ("refused", why) for a RewardlabError; any other exception raises, and Ray tries again.

    The GPUs Ray assigned (`ray.get_gpu_ids()`) are this task's CUDA_VISIBLE_DEVICES: Ray sets
    them too, said here because a run on several GPUs launches its job with them (run_job.py)."""
    import ray
    import torch

    gpus = ray.get_gpu_ids()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    torch.set_num_threads(threads)
    try:
        return "ok", job(task, shared)
    except RewardlabError as e:
        return "refused", str(e)


def _init(address: str, cpus: int) -> bool:
    """Connect to (or, for `local`, start) the cluster; True when this call started it."""
    import ray

    if ray.is_initialized():  # the caller's own connection (Python API): use it, leave it
        return False
    if address == LOCAL:  # Ray finds this machine's GPUs itself
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    return True


def _gpus(gpus_per_run: int | None) -> int:
    """The GPUs of each task: as asked, else 1 where the cluster has GPUs."""
    import ray

    if gpus_per_run is not None:
        return gpus_per_run
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return int(resources.get("GPU", 0) > 0)


def on_ray(job: Callable[[T, Any], Any], tasks: Sequence[T], *, shared: Any, address: str,
           cpus: int, gpus_per_run: int | None, retries: int, threads: int
           ) -> Iterator[tuple[T, str, Any]]:
    """(task, "ok", result) | (task, "refused", why) | (task, "failed", the exception of its last
    try), as each task ends. Ctrl-C (or the caller stopping) cancels the tasks not finished."""
    import ray

    started = _init(address, cpus)
    try:
        remote = ray.remote(_task).options(num_cpus=1, num_gpus=_gpus(gpus_per_run),
                                           max_retries=retries, retry_exceptions=True)
        shared_ref = ray.put(shared)  # once, not with every task
        pending = {remote.remote(job, t, shared_ref, threads): t for t in tasks}
        yield from _gather(pending)
    finally:
        if started:
            ray.shutdown()


def _gather(pending: dict[Any, T]) -> Iterator[tuple[T, str, Any]]:
    import ray

    try:
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ref)
            try:
                kind, value = ray.get(ref)
            except ray.exceptions.RayError as e:  # raised, or its worker died, on every try
                cause = getattr(e, "cause", None)  # the job's own exception, where Ray wraps one
                yield task, "failed", cause if isinstance(cause, BaseException) else e
                continue
            yield task, kind, value
    except BaseException:  # finished runs are stored already; the others stop here
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
