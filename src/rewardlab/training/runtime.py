"""Where and how fast a training run executes: processes, device, precision, kernels, threads.

Each choice was measured (torch 2.13 CPU, MiniLM, batch 8 pairs, length <= 256) on the 2-core
machines this project runs on: an AMD EPYC with avx512_bf16 (native bf16) and one with AVX2 only
(fp32; there SDPA beats eager attention, 5.2 vs 4.0 pairs/s). Each says so where it is made, so
another machine can revisit it. None changes what is learned except `dropout` (off by default, as in TRL).

Processes: one run may be N processes (`torchrun`, `accelerate launch`, mpirun), each training on
its own share of every step's pairs. The launcher's environment decides (RANK/WORLD_SIZE/LOCAL_RANK,
ACCELERATE_*); accelerate's own config decides how (DDP, FSDP, DeepSpeed). See docs/distributed.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, get_cpu_distributed_information, parse_flag_from_env

from rewardlab.errors import ModelError
from rewardlab.models.names import BOW

__all__ = ["resolve_precision", "make_accelerator", "disable_dropout", "training_context",
           "deterministic", "threads_for", "paused_gc", "on_cpu", "process_rank", "shards_model",
           "check_launch", "fit_deepspeed", "micro_batch", "summed", "split_cpu_launch",
           "launch_cpu_processes", "mark_stage", "thread_share", "rendezvous_timeout",
           "STAGES_ENV", "RENDEZVOUS_ENV"]

log = logging.getLogger("rewardlab")
# the environment variables a launcher sets in each process it starts (torchrun, accelerate, MPI)
_LAUNCHED = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
             "MV2_COMM_WORLD_SIZE")
# REWARDLAB_STAGES=1: every process of a run says on stderr each stage it reaches (a hang stopped
# after the last one printed); REWARDLAB_RENDEZVOUS_TIMEOUT: seconds to wait for all processes to
# join (torchrun's own join timeout, 600 s, by default), apart from the collectives' timeout
STAGES_ENV = "REWARDLAB_STAGES"
RENDEZVOUS_ENV = "REWARDLAB_RENDEZVOUS_TIMEOUT"


def mark_stage(stage: str) -> None:
    """One line on stderr, `rewardlab stage: rank R: STAGE`, when REWARDLAB_STAGES=1.

    A run of N processes that hangs waits in silence (each process for the others); with the
    stages on, the last line each process printed says where it stopped.
    """
    if parse_flag_from_env(STAGES_ENV):  # one write, line and newline: N processes share stderr
        sys.stderr.write(f"rewardlab stage: rank {process_rank()}: {stage}\n")
        sys.stderr.flush()


def thread_share(processes: int) -> int:
    """Intra-op threads for each of `processes` processes of one run on this machine: the cores
    split between them (at least 1), so N processes × threads never oversubscribe the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, processes))


def rendezvous_timeout() -> datetime.timedelta:
    """How long a process waits for the others to join the run (REWARDLAB_RENDEZVOUS_TIMEOUT)."""
    raw = os.environ.get(RENDEZVOUS_ENV, "600")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 1e7:  # NaN fails this too
        raise ModelError(f"{RENDEZVOUS_ENV}={raw!r}: expected a number of seconds > 0")
    return datetime.timedelta(seconds=seconds)


def resolve_precision(precision: str, *, model: str, device: torch.device,
                      mode: str = "train") -> str:
    """'auto' → 'bf16' where autocast is faster, else 'fp32'; an explicit precision as given.

    On a CPU, `auto` is measured on this machine for backbone `model` (a name, path or hub id) in
    `mode` ('train': forward + backward, 'infer': forward only), once, then cached
    (rewardlab.training.precision): native bf16 measured 1.5-2x faster on an AMD avx512_bf16 CPU
    and slower than fp32 on an Intel AMX one.
    """
    if precision != "auto":
        return precision
    if model == BOW:
        return "fp32"  # a few small matmuls: casting costs more than bf16 saves
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        from rewardlab.training.precision import auto_cpu_precision

        return auto_cpu_precision(model, mode=mode)
    return "fp32"


def on_cpu() -> bool:
    """Train on the CPU: asked for (`accelerate launch --cpu`, ACCELERATE_USE_CPU) or no GPU here.

    accelerate joins a launcher's processes into one run only on the device it is told: with its
    default `cpu=False` on a machine without a GPU it ignores torchrun's WORLD_SIZE, and each
    process trains alone (the defect of issue 18). On a CPU the processes talk over gloo.
    """
    return parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.accelerator.is_available()


