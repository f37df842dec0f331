"""The fast path of training, behind one call: `forward, restore = fast_forward(model, …)`.

`forward` computes the same rewards as `model(**batch)` with less work; `restore(trained)` turns the
trained forward (after `accelerator.unwrap_model`) back into the plain model, ready to save and score.
What is inside, each measured on a 2-core CPU (docs/benchmarks.md):

* eager attention instead of SDPA for bf16 on a CPU (SDPA's CPU flash kernel: ~1.4x slower steps);
* for BERT-family backbones the packed forward (`packed.py`): linears on real tokens only, the last
  layer for the pooled token only, attention row by row over real tokens on a CPU, compiled
  (`kernels.py`, built once; ~5% a step) where a compiler was there to build it;
* on one CPU process the word-embedding gradient written into one reused buffer (~4% a step);
* oneDNN's kernel cache sized for the many matrix shapes packed batches bring (~3% an epoch).

Every other architecture, and every GPU, gets the stock forward (with SDPA where it is fast).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from rewardlab.models.kernels import compiled_kernels
from rewardlab.models.packed import PackedBertReward, packed_reward_model

__all__ = ["Restore", "fast_forward"]

Restore = Callable[[Any], Any]  # the trained forward (unwrapped by accelerate) → the plain model

# oneDNN's primitive-cache bound is set before the first matmul by training/memory.py (ONEDNN_CACHE)


def fast_forward(model: Any, *, device: torch.device, precision: str, processes: int,
                 padding_side: str) -> tuple[Any, Restore]:
    """The fastest forward that computes `model`'s rewards here, and how to undo it after training.

    >>> from rewardlab.models.backbones import load_backbone
    >>> model, _ = load_backbone("minilm", max_length=64, seed=0)
    >>> forward, restore = fast_forward(model, device=torch.device("cpu"), precision="fp32",
    ...                                 processes=1, padding_side="right")
    >>> type(forward).__name__  # a BERT-family model on one CPU process: the packed forward
    'PackedBertReward'
    >>> restore(forward) is model  # after training; under accelerate: restore(acc.unwrap_model(forward))
    True
    """
    stock_attention = _faster_attention(model, device=device, precision=precision)
    # REWARDLAB_PACKED_TRAINING=0 trains with the stock forward (for A/B measurements), as
    # REWARDLAB_PACKED_SCORING=0 scores with it
    packed = None if os.environ.get("REWARDLAB_PACKED_TRAINING") == "0" else packed_reward_model(
        model, padding_side=padding_side,
        sparse_embedding_grad=device.type == "cpu" and processes == 1)
    if packed is not None and device.type == "cpu":
        compiled_kernels()  # load (or build, once) the CPU row attention now, not inside step 1

    def restore(trained: Any) -> Any:
        plain = trained.unwrap() if isinstance(trained, PackedBertReward) else trained
        if stock_attention is not None:
            plain.set_attn_implementation(stock_attention)
        return plain

    return (packed if packed is not None else model), restore


def _faster_attention(model: Any, *, device: torch.device, precision: str) -> str | None:
    """Switch to eager attention where it is the faster one; returns the implementation to restore.

    Measured (torch 2.13, avx512_bf16): SDPA's CPU flash kernel makes bf16 MiniLM steps ~1.4x slower
    than eager attention; inference stays on SDPA (fp32, where it is the faster one).
    """
    attn = getattr(model.config, "_attn_implementation", None)
    if device.type == "cpu" and precision == "bf16" and attn == "sdpa" \
            and model._can_set_attn_implementation():
        model.set_attn_implementation("eager")
        return str(attn)
    return None
