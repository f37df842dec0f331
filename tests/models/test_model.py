"""model.py / batching.py: backbones, loading errors, truncation, length-grouped batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.errors import ModelError
from rewardlab.models.backbones import (
    configure_tokenizer,
    load_backbone,
    minilm_path,
    resolve_backbone,
)
from rewardlab.models.batching import encode_texts, length_grouped_batches, pad_rows
from rewardlab.models.reward_model import RewardModel
from tests._tiny import make_tiny_backbone


@pytest.fixture(scope="module")
def backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def tokenizer() -> AutoTokenizer:
    return configure_tokenizer(AutoTokenizer.from_pretrained(minilm_path()), max_length=16)


def test_resolve_backbone() -> None:
    assert Path(resolve_backbone("minilm")) == minilm_path()
    assert (minilm_path() / "config.json").exists()
    assert resolve_backbone("bow") == "bow"
    assert resolve_backbone("distilbert-base-uncased") == "distilbert-base-uncased"
    with pytest.raises(ModelError, match="unknown backbone 'no such model!'.*'minilm'.*'bow'"):
        resolve_backbone("no such model!")


def test_default_backbone_loads_offline() -> None:
    model, tok = load_backbone("minilm", max_length=64, seed=0)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    assert tok.is_fast and tok.truncation_side == "left" and tok.model_max_length == 64
    with torch.inference_mode():
        out = model(**tok(["Human: hi"], ["hello"], return_tensors="pt")).logits
    assert out.shape == (1, 1)


def test_unknown_hub_id_is_one_line_model_error() -> None:
    with pytest.raises(ModelError) as err:
        load_backbone("nobody/no-such-reward-model", max_length=64, seed=0)
    message = str(err.value)
    assert "nobody/no-such-reward-model" in message and "minilm" in message and "\n" not in message
    assert "hub is unreachable (HF_HUB_OFFLINE is set)" in message  # conftest forces offline


def test_unreachable_hub_is_detected_without_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: a refused connect is reported at once, not after huggingface_hub's backoff."""
    from huggingface_hub import constants

    from rewardlab.models.backbones import hub_unreachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    hub_unreachable.cache_clear()
    try:
        assert "127.0.0.1" in (hub_unreachable() or "")
    finally:
        hub_unreachable.cache_clear()


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no checkpoint at"):
        RewardModel.load(tmp_path / "missing")
    with pytest.raises(ModelError, match="no config.json"):
        RewardModel.load(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot load checkpoint") as err:
        RewardModel.load(tmp_path)
    assert "\n" not in str(err.value)


def test_plain_hf_dir_without_rewardlab_json_loads(backbone: Path) -> None:
    rm = RewardModel.load(backbone)
    assert rm.info == {} and rm.max_length == 128  # the backbone's position limit
    assert len(rm.score(["Human: hi", "Human: yo"], ["hello", "hey"])) == 2


def test_truncation_keeps_response_and_prompt_end(tokenizer: AutoTokenizer) -> None:
    prompt = "one two three four five six seven eight nine ten eleven twelve"
    enc = encode_texts(tokenizer, [prompt, "short"], ["alpha beta gamma", "reply"], max_length=16)
    text = tokenizer.decode(enc.input_ids[0], skip_special_tokens=True)
    assert len(enc.input_ids[0]) == 16 and text.startswith("three four") and text.endswith("gamma")
    assert enc.truncated.tolist() == [True, False]
    assert enc.response_truncated.tolist() == [False, False]
    plain = tokenizer(prompt, "alpha beta gamma", truncation="only_first", max_length=16)
    assert enc.input_ids[0] == plain["input_ids"]


def test_response_longer_than_window_is_cut_and_counted(tokenizer: AutoTokenizer) -> None:
    response = " ".join(["word"] * 40)
    enc = encode_texts(tokenizer, ["Human: hi", "Human: ok"], [response, "fine"], max_length=16)
    assert enc.response_truncated.tolist() == [True, False] and enc.truncated[0]
    assert len(enc.input_ids[0]) == 16
    assert enc.input_ids[0] == tokenizer("Human: hi", response, truncation=True)["input_ids"]


def test_length_grouped_batches_are_seeded_and_complete() -> None:
    lengths = np.random.default_rng(0).integers(5, 300, size=1000)
    a = length_grouped_batches(lengths, batch_size=8, seed=1, epoch=0)
    assert a == length_grouped_batches(lengths, batch_size=8, seed=1, epoch=0)
    assert a != length_grouped_batches(lengths, batch_size=8, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in a)
    random_padded = sum(len(b) * lengths[b].max() for b in np.array_split(np.arange(1000), 125))
    assert padded < 0.8 * random_padded  # grouping saves most of the padding


def test_pad_rows() -> None:
    batch = pad_rows([[5, 6, 7], [8]], [[0, 1, 1], [0]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 1, 1], [0, 0, 0]]
    left = pad_rows([[5, 6], [8]], None, pad_id=0, padding_side="left")
    assert left["input_ids"].tolist() == [[5, 6], [0, 8]] and "token_type_ids" not in left


def test_loaded_model_scores_like_plain_transformers(backbone: Path) -> None:
    rm = RewardModel.load(backbone)
    model = AutoModelForSequenceClassification.from_pretrained(backbone).eval()
    tok = AutoTokenizer.from_pretrained(backbone)
    with torch.inference_mode():
        plain = model(**tok("Human: hi", "hello there", return_tensors="pt")).logits[0, 0].item()
    # scoring on a CPU runs the packed forward: the same sums in another order, so equal to fp32
    # rounding (~1e-7, tests/models/test_packed.py), not bit for bit
    assert rm.score(["Human: hi"], ["hello there"]) == [pytest.approx(plain, rel=1e-5, abs=1e-6)]