def process_rank() -> int:
    """This process's rank in its launch (0 without a launcher), read from the launcher's
    environment as accelerate reads it, so it is known before any process group exists."""
    return int(get_cpu_distributed_information().rank)


def _process_state() -> PartialState:
    """accelerate's per-process state for this launch (the process group joined once)."""
    launch = get_cpu_distributed_information()
    if launch.world_size > 1 and PartialState._shared_state != {} and PartialState().num_processes == 1:
        # built before the launch was seen (a bare `PartialState()` on a CPU sees one process):
        # nothing distributed was set up then, so it can be rebuilt for the launch
        AcceleratorState._reset_state(reset_partial_state=True)
    if launch.world_size <= 1 or PartialState._shared_state != {}:
        return PartialState(cpu=on_cpu())
    return _join(launch.world_size, launch.local_world_size)


def _join(world: int, local: int) -> PartialState:
    """Join the run's N processes (the rendezvous), each with its share of this machine's cores.

    Threads first: a process that inherits OMP_NUM_THREADS=2 from a 2-core machine runs 2 × 2
    threads on 2 cores with its partner, and every step stalls on threads waiting for a core. The
    rendezvous has its own timeout: a process whose partners never come fails naming it, instead of
    waiting out the collectives' (30 min), which stay as they were for the run itself.
    """
    torch.set_num_threads(min(torch.get_num_threads(), thread_share(local)))
    address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    timeout = rendezvous_timeout()
    cpu = on_cpu()
    mark_stage(f"rendezvous: joining {world} processes at {address} "
               f"(timeout {timeout.total_seconds():g} s)")
    try:
        state = PartialState(cpu=cpu, timeout=timeout) if cpu else PartialState(cpu=cpu)
    except (RuntimeError, ValueError) as e:  # torch's DistStoreError is a RuntimeError
        AcceleratorState._reset_state(reset_partial_state=True)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ModelError(f"rank {process_rank()}: the rendezvous of {world} processes at {address} "
                         f"failed ({RENDEZVOUS_ENV}={timeout.total_seconds():g} s): {first}") from e
    if cpu and torch.distributed.is_initialized():  # gloo: collectives get torch's default back
        torch.distributed.distributed_c10d._set_pg_timeout(
            torch.distributed.distributed_c10d.default_pg_timeout)
    mark_stage(f"rendezvous: joined as rank {state.process_index} of {state.num_processes}, "
               f"{torch.get_num_threads()} thread(s)")
    return state


def make_accelerator(precision: str, *, model: str) -> tuple[Accelerator, str]:
    """An Accelerator for this run and the resolved precision ('fp32' | 'bf16').

    Everything else comes from the launch: processes, and DDP / FSDP / DeepSpeed from accelerate's
    config (`accelerate launch --config_file`), which reaches the processes as ACCELERATE_* variables.
    """
    precision = resolve_precision(precision, model=model, device=_process_state().device)
    # AcceleratorState is a process-wide singleton that refuses a second mixed-precision setting;
    # each run owns its precision, so start clean (as transformers' TrainingArguments does).
    AcceleratorState._reset_state()
    try:
        accelerator = Accelerator(cpu=on_cpu(),
                                  mixed_precision="bf16" if precision == "bf16" else "no")
    except ValueError as e:
        raise ModelError(f"precision {precision} is not available here ({e}); use --precision fp32"
                         ) from e
    for name, kind in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if parse_flag_from_env(name) and not shards_model(accelerator):  # accelerate says nothing
            log.warning("accelerate runs %s on GPUs only: on this %s nothing is sharded, every "
                        "process holds the whole model (DDP)", kind, accelerator.device.type)
    return accelerator, precision


