"""Where and how fast a training run executes: device, precision, kernels, threads.

Each choice was measured (torch 2.13 CPU, MiniLM, batch 8 pairs, length <= 256) on the 2-core
machines this project runs on: an AMD EPYC with avx512_bf16 (native bf16) and one with AVX2 only
(fp32; there SDPA beats eager attention, 5.2 vs 4.0 pairs/s). Each says so where it is made, so
another machine can revisit it. None changes what is learned except `dropout` (off by default, as in TRL).
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState

from rewardlab.errors import ModelError
from rewardlab.models.names import BOW

__all__ = ["resolve_precision", "make_accelerator", "prepare_for_training", "deterministic",
           "threads_for", "paused_gc"]

# oneDNN, PyTorch's CPU backend for bf16 matmuls, JIT-compiles a kernel per matrix shape (~0.6 ms
# each, measured) and caches 1,024. Packed training meets new shapes all the time (tokens per batch,
# tokens per row: 256 row lengths x 6 attention matmuls alone exceed 1,024), so with the default
# it keeps recompiling: 4,096 measured ~3% faster per epoch for ~+0.3 GB
# (each primitive keeps ~0.65 MB; docs/benchmarks.md). oneDNN reads this at its
# first matmul; a value the user set wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "4096")


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


def prepare_for_training(model: Any, *, dropout: bool, precision: str,
                         device: torch.device) -> str | None:
    """Training-only model tweaks; returns the attention implementation to restore afterwards."""
    if not dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    attn = getattr(model.config, "_attn_implementation", None)
    if device.type == "cpu" and precision == "bf16" and attn == "sdpa" \
            and model._can_set_attn_implementation():
        # measured (torch 2.13, avx512_bf16): SDPA's CPU flash kernel makes bf16 MiniLM steps ~1.4x
        # slower than eager attention; inference stays on SDPA (fp32, where it is the faster one)
        model.set_attn_implementation("eager")
        return attn
    return None


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
