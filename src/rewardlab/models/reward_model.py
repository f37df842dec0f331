"""The trained reward model: load, score, save.

A rewardlab checkpoint is a plain `AutoModelForSequenceClassification` directory (`num_labels=1`)
plus its tokenizer, so any HF tool loads it; `rewardlab.json` next to them records how it was made
and its input rule (`rewardlab.models.input_rule`), and README.md is its model card. Scoring here
equals the plain-transformers recipe of the rule, for an encoder ("text-pair")

>>> import tempfile
>>> from transformers import AutoModelForSequenceClassification, AutoTokenizer
>>> from rewardlab.models.backbones import load_backbone
>>> d = RewardModel(*load_backbone("bow", max_length=64, seed=0), max_length=64).save(tempfile.mkdtemp())
>>> prompt, response = "Human: Tell me a joke.", "Why did the chicken cross the road?"
>>> tok = AutoTokenizer.from_pretrained(d); model = AutoModelForSequenceClassification.from_pretrained(d)
>>> reward = model(**tok(prompt, response, truncation="only_first", return_tensors="pt")).logits[0, 0]
>>> abs(float(reward.detach()) - RewardModel.load(d).score([prompt], [response])[0]) < 1e-6
True

(`truncation=True` gives the same input whenever the response fits in half the window), and for a
decoder with a chat template ("chat-template")

    text = tok.apply_chat_template(dialogue_messages(prompt, response), tokenize=False)
    model(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, 0]
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from tqdm.auto import tqdm
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import ModelError
from rewardlab.models.backbones import first_line, quiet_transformers, register_bow
from rewardlab.models.batching import (
    Encoded,
    PairEncoding,
    encode_pairs,
    encode_texts,
    pad_rows,
    sorted_batches,
)
from rewardlab.models.card import write_model_card
from rewardlab.models.input_rule import (
    INPUT_RULES,
    REWARD_LABEL,
    InputRule,
    choose_rule,
    split_query,
)
from rewardlab.models.packed import packed_reward_model

__all__ = ["INFO_FILE", "STATS_PAIRS", "RewardModel", "reward_stats"]

INFO_FILE = "rewardlab.json"
log = logging.getLogger(__name__)
# A model's embedding table may have more rows than its tokenizer has tokens: models round it up
# (Qwen2.5: 151,936 rows for 151,665 tokens, 0.2% spare). A tokenizer short by more than this
# share does not belong to the model (a missing one loads as a 5-token stand-in).
SPARE_VOCAB = 0.10


def _read_info(path: Path) -> dict[str, Any]:
    """rewardlab.json, checked (`_check_info`), or {} for a plain HF reward model directory."""
    info_path = path / INFO_FILE
    if not info_path.exists():
        return {}
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ModelError(f"{info_path}: unreadable ({first_line(e)})") from e
    _check_info(info, info_path)
    return dict(info)


def _check_info(info: Any, where: Path) -> None:
    """The fields loading and serving read have their types: a hand-edited or hostile file is
    one line naming the field here, not a traceback (or a 500 per request) later."""
    if not isinstance(info, dict):
        raise ModelError(f"{where}: expected a JSON object, got {type(info).__name__}")
    for name in ("config", "metrics", "reward_stats"):
        if info.get(name) is not None and not isinstance(info[name], dict):
            raise ModelError(f"{where}: {name} must be an object, got "
                             f"{type(info[name]).__name__}")
    config = info.get("config") or {}
    for name in ("max_length", "eval_batch_size"):
        value = config.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ModelError(f"{where}: config.{name} must be a whole number of at least 1, "
                             f"got {value!r}"[:300])
    rule = info.get("input_rule")
    if rule is not None and rule not in INPUT_RULES:
        raise ModelError(f"{where}: input_rule {rule!r} is not one of "
                         f"{', '.join(INPUT_RULES)}"[:300])
    for name in ("mean", "std"):
        value = (info.get("reward_stats") or {}).get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ModelError(f"{where}: reward_stats.{name} must be a number, got {value!r}"[:300])


def _positions(model: PreTrainedModel) -> int | None:
    """How many token positions the model has (None: no position table, e.g. `bow`)."""
    n = getattr(model.config, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and not isinstance(n, bool) and 0 < n < 1_000_000 else None


def _capped_length(requested: int, model: PreTrainedModel, where: Path) -> int:
    """`max_length` from rewardlab.json, cut to the model's positions (and saying so): longer
    inputs would fail every forward."""
    positions = _positions(model)
    if positions is None or requested <= positions:
        return requested
    log.warning("%s: max_length %s is more than the model's %d positions; using %d",
                where, f"{requested:,}", positions, positions)
    return positions


def _vocabulary(model: PreTrainedModel) -> int | None:
    """Rows of the input embedding table (the config's vocab_size for a model that does not
    expose it, as `bow`)."""
    try:
        embeddings: Any = model.get_input_embeddings()
        rows = embeddings.weight.shape[0]  # (V, H)
    except (NotImplementedError, AttributeError):
        rows = getattr(model.config, "vocab_size", None)
    return int(rows) if isinstance(rows, int) else None


def _check_tokenizer(path: Path, tokenizer: PreTrainedTokenizerBase,
                     model: PreTrainedModel) -> None:
    """Refuse a tokenizer that does not cover the model's vocabulary: without its files
    transformers builds a stand-in of a few special tokens, and every word scores as [UNK]."""
    rows = _vocabulary(model)
    tokens = len(tokenizer)
    if rows is None:
        return
    if tokens < (1 - SPARE_VOCAB) * rows:
        raise ModelError(f"{path}: the tokenizer has {tokens:,} tokens but the model's "
                         f"vocabulary has {rows:,}: its tokenizer files are missing or belong to "
                         "another model (save the tokenizer with the model, e.g. "
                         "`tokenizer.save_pretrained(DIR)`)")


class RewardModel:
    """A scalar reward for (prompt, response): a sequence classifier with one label + its tokenizer.

    Usually made by `train_reward_model` or `RewardModel.load(checkpoint_dir)`.

    Parameters
    ----------
    model : PreTrainedModel
        A sequence classifier with `num_labels=1` (its one logit is the reward); put in eval mode.
    tokenizer : PreTrainedTokenizerBase
        Its fast tokenizer.
    max_length : int
        Max tokens of (prompt, response) per sequence; longer inputs are cut by the input rule
        (an encoder keeps the response and the end of the prompt, a decoder the end).
    info : dict or None, default None
        What rewardlab.json records (training config, reward stats, …); None = {}.
    batch_size : int, default 16
        Sequences per forward in `score_pairs` and evaluation when they are given no batch size.
    input_rule : {"text-pair", "chat-template", "plain-dialogue"} or None, default None
        How (prompt, response) becomes model input; None chooses it from the backbone
        (`choose_rule`).

    >>> import tempfile
    >>> from rewardlab.models.backbones import load_backbone
    >>> model, tokenizer = load_backbone("bow", max_length=64, seed=0)
    >>> rm = RewardModel(model, tokenizer, max_length=64)
    >>> rm.input_rule
    'text-pair'
    >>> [reward] = rm.score(["Human: hi"], ["Hello!"])
    >>> RewardModel.load(rm.save(tempfile.mkdtemp())).score(["Human: hi"], ["Hello!"]) == [reward]
    True
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *,
                 max_length: int, info: dict[str, Any] | None = None,
                 batch_size: int = 16, input_rule: InputRule | None = None) -> None:
        self.model: PreTrainedModel = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.info = info or {}
        self.batch_size = batch_size
        self._rule: InputRule = input_rule or choose_rule(tokenizer, model.config)

    @property
    def input_rule(self) -> InputRule:
        """How (prompt, response) becomes model input: "text-pair", "chat-template" or
        "plain-dialogue" (rewardlab.json's `input_rule`; chosen by `choose_rule` for a plain HF
        directory)."""
        return self._rule

    def split_query(self, query: str) -> tuple[str, str]:
        """(prompt, response) of one string holding both, e.g. an OpenRLHF `/get_reward` query;
        `score([prompt], [response])` then scores that string. ModelError when it cannot."""
        return split_query(self._rule, self.tokenizer, query)

    @classmethod
    def load(cls, path: str | Path) -> RewardModel:
        """Load a checkpoint dir (rewardlab's or any HF reward model with `num_labels=1`)."""
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ModelError(f"no checkpoint at {path}: expected a directory from `rewardlab train`")
        if not (path / "config.json").exists():
            raise ModelError(f"{path} is not a model directory (no config.json)")
        info = _read_info(path)
        register_bow()
        try:
            with quiet_transformers():
                model = AutoModelForSequenceClassification.from_pretrained(path)
                tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
        except Exception as e:  # noqa: BLE001 - any loader failure means a corrupt checkpoint
            raise ModelError(f"cannot load checkpoint {path}: {first_line(e)}") from e
        if model.config.num_labels != 1:
            raise ModelError(f"{path} has num_labels={model.config.num_labels}; a reward model has 1")
        _check_tokenizer(path, tokenizer, model)
        train_config = info.get("config") or {}
        max_length = (_capped_length(train_config["max_length"], model, path / INFO_FILE)
                      if train_config.get("max_length") else _window(model, tokenizer))
        batch_size = int(train_config.get("eval_batch_size") or 16)
        rule = info.get("input_rule")
        return cls(model.to(PartialState().device), tokenizer, max_length=max_length, info=info,
                   batch_size=batch_size, input_rule=rule)

    def save(self, path: str | Path, *, info: dict[str, Any] | None = None) -> Path:
        """`save_pretrained` of model and tokenizer, rewardlab.json (`info`, or the loaded one,
        with the input rule) and the model card README.md.

        The config carries what other tools read: `id2label = {0: "reward"}` and, when the run
        measured them, the train-set reward `mean`/`std` (OpenRLHF normalises rewards with them).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.info = {**(self.info if info is None else info), "input_rule": self._rule}
        self._annotate_config()
        with quiet_transformers():
            self.model.save_pretrained(path)
            self.tokenizer.save_pretrained(path)
        (path / INFO_FILE).write_text(json.dumps(self.info, indent=2), encoding="utf-8")
        write_model_card(path, info=self.info, rule=self._rule, max_length=self.max_length,
                         config=self.model.config)
        return path

    def _annotate_config(self) -> None:
        config = self.model.config
        if config.id2label in ({0: "LABEL_0"}, {}, None):
            config.id2label, config.label2id = {0: REWARD_LABEL}, {REWARD_LABEL: 0}
        stats = self.info.get("reward_stats")
        if stats:
            config.mean, config.std = float(stats["mean"]), float(stats["std"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> Encoded:
        return encode_texts(self.tokenizer, prompts, responses, max_length=self.max_length,
                            rule=self._rule)

    def encode_pairs(self, pairs: Sequence[PreferencePair]) -> PairEncoding:
        prompts = [p.prompt_text for p in pairs]
        return encode_pairs(self.tokenizer, prompts, [p.chosen for p in pairs],
                            [p.rejected for p in pairs], max_length=self.max_length,
                            rule=self._rule)

    def score_encoded(self, enc: Encoded, *, batch_size: int | None = None,
                      progress: bool = False, desc: str = "score") -> np.ndarray:
        """(N,) fp32 rewards; batches sorted by length so they hardly pad.

        `progress` draws a bar on stderr (sequences scored), labelled `desc`.
        """
        rewards = np.zeros(len(enc.input_ids), dtype=np.float64)
        self.model.eval()
        forward = self._scoring_forward()
        with _no_autograd(packed=forward is not self.model), \
                _scoring_bar(len(rewards), desc, progress) as bar:
            for idx in sorted_batches(enc.lengths, batch_size=batch_size or self.batch_size):
                types = [enc.token_type_ids[i] for i in idx] if enc.token_type_ids else None
                inputs = pad_rows([enc.input_ids[i] for i in idx], types, **self._pad_kwargs())
                logits = forward(**inputs).logits  # (B, 1)
                rewards[idx] = logits[:, 0].float().cpu().numpy()
                bar.update(len(idx))
        return rewards

    def _scoring_forward(self) -> Any:
        """The packed forward (`rewardlab.models.packed`) for a BERT-family model on a CPU, else
        the model itself. Packed scoring spends ~35% less CPU than the stock forward at batch 16
        (no padding in the linears, the last layer for the pooled token only; measured on MiniLM,
        AVX2, 1 thread) and its rewards equal the stock forward's to float rounding (~1e-7)."""
        if self.device.type != "cpu" or os.environ.get("REWARDLAB_PACKED_SCORING") == "0":
            return self.model
        packed = packed_reward_model(self.model, padding_side=self.tokenizer.padding_side)
        return self.model if packed is None else packed.eval()

    def _pad_kwargs(self) -> dict[str, Any]:
        side = self.tokenizer.padding_side
        return {"pad_id": self.tokenizer.pad_token_id, "device": self.device,
                "pad_type_id": self.tokenizer.pad_token_type_id, "padding_side": side,
                # a left-padded decoder row gets the positions it has unpadded
                "position_ids": side == "left" and self._rule != "text-pair"}

    def score(self, prompts: Sequence[str], responses: Sequence[str], *,
              batch_size: int = 32) -> list[float]:
        """Reward of each (prompt, response); `prompt` is the conversation so far.

        Parameters
        ----------
        prompts : sequence of str
            The conversation up to each reply, HH-style ("Human: …\\n\\nAssistant: …\\n\\nHuman: …").
        responses : sequence of str
            The replies to score, one per prompt.
        batch_size : int, default 32
            Sequences per forward (sorted by length, so batches pad little).

        Returns
        -------
        list of float
            One reward per (prompt, response), in order; higher = preferred.

        `RewardModel`'s docstring scores a fresh `bow` model this way.
        """
        if not prompts:
            return []
        rewards: list[float] = self.score_encoded(self.encode(prompts, responses),
                                                  batch_size=batch_size).tolist()
        return rewards

    def score_pairs(self, pairs: Sequence[PreferencePair], *, batch_size: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(chosen, rejected) rewards, each (N,), in the order of `pairs`."""
        chosen, rejected, _ = self.score_pair_encoding(self.encode_pairs(pairs),
                                                       batch_size=batch_size)
        return chosen, rejected

    def score_pair_encoding(self, enc: PairEncoding, *, batch_size: int | None = None,
                            progress: bool = False, desc: str = "score"
                            ) -> tuple[np.ndarray, np.ndarray, PairEncoding]:
        """Score both sides in one length-sorted stream of 2N sequences (fewer, fuller batches)."""
        both = Encoded(enc.chosen.input_ids + enc.rejected.input_ids,
                       (enc.chosen.token_type_ids + enc.rejected.token_type_ids)
                       if enc.chosen.token_type_ids is not None
                       and enc.rejected.token_type_ids is not None else None,
                       np.concatenate([enc.chosen.truncated, enc.rejected.truncated]),
                       np.concatenate([enc.chosen.response_truncated,
                                       enc.rejected.response_truncated]))
        rewards = self.score_encoded(both, batch_size=batch_size, progress=progress,
                                     desc=desc)  # (2N,) chosen first
        n = len(enc)
        return rewards[:n], rewards[n:], enc


# reward mean/std from a seeded sample of at most this many pairs (256 rewards): standard errors
# ~4.4% of the std for the std and ~0.06 std for the mean, plenty for a normalisation constant
# (a PPO/GRPO update does not change with a constant shift of every reward); the pass costs ~1/4 of
# one epoch's compute per pair, so at 1,000 pairs it was ~27% of a 320-pair run's training call on
# a 2-core CPU, at 128 ~12% (issue 34)
STATS_PAIRS = 128


def reward_stats(model: RewardModel, data: PairEncoding, *, seed: int,
                 max_pairs: int = STATS_PAIRS) -> dict[str, float | int]:
    """Mean and std of the rewards of both sides of (a seeded sample of `max_pairs` of) the pairs
    in `data`: what OpenRLHF's `--normalize_reward` reads as `config.mean`/`config.std`."""
    n = len(data)
    idx = (np.sort(np.random.default_rng(seed).choice(n, size=max_pairs, replace=False))
           if n > max_pairs else np.arange(n))
    chosen, rejected, _ = model.score_pair_encoding(data.subset(idx.tolist()))
    rewards = np.concatenate([chosen, rejected])  # (2k,)
    # std as OpenRLHF's reward-model trainer computes it (unbiased, at least 1e-8)
    std = max(float(rewards.std(ddof=1)) if len(rewards) > 1 else 0.0, 1e-8)
    return {"mean": float(rewards.mean()), "std": std,
            "pairs": int(len(idx)), "sequences": int(len(rewards))}


@contextlib.contextmanager
def _no_autograd(*, packed: bool) -> Iterator[None]:
    """`inference_mode` for the stock forward; `no_grad` for the packed one, whose compiled row
    attention writes from OpenMP threads that do not carry inference mode (an inference tensor
    written outside it is refused), also when a caller (the server) entered inference mode."""
    if not packed:
        with torch.inference_mode():
            yield
        return
    with torch.inference_mode(False), torch.no_grad():
        yield


def _scoring_bar(total: int, desc: str, enabled: bool) -> tqdm[None]:
    # as the training bar: in a log file (no terminal) every redraw would be a line, so one in 30 s
    return tqdm(total=total, desc=desc, unit="seq", dynamic_ncols=True,
                mininterval=0.1 if sys.stderr.isatty() else 30.0,
                disable=not enabled or not PartialState().is_main_process)


def _window(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """Max input tokens for a checkpoint without rewardlab.json."""
    limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None)]
    usable = [int(x) for x in limits if x is not None and x < 1_000_000]
    return min(usable) if usable else 512
