"""Training at scale: LoRA adapters, the weights' dtype and gradient checkpointing.

One call turns a freshly loaded backbone into what trains, and returns how to undo it:

>>> import torch
>>> from rewardlab.models.backbones import load_backbone
>>> from rewardlab.training.train_config import TrainConfig
>>> model, _ = load_backbone("minilm", max_length=64, seed=0)
>>> wrapped, finish = adapt_for_training(model, TrainConfig(lora_r=4), device=torch.device("cpu"))
>>> trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
>>> trainable < sum(p.numel() for p in wrapped.parameters()) // 100  # the adapter and the score head
True
>>> type(finish(wrapped)).__name__  # after training: merged, a plain checkpoint (adapter_dir=… saves both)
'BertForSequenceClassification'

With `config.lora_r` the backbone is wrapped by peft: a LoRA adapter on the target modules plus a
trainable copy of the score head (`modules_to_save`: `score` on decoders, `classifier` on BERT);
everything else is frozen. `finish` saves the adapter form when asked and merges it
(`merge_and_unload`), so the checkpoint is a plain `AutoModelForSequenceClassification` that any
HF tool loads without peft. Resumable checkpoints need nothing here: accelerate saves the wrapped
model's state dict (base, adapter and head) as safetensors, and a resume wraps the backbone the same
way before loading it.

Weight dtype (`--torch-dtype`) is how the weights are *stored* (memory); `--precision` is autocast,
the dtype matmuls *compute* in. bf16 weights with fp32 precision compute in bf16 anyway; fp32
weights with bf16 precision keep fp32 master weights (the usual mixed precision).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rewardlab.errors import ModelError
from rewardlab.models.backbones import first_line, quiet_transformers
from rewardlab.training.train_config import TrainConfig

__all__ = ["ADAPTER_DIR", "HEAD_NAMES", "Finish", "adapt_for_training", "autocast_precision",
           "check_weight_dtype", "head_modules", "lora_targets", "trainable_parameters", "unchanged"]

ADAPTER_DIR = "adapter"  # the adapter form inside a checkpoint directory, with --save-adapter
# The freshly initialised head of HF sequence classifiers: `score` (Llama, Qwen2, GPT-2, Mistral…),
# `classifier` (BERT, RoBERTa…), and DistilBERT's `pre_classifier` before its `classifier`.
HEAD_NAMES = ("pre_classifier", "classifier", "score")
# peft's defaults per model type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING) miss a few
_EXTRA_TARGETS = {"distilbert": ["q_lin", "v_lin"]}

Finish = Callable[..., Any]  # (trained model, *, adapter_dir) → the plain model to save and score
log = logging.getLogger("rewardlab")


def unchanged(model: Any, **_: Any) -> Any:
    """The model as it is: `restore`/`finish` of a path that changed nothing."""
    return model


def check_weight_dtype(config: TrainConfig, *, device: torch.device) -> None:
    """Refuse a weight dtype this device cannot train, before anything is loaded."""
    if config.torch_dtype == "fp16" and device.type != "cuda":
        raise ModelError(f"--torch-dtype fp16 needs a CUDA GPU (this run is on {device.type}): use "
                         "--torch-dtype bf16 or fp32")
    if config.torch_dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ModelError("--torch-dtype bf16: this GPU has no bf16; use --torch-dtype fp16 with "
                         "--lora-r, or fp32")


def autocast_precision(config: TrainConfig) -> str:
    """The `precision` to run: fp16 weights compute in fp16 as they are (no bf16 autocast on top)."""
    return "fp32" if config.torch_dtype == "fp16" and config.precision == "auto" else config.precision


def head_modules(model: Any) -> list[str]:
    """Names of the score head's modules (direct children), e.g. ['score'] or ['classifier']."""
    heads = [name for name, _ in model.named_children() if name in HEAD_NAMES]
    if not heads:
        raise ModelError(f"cannot find the score head of {type(model).__name__}: LoRA needs a child "
                         f"module named {' or '.join(HEAD_NAMES)} to train with the adapter")
    return heads


