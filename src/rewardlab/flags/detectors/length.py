"""Length detectors: replies of very different lengths, and pairs the model would truncate.

Reward models are known to learn "longer wins"; extreme length gaps make that shortcut easy.
Pairs longer than the training `max_length` lose text silently unless someone counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import ModelError
from rewardlab.flags.detectors.base import (
    RUNTIME,
    Detector,
    DetectorResult,
    percentile_threshold,
    reasons_where,
    utf8_safe,
)
from rewardlab.models.names import MINILM

__all__ = ["LengthRatio", "OverLength"]


@dataclass
class LengthRatio(Detector):
    """The longer reply is unusually many times longer (in characters) than the shorter one.

    Score = longer / shorter character length (an empty reply counts as 1 character, so the score
    stays finite; `empty_response` reports empties). Flagged above the `percentile`-th percentile
    of this run's scores, never below `min_ratio`.
    """

    name = "length_ratio"
    description = "one reply is unusually many times longer than the other"
    percentile: float = 99.0
    min_ratio: float = 3.0

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        # (N, 2) character lengths, chosen column first
        lengths = np.array([(len(p.chosen.strip()), len(p.rejected.strip())) for p in train],
                           dtype=np.float64).reshape(-1, 2)
        scores = lengths.max(axis=1) / np.maximum(lengths.min(axis=1), 1.0)
        threshold, kind = percentile_threshold(scores, self.percentile, self.min_ratio)
        flagged = scores > threshold
        origin = f"{self.percentile:g}th percentile" if kind == "percentile" else "fixed minimum"

        def reason(i: int) -> str:
            longer, shorter = ("chosen", "rejected") if lengths[i, 0] >= lengths[i, 1] else (
                "rejected", "chosen")
            return (f"{longer} is {scores[i]:.1f}x longer than {shorter} "
                    f"(threshold {threshold:.1f}, {origin})")

        return self.result(scores, flagged, reasons_where(flagged, reason),
                           threshold=threshold, threshold_kind=kind)


@lru_cache(maxsize=2)
def _load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    from rewardlab.models.backbones import resolve_backbone

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(model), use_fast=True)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load tokenizer {model!r}: {e}") from e
    # We only measure lengths; without this every long pair logs a "sequence too long" warning.
    tokenizer.model_max_length = 1 << 30
    return tokenizer


def _count_tokens(tokenizer: Any, texts: list[str]) -> list[int]:
    """Token counts without special tokens. A fast tokenizer's Rust backend is used directly: the
    transformers wrapper converts every encoding to Python lists, which doubles the cost."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The backend keeps padding/truncation state (tokenizer.json may enable it, and the
        # transformers wrapper sets it per call): lengths must come from unpadded, whole texts.
        backend.no_padding()
        backend.no_truncation()
        return [len(e) for e in backend.encode_batch(texts, add_special_tokens=False)]
    encoded = tokenizer(texts, add_special_tokens=False, truncation=False, padding=False,
                        return_attention_mask=False, return_token_type_ids=False)
    return [len(ids) for ids in encoded["input_ids"]]


@dataclass
class OverLength(Detector):
    """The text pair (prompt_text, longer reply) exceeds `max_length` tokens: training truncates it.

    Counted with the training tokenizer exactly as training builds its input (special tokens
    included), for the longer reply because that is the one truncation hurts.
    """

    name = "over_length"
    description = "prompt + longer reply exceeds max_length tokens (would be truncated)"
    max_length: int = 256
    model: str = MINILM
    batch_size: int = field(default=4096, metadata=RUNTIME)

    def detect(self, train: Sequence[PreferencePair], *,
               test: Sequence[PreferencePair] = ()) -> DetectorResult:
        scores = self.token_lengths(train)
        flagged = scores > self.max_length
        return self.result(scores, flagged, reasons_where(flagged, lambda i: (
            f"prompt + longer reply is {int(scores[i])} tokens > max_length {self.max_length} "
            "(would be truncated)")), threshold=float(self.max_length))

    def token_lengths(self, pairs: Sequence[PreferencePair]) -> np.ndarray:
        """(N,) token count of the text pair (prompt_text, longer reply), special tokens included.

        Without truncation a text pair is its two sequences tokenized independently plus the
        template's special tokens, so each distinct text is tokenized once (prompts and replies
        repeat in real data) and the lengths are added; this is about a third faster than
        tokenizing the pairs and gives identical counts (tests check it).
        """
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        tokenizer = _load_tokenizer(self.model)
        prompts = [p.prompt_text for p in pairs]
        replies = [p.chosen if len(p.chosen) >= len(p.rejected) else p.rejected for p in pairs]
        texts = list(dict.fromkeys(prompts + replies))
        counts: dict[str, int] = {}
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            counts.update(zip(batch, _count_tokens(tokenizer, [utf8_safe(t) for t in batch])))
        special = tokenizer.num_special_tokens_to_add(pair=True)
        return np.array([counts[p] + counts[r] + special for p, r in zip(prompts, replies)],
                        dtype=np.float64)
