"""A from-scratch bag-of-embeddings reward model, packaged as a standard HF sequence classifier.

reward(text) = MLP(mean of the token embeddings under the attention mask) — no attention, no
position. It cannot read word order, but it trains in seconds on a CPU and is enough to learn a
per-word quality such as the `synthetic:` source's hidden word values. Because it is a regular
`PreTrainedModel` registered with the Auto classes, checkpoints save and load like any other
backbone's:

>>> import tempfile
>>> from transformers import AutoModelForSequenceClassification
>>> import rewardlab.models.bow  # registers "rewardlab-bow"
>>> from rewardlab.models.backbones import load_backbone
>>> model, _ = load_backbone("bow", max_length=64, seed=0)
>>> checkpoint_dir = tempfile.mkdtemp(); model.save_pretrained(checkpoint_dir)
>>> type(AutoModelForSequenceClassification.from_pretrained(checkpoint_dir)).__name__
'BowForSequenceClassification'

The input is the tokenizer's text pair (prompt, response), so the mean also covers the prompt and
special tokens; they are shared by the two sides of a pair and cancel in the Bradley-Terry margin.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from rewardlab.models.names import BOW_LR

__all__ = [
    "MODEL_TYPE",
    "DEFAULT_LR",
    "BowConfig",
    "BowForSequenceClassification",
    "create_bow_model",
]

MODEL_TYPE = "rewardlab-bow"
# Tuned for the engine's defaults (epochs=1, batch_size=8, AdamW, linear decay), measured on
# synthetic data (test accuracy, noise 0.2): n=4000 → 1e-3: 0.991, 3e-3: 0.981, 1e-2: 0.971 (a hotter
# lr follows the flipped labels more); n=800 → 1e-3 leaves the loss at 0.69 (margins ≈ 0, useless
# probabilities) while 3e-3 trains in those 100 steps. 3e-3 is the compromise; pass --lr to change.
# MiniLM's 2e-5 would barely move freshly initialised embeddings.
DEFAULT_LR = BOW_LR  # 3e-3, defined where the CLI can read it without importing torch


class BowConfig(PretrainedConfig):
    """Sizes of the bag-of-embeddings model; `num_labels` is 1 (a scalar reward).

    32-wide by default: the AdamW update of the 30k-row embedding table dominates a CPU step, and
    32 dims learned the synthetic word values as well as 64 at half the cost.
    """

    model_type = MODEL_TYPE

    def __init__(self, vocab_size: int = 30522, embedding_size: int = 32, hidden_size: int = 32,
                 pad_token_id: int = 0, initializer_range: float = 0.02, **kwargs: Any) -> None:
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.initializer_range = initializer_range
        kwargs.setdefault("num_labels", 1)
        kwargs["pad_token_id"] = pad_token_id
        super().__init__(**kwargs)


class BowForSequenceClassification(PreTrainedModel):
    """Token embedding → masked mean pooling → MLP → logits (B, 1), BERT-style call signature."""

    config_class = BowConfig
    base_model_prefix = "bow"

    def __init__(self, config: BowConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size,
                                       padding_idx=config.pad_token_id)
        self.mlp = nn.Sequential(
            nn.Linear(config.embedding_size, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.num_labels or 1),
        )
        self.post_init()  # type: ignore[no-untyped-call]  # transformers leaves post_init unannotated

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Mean of the embeddings of unmasked tokens: (B, T) ids → (B, E)."""
        emb: torch.Tensor = self.embeddings(input_ids)  # (B, T, E)
        if attention_mask is None:
            return emb.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(emb.dtype)  # (B, T, 1)
        # clamp: an all-padding row pools to zeros instead of NaN
        return (emb * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (B, E)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # accepted for BERT compatibility, unused
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput | tuple[torch.Tensor, ...]:
        logits = self.mlp(self.pool(input_ids, attention_mask))  # (B, num_labels)
        loss = None
        if labels is not None:  # regression, as HF does for num_labels == 1
            loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def create_bow_model(tokenizer: PreTrainedTokenizerBase, *, seed: int,
                     **sizes: Any) -> BowForSequenceClassification:
    """A freshly initialised bow model sized to `tokenizer`'s vocabulary (seeded, reproducible).

    `sizes` go to `BowConfig` (e.g. `embedding_size=32`).
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    config = BowConfig(vocab_size=len(tokenizer), pad_token_id=pad, **sizes)
    # fork_rng: seed the init without disturbing the caller's global RNG stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BowForSequenceClassification(config)


AutoConfig.register(MODEL_TYPE, BowConfig, exist_ok=True)
AutoModelForSequenceClassification.register(BowConfig, BowForSequenceClassification,
                                            exist_ok=True)