def lora_targets(model: Any, config: TrainConfig) -> list[str] | str:
    """--lora-target-modules, else peft's default modules for the architecture."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    given = config.target_modules()
    if isinstance(given, list):
        _check_targets(model, given)
    if given is not None:
        return given
    kind = str(getattr(model.config, "model_type", None))
    targets = DEFAULTS.get(kind) or _EXTRA_TARGETS.get(kind)
    if not targets:
        raise ModelError(f"no default LoRA target modules for model type {kind!r}: pass "
                         "--lora-target-modules (names of linear layers, or all-linear)")
    return list(targets)


def _check_targets(model: Any, targets: list[str]) -> None:
    """Each name must be a module (peft matches a name against the end of module paths)."""
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        # the adaptable layers by leaf name: nn.Linear, and GPT-2's Conv1D (a linear, weight transposed)
        leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"})
        raise ModelError(f"--lora-target-modules: no module named {', '.join(map(repr, missing))} in "
                         f"{type(model).__name__}; its linear layers: {', '.join(leaves)}")


def _is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def _check_rank(model: Any, targets: list[str] | str, rank: int) -> None:
    """Refuse a rank above a target layer's width: the update of a layer (in → out) has rank at
    most min(in, out), so a larger r only adds parameters that learn nothing (and peft would
    allocate them all before the first step)."""
    def targeted(name: str) -> bool:
        if targets == "all-linear":  # peft's meaning: every linear layer but the output head
            return name.split(".", 1)[0] not in HEAD_NAMES
        return any(name == t or name.endswith(f".{t}") for t in targets)

    # (out, in) for nn.Linear, (in, out) for GPT-2's Conv1D: the smaller side either way
    widths = {name: min(m.weight.shape) for name, m in model.named_modules()
              if _is_linear(m) and targeted(name)}
    if not widths:
        return
    narrowest = min(widths, key=lambda n: widths[n])
    if rank > widths[narrowest]:
        raise ModelError(f"--lora-r {rank} is larger than the adapted layers allow: {narrowest} "
                         f"has rank at most {widths[narrowest]} (its smaller side); use --lora-r "
                         f"{widths[narrowest]} or less")


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def adapt_for_training(model: Any, config: TrainConfig, *, device: torch.device
                       ) -> tuple[Any, Finish]:
    """The backbone as it trains (dtype fixed, checkpointing, LoRA) and how to get the plain model back."""
    model = _trainable_dtype(model, config, device)
    use_cache = getattr(model.config, "use_cache", None)
    if use_cache:  # a decoder's KV cache is of no use to a reward (TRL passes use_cache=False too)
        model.config.use_cache = False
    if config.gradient_checkpointing:
        _enable_checkpointing(model, lora=bool(config.lora_r))
    if config.lora_r:
        model = _add_adapter(model, config)

    def finish(trained: Any, *, adapter_dir: Path | None = None) -> Any:
        plain = _merge(trained, adapter_dir) if config.lora_r else trained
        if config.gradient_checkpointing:
            plain.activation_checkpointing_disable()
        if use_cache is not None:
            plain.config.use_cache = use_cache
        return plain

    return model, finish


def _trainable_dtype(model: Any, config: TrainConfig, device: torch.device) -> Any:
    """'auto' keeps the checkpoint's dtype unless it cannot train here: fp16 off a GPU or without
    LoRA, bf16 on a GPU without it. Those load as fp32, and the log says so."""
    dtype = model.dtype
    unfit = ((dtype == torch.float16 and (device.type != "cuda" or not config.lora_r))
             or (dtype == torch.bfloat16 and device.type == "cuda"
                 and not torch.cuda.is_bf16_supported()))
    if config.torch_dtype != "auto" or not unfit:
        return model
    log.info("the checkpoint's weights are %s, which cannot train here: training them in fp32 "
             "(--torch-dtype sets this)", str(dtype).removeprefix("torch."))
    return model.float()


def _enable_checkpointing(model: Any, *, lora: bool) -> None:
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ModelError(f"{type(model).__name__} does not support --gradient-checkpointing")
    # non-reentrant: recomputes correctly with frozen inputs and unused parameters (torch's advice);
    # transformers 5 renamed gradient_checkpointing_enable to this (the old name warns until v6)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if lora:  # frozen embeddings: make the checkpointed blocks' input require grad
        model.enable_input_require_grads()


def _add_adapter(model: Any, config: TrainConfig) -> Any:
    """peft LoRA on the target modules + a trainable copy of the score head; the rest frozen."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = lora_targets(model, config)
    _check_rank(model, targets, config.lora_r)  # before peft allocates r × width per layer
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=config.lora_r,
                      lora_alpha=config.lora_alpha or 2 * config.lora_r,
                      lora_dropout=config.lora_dropout, target_modules=targets,
                      modules_to_save=head_modules(model))
    total = sum(p.numel() for p in model.parameters())
    try:
        with warnings.catch_warnings():  # peft reads transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            wrapped = get_peft_model(model, lora)
    except ValueError as e:  # e.g. "Target modules {'x'} not found in the base model"
        raise ModelError(f"--lora-target-modules: {first_line(e)}") from e
    log.info("LoRA r=%d on %s: %s of %s parameters train (adapter + score head)", config.lora_r,
             lora.target_modules, f"{trainable_parameters(wrapped):,}", f"{total:,}")
    return wrapped


def _merge(trained: Any, adapter_dir: Path | None) -> Any:
    """Save the adapter form when asked (before merging changes the weights), then merge it."""
    if adapter_dir is not None:
        with quiet_transformers():  # adapter_model.safetensors + adapter_config.json
            trained.save_pretrained(adapter_dir, save_embedding_layers=_embeddings_grew(trained))
    return trained.merge_and_unload()


def _embeddings_grew(trained: Any) -> bool:
    """True when the input rule added token rows (a pad token) to the base: then the adapter form
    carries the embeddings too. Decided here from the local copy of the base's config, as peft's own
    check would ask the hub."""
    from transformers import AutoConfig

    base = trained.peft_config["default"].base_model_name_or_path
    try:
        with quiet_transformers():
            rows = AutoConfig.from_pretrained(base, local_files_only=True).get_text_config().vocab_size
    except (OSError, ValueError):
        return True  # unknown: a larger adapter that loads, rather than one that does not
    return bool(trained.get_input_embeddings().weight.shape[0] != rows)
