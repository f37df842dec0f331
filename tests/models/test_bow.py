"""bow: a standard HF sequence classifier (shapes, masking, Auto round trip) that learns quality."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from transformers.modeling_outputs import SequenceClassifierOutput

from rewardlab.data.synthetic import read_synthetic
from rewardlab.models.backbones import minilm_path
from rewardlab.models.bow import (
    DEFAULT_LR,
    MODEL_TYPE,
    BowConfig,
    BowForSequenceClassification,
    create_bow_model,
)


@pytest.fixture(scope="module")
def tokenizer() -> AutoTokenizer:
    return AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture
def one_thread() -> Iterator[None]:
    # a tiny model on a shared CPU: extra intra-op threads only add contention
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch(tokenizer: AutoTokenizer, responses: list[str], **kw: object) -> dict:
    return tokenizer(["Write a short reply."] * len(responses), responses, padding=True,
                     return_tensors="pt", **kw)


def test_forward_is_bert_shaped(tokenizer: AutoTokenizer) -> None:
    model = create_bow_model(tokenizer, seed=0)
    assert isinstance(model.config, BowConfig) and model.config.model_type == MODEL_TYPE
    assert model.config.num_labels == 1 and model.config.vocab_size == len(tokenizer)
    out = model(**_batch(tokenizer, ["helpful clear", "rude", "kind honest safe"]))
    assert isinstance(out, SequenceClassifierOutput) and out.logits.shape == (3, 1)
    loss, logits = model(**_batch(tokenizer, ["a", "b"]), labels=torch.ones(2), return_dict=False)
    assert logits.shape == (2, 1) and loss.ndim == 0


def test_padding_does_not_change_the_reward(tokenizer: AutoTokenizer) -> None:
    model = create_bow_model(tokenizer, seed=0).eval()
    alone = model(**_batch(tokenizer, ["helpful"])).logits
    padded = model(**_batch(tokenizer, ["helpful", "clear " * 30])).logits[:1]
    torch.testing.assert_close(alone, padded)


def test_seeded_init(tokenizer: AutoTokenizer) -> None:
    a, b = (create_bow_model(tokenizer, seed=s) for s in (1, 1))
    c = create_bow_model(tokenizer, seed=2)
    torch.testing.assert_close(a.embeddings.weight, b.embeddings.weight)
    assert not torch.equal(a.embeddings.weight, c.embeddings.weight)
    assert a.embeddings.weight.std() > 0  # initialised, not left at zeros


def test_auto_classes_load_a_saved_bow(tokenizer: AutoTokenizer, tmp_path: Path) -> None:
    model = create_bow_model(tokenizer, seed=0, embedding_size=8, hidden_size=4).eval()
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == MODEL_TYPE
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, BowForSequenceClassification)
    batch = _batch(tokenizer, ["honest reply", "wrong"])
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_engine_trains_bow_to_recover_true_quality(tmp_path: Path, one_thread: None) -> None:
    """Acceptance (2), small: noise-free synthetic → reward tracks the hidden quality."""
    from rewardlab.models.reward_model import RewardModel
    from rewardlab.training.loop import train_reward_model
    from rewardlab.training.train_config import TrainConfig

    source = read_synthetic("synthetic:n=800,noise=0,seed=1")
    train = [p for p in source.pairs if p.split == "train"]
    test = [p for p in source.pairs if p.split == "test"]
    config = TrainConfig(model="bow", seed=0)  # lr=None → bow.DEFAULT_LR
    assert config.resolved_lr() == DEFAULT_LR
    result = train_reward_model(train, config=config, output_dir=tmp_path, progress=False)
    assert result.train_accuracy > 0.8
    chosen, rejected = RewardModel.load(tmp_path).score_pairs(test)  # the saved checkpoint
    quality = [p.meta["quality_chosen"] for p in test] + [p.meta["quality_rejected"] for p in test]
    r = np.corrcoef(quality, np.concatenate([chosen, rejected]))[0, 1]
    assert (chosen > rejected).mean() >= 0.95
    assert r >= 0.9, f"Pearson r = {r:.3f}"
