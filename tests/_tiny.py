"""Tiny backbones and planted-signal pairs shared by the model/train/evaluate tests."""

from __future__ import annotations

import random
from pathlib import Path

from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from rewardlab.data.pairs import PreferencePair
from rewardlab.models.backbones import minilm_path

SIGNAL = "wonderful"  # planted: every chosen response contains it, no rejected one does
_WORDS = ("apple banana cherry dog elephant fish grape house igloo jacket kite lemon mango "
          "night ocean pencil quilt river stone tiger").split()


def make_tiny_backbone(directory: Path) -> Path:
    """A random 2-layer, 32-wide BERT with the MiniLM tokenizer: trains in a blink on a CPU."""
    tok = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        num_labels=1, pad_token_id=tok.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def planted_pairs(n: int, *, seed: int = 0, prompt_words: tuple[int, int] = (3, 20),
                  split: str = "train") -> list[PreferencePair]:
    """Pairs whose chosen reply (and only it) contains SIGNAL; prompts vary in length."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        k = rng.randint(3, 8)
        chosen = _text(rng, k).split()
        chosen.insert(rng.randint(0, k), SIGNAL)
        pairs.append(PreferencePair(
            source_index=i, split=split, subset="harmless-base" if i % 2 else "helpful-base",
            prompt=f"question {i}: {_text(rng, rng.randint(*prompt_words))}",
            chosen=" ".join(chosen), rejected=_text(rng, k + 1)))
    return pairs
