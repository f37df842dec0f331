"""The packed forward is an optimisation only: same rewards and gradients as the stock forward."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rewardlab.models.batching import encode_texts, pad_rows
from rewardlab.models.packed import PackedBertReward, packed_reward_model
from tests._tiny import make_tiny_backbone

PROMPTS = ["Human: hi there", "Human: " + "tell me a long story about dragons " * 6, "Human: x",
           "Human: what is two plus two?"]
RESPONSES = ["hello", "Once upon a time " * 8, "no", "four, I think"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    path = make_tiny_backbone(tmp_path_factory.mktemp("tiny"))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    for module in model.modules():  # dropout draws differ between layouts; the maths must not
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model.train(), AutoTokenizer.from_pretrained(path)


def _batch(tok, prompts: list[str], responses: list[str]) -> dict[str, torch.Tensor]:
    enc = encode_texts(tok, prompts, responses, max_length=64)
    return pad_rows(enc.input_ids, enc.token_type_ids, pad_id=tok.pad_token_id)


def _logits_and_grads(model, forward, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    logits = forward(**batch).logits  # (R, 1)
    (logits[:, 0] * torch.arange(1.0, len(logits) + 1)).sum().backward()  # rows weigh differently
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("rows", [slice(None), slice(2, 3)], ids=["padded", "one-row"])
@pytest.mark.parametrize("row_attention", [True, False], ids=["row-attention", "grid-attention"])
def test_packed_equals_stock_forward(tiny: tuple, attn: str, rows: slice,
                                     row_attention: bool) -> None:
    model, tok = tiny
    model.set_attn_implementation(attn)
    batch = _batch(tok, PROMPTS[rows], RESPONSES[rows])
    fast = packed_reward_model(model, padding_side=tok.padding_side)
    assert isinstance(fast, PackedBertReward)
    fast.row_attention = row_attention
    want, want_grads = _logits_and_grads(model, model, batch)
    got, got_grads = _logits_and_grads(model, fast, batch)
    assert len(set(want[:, 0].tolist())) == len(want)  # distinct rewards: rows are not mixed up
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_sparse_embedding_grad_equals_dense_across_accumulation(tiny: tuple) -> None:
    """Accumulated micro-batches, then steps that touch fewer rows: the reused dense buffer holds
    exactly the stock gradient every step (rows an earlier step wrote are cleared)."""
    model, tok = tiny
    first, second = _batch(tok, PROMPTS[:2], RESPONSES[:2]), _batch(tok, PROMPTS[2:], RESPONSES[2:])
    steps = [[first, second], [second], [first, second], [first]]
    words = model.bert.embeddings.word_embeddings.weight
    grads: dict[str, list[torch.Tensor]] = {"stock": [], "sparse": []}
    packed = packed_reward_model(model, sparse_embedding_grad=True)
    for name, forward in (("stock", model), ("sparse", packed)):
        for batches in steps:
            model.zero_grad(set_to_none=True)
            for batch in batches:
                forward(**batch).logits.sum().backward()
            assert not words.grad.is_sparse
            grads[name].append(words.grad.clone())
    packed.unwrap()  # the module-scoped model goes on to other tests without the hook
    assert grads["stock"][1].abs().sum() > 0
    for got, want in zip(grads["sparse"], grads["stock"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_unwrap_frees_the_wrapper_and_its_gradient_buffer(tiny: tuple) -> None:
    """After training the model outlives the wrapper: no hook may keep the (vocab, d) buffer."""
    model, tok = tiny
    packed = packed_reward_model(model, sparse_embedding_grad=True)
    model.zero_grad(set_to_none=True)  # a sparse gradient only arrives on an empty .grad
    packed(**_batch(tok, PROMPTS, RESPONSES)).logits.sum().backward()
    assert packed._word_grad is not None
    gone = weakref.ref(packed)
    assert packed.unwrap() is model
    del packed
    gc.collect()
    assert gone() is None


def test_unknown_layouts_fall_back_to_the_stock_forward(tiny: tuple, tmp_path: Path) -> None:
    model, _ = tiny
    assert packed_reward_model(model, padding_side="left") is None  # pooled token not at column 0
    from rewardlab.models.bow import create_bow_model

    tok = AutoTokenizer.from_pretrained(make_tiny_backbone(tmp_path))
    assert packed_reward_model(create_bow_model(tok, seed=0)) is None


def test_packed_bf16_autocast_is_as_accurate_as_stock(tiny: tuple) -> None:
    """Under bf16 autocast (the CPU default where native), every weight's gradient is as close to
    the fp32 gradient as the stock forward's is: bf16 rounding, not a mistake, explains the rest."""
    model, tok = tiny
    model.set_attn_implementation("eager")
    batch = _batch(tok, PROMPTS, RESPONSES)
    exact, exact_grads = _logits_and_grads(model, model, batch)  # fp32 reference
    names = [name for name, _ in model.named_parameters()]
    errors: dict[str, dict[str, float]] = {}
    for kind, forward in (("stock", model), ("packed", packed_reward_model(model))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, grads = _logits_and_grads(model, forward, batch)
        assert float((got - exact).abs().max()) < 1e-2
        errors[kind] = {n: float((g - w).norm() / w.norm())
                        for n, g, w in zip(names, grads, exact_grads) if w.ndim == 2}
    for name, stock_error in errors["stock"].items():
        assert errors["packed"][name] <= 2 * stock_error + 1e-3, (name, errors["packed"][name])


@pytest.mark.parametrize("path", ["compiled", "python"])
def test_row_attention_matches_reference_even_for_a_one_token_row(
        monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Per-row softmax attention and its hand-written backward equal autograd's, rows of any length
    (a one-token row once made the per-row copy a view, so scaling q wrote into the input)."""
    from rewardlab.models import packed
    from rewardlab.models.packed import _RowAttention

    if path == "python":
        monkeypatch.setattr(packed, "compiled_kernels", lambda: None)
    torch.manual_seed(0)
    heads, dh, lengths = 2, 4, [3, 1, 5]
    qkv = torch.randn(sum(lengths), 3 * heads * dh, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(sum(lengths), heads * dh, dtype=torch.float64)
    before = qkv.detach().clone()
    got = _RowAttention.apply(qkv, lengths, heads, 0.5)
    (got * weights).sum().backward()
    got_grad, qkv.grad = qkv.grad, None
    assert torch.equal(qkv.detach(), before)  # the input is never written
    parts = []
    for x in qkv.split(lengths):
        q, k, v = x.view(len(x), 3, heads, dh).permute(1, 2, 0, 3)  # each (H, L, dh)
        p = torch.softmax(q @ k.transpose(1, 2) * 0.5, -1)
        parts.append((p @ v).transpose(0, 1).reshape(len(x), -1))
    want = torch.cat(parts)
    (want * weights).sum().backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, qkv.grad)


def test_cpu_scoring_runs_packed_and_equals_plain_transformers_one_sequence_at_a_time(
        tmp_path: Path) -> None:
    """`rewardlab score` of a BERT-family checkpoint runs the packed forward on a CPU (dropout
    off, no gradient) and gives what plain transformers gives for each sequence alone."""
    from rewardlab.models.reward_model import RewardModel

    path = make_tiny_backbone(tmp_path / "ckpt")
    rm = RewardModel.load(path)
    assert isinstance(rm._scoring_forward(), PackedBertReward)
    scored = rm.score(PROMPTS, RESPONSES, batch_size=3)  # mixed lengths in one batch: padding
    tok = AutoTokenizer.from_pretrained(path)
    plain = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        expected = [float(plain(**tok(p, r, truncation="only_first", max_length=rm.max_length,
                                      return_tensors="pt")).logits[0, 0])
                    for p, r in zip(PROMPTS, RESPONSES)]
    assert scored == pytest.approx(expected, abs=1e-5)
    assert len(set(scored)) == len(scored)  # four different rewards, not one repeated


def test_cpu_scoring_runs_packed_inside_a_callers_inference_mode(tmp_path: Path) -> None:
    """The server scores inside `torch.inference_mode()`; the compiled row attention writes from
    threads that do not carry it, so the packed scorer must leave it for `no_grad`."""
    from rewardlab.models.reward_model import RewardModel

    rm = RewardModel.load(make_tiny_backbone(tmp_path / "ckpt"))
    outside = rm.score(PROMPTS, RESPONSES)
    with torch.inference_mode():
        inside = rm.score(PROMPTS, RESPONSES)
    assert inside == outside
