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


def make_tiny_backbone(directory: Path, *, initializer_range: float = 0.02) -> Path:
    """A random 2-layer, 32-wide BERT with the MiniLM tokenizer: trains in a blink on a CPU.

    At BERT's init (std 0.02) every margin is ~0: the first steps all sit at loss ln 2 whatever
    pairs they hold, and how soon training leaves that plateau hangs on float rounding. A wider
    init (0.2) gives each batch its own loss from the first step on."""
    tok = AutoTokenizer.from_pretrained(minilm_path())
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        num_labels=1, pad_token_id=tok.pad_token_id,
                        initializer_range=initializer_range)
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


# A ChatML template (as Qwen2's), with the generation prompt TRL and vLLM use.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
_DECODERS = ("qwen2", "llama", "gpt2")


def _train_bpe_tokenizer(*, chat: bool, vocab_size: int = 400):
    """A byte-level BPE tokenizer trained here on the planted-pair words (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [" ".join(_WORDS), SIGNAL, "Human: Assistant: question user assistant system",
              "What is the best way to do it? Sure, here is how. I can't help with that."] * 50
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    if chat:
        tok.chat_template = CHATML_TEMPLATE
    return tok


def make_tiny_decoder(directory: Path, arch: str = "qwen2", *, chat: bool = True) -> Path:
    """A random 2-layer, 32-wide decoder reward model (Qwen2, Llama or GPT-2 architecture) with a
    locally trained BPE tokenizer; `chat` gives the tokenizer a ChatML chat template."""
    from transformers import (
        GPT2Config,
        GPT2ForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
        Qwen2Config,
        Qwen2ForSequenceClassification,
    )

    if arch not in _DECODERS:
        raise ValueError(f"arch must be one of {_DECODERS}")
    tok = _train_bpe_tokenizer(chat=chat)
    common = {"vocab_size": len(tok), "num_labels": 1, "pad_token_id": tok.pad_token_id,
              "eos_token_id": tok.eos_token_id, "bos_token_id": tok.eos_token_id}
    if arch == "gpt2":
        model = GPT2ForSequenceClassification(GPT2Config(
            n_embd=32, n_layer=2, n_head=2, n_positions=256, **common))
    else:
        sizes = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "num_key_value_heads": 1, "intermediate_size": 64, "max_position_embeddings": 256,
                 "tie_word_embeddings": False}
        cls, conf = ((Qwen2ForSequenceClassification, Qwen2Config) if arch == "qwen2"
                     else (LlamaForSequenceClassification, LlamaConfig))
        model = cls(conf(**sizes, **common))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