def shards_model(accelerator: Accelerator) -> bool:
    """FSDP or DeepSpeed: the model is held (or may be held) in shards across processes, so it is
    gathered with `get_state_dict` to be saved, and only its own forward may run it."""
    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def check_launch(accelerator: Accelerator, *, resume: bool, save_steps: int, max_steps: int,
                 lora_r: int, has_output: bool) -> None:
    """Refuse, before any work, what a sharded run (FSDP, DeepSpeed) cannot do yet."""
    if not shards_model(accelerator):
        return
    kind = "FSDP" if accelerator.distributed_type == DistributedType.FSDP else "DeepSpeed"
    if not has_output:
        raise ModelError(f"a {kind} run needs an output directory: the gathered model is written "
                         "there and read back by every process")
    if resume or save_steps or max_steps:
        # their optimizer and sharded weights load through pickle (torch.distributed.checkpoint,
        # DeepSpeed's engine), which rewardlab's resume never does
        raise ModelError(f"resumable checkpoints (--resume, --save-steps, --max-steps) are not "
                         f"supported under {kind}; run to the end, or train with DDP")
    if lora_r:
        raise ModelError(f"--lora-r is not supported under {kind} yet (the adapter is merged from "
                         "the whole model); a LoRA run fits one GPU per process: use DDP "
                         "(accelerate launch --multi_gpu)")
    plugin = accelerator.state.deepspeed_plugin
    zero = plugin.deepspeed_config.get("zero_optimization", {}) if plugin is not None else {}
    if zero.get("stage") == 3 and zero.get("stage3_gather_16bit_weights_on_model_save") is not True:
        # else accelerate cannot gather the weights at the end, after the whole run
        raise ModelError("DeepSpeed ZeRO-3 can save the trained model only with "
                         "zero3_save_16bit_model: true in the accelerate config "
                         "(stage3_gather_16bit_weights_on_model_save in a DeepSpeed config file)")


def fit_deepspeed(plugin: Any, *, batch_size: int, grad_accum: int, max_grad_norm: float) -> None:
    """Fill a DeepSpeed config's "auto" values from the TrainConfig and refuse a conflicting one.

    accelerate takes the micro-batch size from a DataLoader, and this loop has none (batches are
    planned by length); gradient accumulation and clipping must be the run's own, as saved with it.
    """
    if plugin is None:
        return
    config = plugin.deepspeed_config
    for key, value, flag in (("train_micro_batch_size_per_gpu", batch_size, "--batch-size"),
                             ("gradient_accumulation_steps", grad_accum, "--grad-accum"),
                             ("gradient_clipping", max_grad_norm, "--max-grad-norm")):
        given = config.get(key, "auto")
        if given == "auto":
            config[key] = value
        elif float(given) != float(value):
            raise ModelError(f"the DeepSpeed config sets {key}={given} but this run has {flag} "
                             f"{value}: set it to \"auto\" there, or give {flag} {given}")


@contextlib.contextmanager
def micro_batch(accelerator: Accelerator, model: Any, *, last: bool) -> Iterator[None]:
    """One micro-batch of an optimizer step: gradients are exchanged between processes only on
    the step's last one (DDP/FSDP `no_sync` before it), where DeepSpeed's engine also steps."""
    # DeepSpeed reads accelerate's sync flag in `backward` (no public setter; `accumulate` would
    # count micro-batches itself and lose count at an epoch's shorter last step)
    accelerator.gradient_state._set_sync_gradients(last)
    try:
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            yield
    finally:
        accelerator.gradient_state._set_sync_gradients(True)


def summed(accelerator: Accelerator, values: Sequence[float]) -> list[float]:
    """Each value summed over the processes (one all-reduce); as given on one process."""
    if accelerator.num_processes == 1:
        return [float(v) for v in values]
    tensor = torch.tensor(list(values), dtype=torch.float64, device=accelerator.device)
    return [float(v) for v in accelerator.reduce(tensor, reduction="sum").tolist()]


# ---------------------------------------------------------------- `accelerate launch --cpu`
# accelerate's CPU launcher starts one process and leaves the others to mpirun (--mpirun_hostfile):
# `accelerate launch --cpu --num_processes 2` trains alone. The count is only in the launcher's
# command line, so the one process reads it there and starts the run's processes through
# accelerate's own torchrun launcher, the one it uses for GPUs.

def split_cpu_launch(launcher: Sequence[str], argv: Sequence[str]) -> argparse.Namespace | None:
    """accelerate's view of `launcher` (a command line) when it is an `accelerate launch` of
    `argv` asking for more CPU processes than it starts without mpirun; None otherwise."""
    at = _launch_at(launcher)
    if at is None:
        return None
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    quiet = logging.getLogger("accelerate.commands.launch")
    was, quiet.disabled = quiet.disabled, True  # its "values not passed" warning was shown once
    try:
        parsed = launch_command_parser().parse_args(list(launcher[at + 1:]))
        args: argparse.Namespace = _validate_launch_command(parsed)[0]
    except (SystemExit, ValueError, OSError):
        return None
    finally:
        quiet.disabled = was
    ours = list(args.training_script_args) == list(argv)
    # the launcher accelerate picked (its `launch_command`): --cpu always gets the simple one
    simple = args.cpu or not (args.multi_gpu or args.use_deepspeed or args.use_fsdp or args.tpu
                              or getattr(args, "use_megatron_lm", False))
    if not ours or not simple or args.mpirun_hostfile or (args.num_processes or 1) <= 1:
        return None
    return args


