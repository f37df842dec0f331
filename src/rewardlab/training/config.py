"""`TrainConfig`: the single source of truth for a training run (saved in rewardlab.json).

Kept apart from `loop.py` so the CLI can build its flags without importing torch/transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rewardlab.errors import ModelError
from rewardlab.models.names import BOW, BOW_LR, TRANSFORMER_LR

__all__ = ["PRECISIONS", "TrainConfig"]

PRECISIONS = ("auto", "fp32", "bf16")


def _opt(default: Any, help_text: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved in the checkpoint's rewardlab.json."""

    model: str = _opt("minilm", "backbone: 'minilm' (offline default), 'bow', a local model "
                      "directory or a Hugging Face model id")
    epochs: int = _opt(1, "passes over the training pairs")
    batch_size: int = _opt(8, "pairs per forward (each pair = 2 sequences) per process")
    lr: float | None = _opt(None, f"AdamW learning rate (default: {TRANSFORMER_LR} for transformer "
                            f"backbones, {BOW_LR} for 'bow')")
    warmup_ratio: float = _opt(0.0, "fraction of optimizer steps with linear LR warm-up")
    weight_decay: float = _opt(0.0, "AdamW weight decay (not applied to biases and norms)")
    max_grad_norm: float = _opt(1.0, "clip the gradient norm to this (0 = no clipping)")
    grad_accum: int = _opt(1, "micro-batches per optimizer step")
    max_length: int = _opt(256, "max tokens of (prompt, response); keeps the response and the end "
                           "of the prompt")
    seed: int = _opt(42, "seed for head init, dropout and batch order")
    precision: str = _opt("auto", "auto = bf16 where the hardware runs it faster (CUDA with bf16, "
                          "CPUs with native bf16), else fp32", choices=PRECISIONS)
    margin: float = _opt(0.0, "BT margin: loss = -log σ(r_chosen - r_rejected - margin)")
    label_smoothing: float = _opt(0.0, "conservative BT ε: loss = -(1-ε) log σ(d) - ε log σ(-d)")
    save_steps: int = _opt(0, "save a resumable checkpoint every N optimizer steps (0 = only the "
                           "final model)")
    logging_steps: int = _opt(10, "record loss/accuracy/lr in the history every N steps")
    eval_batch_size: int = _opt(16, "sequences per forward when scoring / evaluating")
    dropout: bool = _opt(False, "keep the backbone's dropout while training (off by default, as in "
                         "TRL's RewardTrainer: steadier rewards and faster steps)")
    max_steps: int = _opt(0, "stop after this many optimizer steps (0 = all epochs); the schedule "
                          "still spans all epochs, so --resume continues exactly")

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "grad_accum", "max_length", "logging_steps",
                    "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ModelError(f"{name} must be at least 1 (got {getattr(self, name)})")
        # NaN passes every `<`/`>` check below and trains a NaN model without a word; inf likewise
        for name in ("lr", "margin", "warmup_ratio", "weight_decay", "max_grad_norm",
                     "label_smoothing"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ModelError(f"{name} must be a finite number (got {value})")
        if self.precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)} "
                             f"(got {self.precision!r})")
        if not 0.0 <= self.warmup_ratio <= 1.0:  # a share of the optimizer steps
            raise ModelError(f"warmup_ratio must be in [0, 1] (got {self.warmup_ratio})")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ModelError(f"label_smoothing must be in [0, 0.5) (got {self.label_smoothing})")
        if self.lr is not None and self.lr <= 0:
            raise ModelError(f"lr must be positive (got {self.lr})")

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.model == BOW:
            return BOW_LR
        return TRANSFORMER_LR
