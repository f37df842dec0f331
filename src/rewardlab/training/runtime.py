"""Where and how fast a training run executes: device, precision, kernels, threads.

Each choice was measured (torch 2.13 CPU, MiniLM, batch 8 pairs, length <= 256) on the 2-core
machines this project runs on: an AMD EPYC with avx512_bf16 (native bf16) and one with AVX2 only
(fp32; there SDPA beats eager attention, 5.2 vs 4.0 pairs/s). Each says so where it is made, so
another machine can revisit it. None changes what is learned except `dropout` (off by default, as in TRL).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState

from rewardlab.errors import ModelError
from rewardlab.models.names import BOW

__all__ = ["resolve_precision", "make_accelerator", "disable_dropout", "training_context",
           "deterministic", "threads_for", "paused_gc"]

def resolve_precision(precision: str, *, model: str, device: torch.device) -> str:
    """'auto' → 'bf16' where autocast is faster (measured), else 'fp32'."""
    if precision != "auto":
        return precision
    if model == BOW:
        return "fp32"  # a few small matmuls: casting costs more than bf16 saves
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        # native bf16 (avx512_bf16 / AMX): MiniLM steps measured 1.5-2x faster; emulated bf16 is slower
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    return "fp32"


def make_accelerator(precision: str, *, model: str) -> tuple[Accelerator, str]:
    """An Accelerator for this run and the resolved precision ('fp32' | 'bf16')."""
    precision = resolve_precision(precision, model=model, device=PartialState().device)
    # AcceleratorState is a process-wide singleton that refuses a second mixed-precision setting;
    # each run owns its precision, so start clean (as transformers' TrainingArguments does).
    AcceleratorState._reset_state()
    try:
        accelerator = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no")
    except ValueError as e:
        raise ModelError(f"precision {precision} is not available here ({e}); use --precision fp32"
                         ) from e
    return accelerator, precision


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off in every module (p = 0): TRL's RewardTrainer default, steadier rewards."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


@contextlib.contextmanager
def training_context(device: torch.device, *, model: str) -> Iterator[None]:
    """Deterministic kernels, the thread count for `model`, and no cyclic GC, for a run's steps."""
    with deterministic(device), threads_for(model), paused_gc():
        yield


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
    synchronisation (measured 6–7× slower per step with 2 threads on a 2-core CPU)."""
    before = torch.get_num_threads()
    if model == BOW:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