def _launch_at(launcher: Sequence[str]) -> int | None:
    """Where the launch arguments start in an `accelerate launch` command line, or None."""
    for i, arg in enumerate(launcher):
        if arg == "launch" and i > 0 and "accelerate" in os.path.basename(launcher[i - 1]):
            return i  # `accelerate launch …`, `python …/bin/accelerate launch …`
        if arg.endswith(("accelerate.commands.launch", "accelerate/commands/launch.py")):
            return i  # `python -m accelerate.commands.launch …`
    return None


def _launcher_command_line() -> list[str] | None:
    """The command line of the process that started this one, when this process was started by
    accelerate's CPU launcher for several processes (it sets MASTER_ADDR only then)."""
    if not parse_flag_from_env("ACCELERATE_USE_CPU") or "MASTER_ADDR" not in os.environ \
            or any(name in os.environ for name in _LAUNCHED):
        return None
    import psutil

    try:
        return list(psutil.Process(os.getppid()).cmdline())
    except psutil.Error:
        return None


def launch_cpu_processes(argv: Sequence[str] | None = None) -> int | None:
    """Under `accelerate launch --cpu --num_processes N`, run this command as the N processes of
    one run and return the exit code (the first failed process's, else 0); None when this
    process is not such a launch and should train itself."""
    launcher = _launcher_command_line()
    args = split_cpu_launch(launcher, sys.argv[1:] if argv is None else argv) if launcher else None
    if args is None:
        return None
    from accelerate.commands.launch import multi_gpu_launcher
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    _share_cores(args.num_processes)
    log.info("accelerate launch --cpu: starting %d processes", args.num_processes)
    mark_stage(f"launcher: starting {args.num_processes} processes, "
               f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    try:
        multi_gpu_launcher(args)  # torchrun: RANK/WORLD_SIZE per process, ACCELERATE_USE_CPU kept
    except ChildFailedError as e:  # each process has said why on stderr
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 1
    return 0


def _share_cores(processes: int) -> None:
    """Cap an inherited OMP_NUM_THREADS at the processes' share of the cores, for the processes
    about to start (unset, torchrun sets 1); from their start, so their setup does not
    oversubscribe the cores either."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    share = thread_share(processes)
    if given.strip().isdigit() and int(given) > share:
        log.info("OMP_NUM_THREADS=%s × %d processes > the cores: %d thread(s) each", given,
                 processes, share)
        os.environ["OMP_NUM_THREADS"] = str(share)


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off in every module (p = 0): TRL's RewardTrainer default, steadier rewards."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


@contextlib.contextmanager
def training_context(device: torch.device, *, model: str) -> Iterator[None]:
    """Deterministic kernels, the thread count for `model`, and no cyclic GC, for a run's steps."""
    with deterministic(device), threads_for(model), paused_gc():
        mark_stage("training steps")
        yield
    mark_stage("training steps done")


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Same seed → same numbers: deterministic kernels while training, previous mode restored.

    Not needed on CPU, whose kernels here are deterministic for a fixed thread count (the tests
    check it); there the mode would only add its NaN-filling of every new tensor.
    """
    if device.type == "cpu":
        yield
        return
    was, warn = (torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled())
    settings: Any = torch.utils.deterministic  # a module attribute the type stubs do not declare
    fill = settings.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    settings.fill_uninitialized_memory = False  # costs time, adds no determinism
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn)
        settings.fill_uninitialized_memory = fill


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while training: a step frees its tensors by reference count,
    and collections triggered by autograd's many small objects cost ~2% of a CPU step (measured)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextlib.contextmanager
def threads_for(model: str) -> Iterator[None]:
    """One intra-op thread for `bow`: its matmuls are tiny, and a second thread only adds
    synchronisation (measured 6–7× slower per step with 2 threads on a 2-core CPU).

    With several processes of one run on this machine, each gets at most its share of the cores,
    so they do not oversubscribe them (torchrun already defaults OMP_NUM_THREADS to 1; a larger
    inherited value is capped here)."""
    before = torch.get_num_threads()
    local = get_cpu_distributed_information().local_world_size
    if model == BOW:
        torch.set_num_threads(1)
    elif local > 1:
        torch.set_num_threads(min(before, thread_share(local)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
