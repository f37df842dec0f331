"""`fast_forward`, the one door to training's fast path: same rewards, and `restore` undoes it all."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.models.batching import encode_texts, pad_rows
from rewardlab.models.packed import PackedBertReward
from rewardlab.training.fast import fast_forward
from rewardlab.training.runtime import disable_dropout
from tests._tiny import make_tiny_backbone

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    path = make_tiny_backbone(tmp_path_factory.mktemp("tiny"))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="sdpa")
    return model, AutoTokenizer.from_pretrained(path)


def _batch(tok) -> dict[str, torch.Tensor]:
    enc = encode_texts(tok, ["Human: hi there", "Human: what is two plus two?"],
                       ["hello", "four, I think"], max_length=64)
    return pad_rows(enc.input_ids, enc.token_type_ids, pad_id=tok.pad_token_id)


def test_bert_on_one_cpu_runs_packed_and_restore_gives_the_plain_model_back(tiny: tuple) -> None:
    model, tok = tiny
    model = copy.deepcopy(model).train()
    disable_dropout(model)  # dropout draws differ between layouts; the maths must not
    batch = _batch(tok)
    with torch.no_grad():
        want = model(**batch).logits
    forward, restore = fast_forward(model, device=CPU, precision="bf16", processes=1,
                                    padding_side="right")
    assert isinstance(forward, PackedBertReward) and forward.sparse_embedding_grad
    assert model.config._attn_implementation == "eager"  # bf16 on a CPU: eager is the faster one
    with torch.no_grad():
        torch.testing.assert_close(forward(**batch).logits, want, rtol=1e-5, atol=1e-6)
    plain = restore(forward)
    assert plain is model and model.config._attn_implementation == "sdpa"
    assert not model.bert.embeddings.word_embeddings.weight._post_accumulate_grad_hooks


def test_several_processes_keep_dense_embedding_gradients(tiny: tuple) -> None:
    """DDP all-reduces dense gradients: the sparse-gradient buffer is for one process only."""
    model, _ = tiny
    forward, restore = fast_forward(copy.deepcopy(model), device=CPU, precision="fp32",
                                    processes=2, padding_side="right")
    assert isinstance(forward, PackedBertReward) and not forward.sparse_embedding_grad
    assert restore(forward).config._attn_implementation == "sdpa"  # fp32: nothing switched


def test_left_padding_or_other_architectures_get_the_stock_forward(tiny: tuple) -> None:
    model, _ = tiny
    twin = copy.deepcopy(model)
    forward, restore = fast_forward(twin, device=CPU, precision="fp32", processes=1,
                                    padding_side="left")
    assert forward is twin and restore(forward) is twin
