"""runtime.py: precision choice, a fresh Accelerator per run, dropout off, and context managers
that put torch's global settings back (also when the run raises).

`paused_gc` and the oneDNN cache default are not tested here (they are moving to training/fast/);
the attention-kernel switch lives in training/fast/ and is tested in tests/training/test_fast.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import BertConfig, BertForSequenceClassification

from rewardlab.errors import ModelError
from rewardlab.models.names import BOW
from rewardlab.training import runtime
from rewardlab.training.runtime import (
    deterministic,
    disable_dropout,
    make_accelerator,
    resolve_precision,
    threads_for,
    training_context,
)

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")  # no device needed


class Boom(RuntimeError):
    pass


@pytest.fixture
def fresh_accelerator_state() -> Iterator[None]:
    yield
    AcceleratorState._reset_state()  # leave no bf16 singleton behind for other tests


@pytest.fixture
def two_threads() -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


@pytest.fixture
def deterministic_mode() -> Iterator[None]:
    """Whatever a test does to torch's deterministic mode, the next test starts from the original."""
    was = (torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())
    fill = torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.use_deterministic_algorithms(was[0], warn_only=was[1])
    torch.utils.deterministic.fill_uninitialized_memory = fill


def _mode() -> tuple[bool, bool, bool]:
    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.utils.deterministic.fill_uninitialized_memory)


# ---------------------------------------------------------------- precision


@pytest.mark.parametrize("device", [CPU, CUDA, MPS])
@pytest.mark.parametrize("model", ["minilm", BOW])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_explicit_precision_passes_through(precision: str, model: str,
                                              device: torch.device) -> None:
    assert resolve_precision(precision, model=model, device=device) == precision


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision(native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: native)
    want = "bf16" if native else "fp32"
    assert resolve_precision("auto", model="minilm", device=CPU) == want  # only native bf16
    assert resolve_precision("auto", model="minilm", device=CUDA) == want
    assert resolve_precision("auto", model="minilm", device=MPS) == "fp32"
    for device in (CPU, CUDA):
        assert resolve_precision("auto", model=BOW, device=device) == "fp32"  # casts cost more


def test_auto_precision_follows_this_cpu() -> None:
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert resolve_precision("auto", model="minilm", device=CPU) == ("bf16" if native else "fp32")


# ---------------------------------------------------------------- accelerator


def test_make_accelerator_twice_with_different_precisions(fresh_accelerator_state: None) -> None:
    """accelerate's state is a singleton that refuses a second mixed precision: each run resets it."""
    bf16, p1 = make_accelerator("bf16", model="minilm")
    assert (p1, bf16.mixed_precision, bf16.device.type) == ("bf16", "bf16", "cpu")
    fp32, p2 = make_accelerator("fp32", model="minilm")
    assert (p2, fp32.mixed_precision) == ("fp32", "no")
    again, p3 = make_accelerator("bf16", model="minilm")
    assert (p3, again.mixed_precision) == ("bf16", "bf16")
    auto, p4 = make_accelerator("auto", model=BOW)
    assert (p4, auto.mixed_precision) == ("fp32", "no")


def test_unavailable_precision_is_a_model_error(monkeypatch: pytest.MonkeyPatch,
                                                fresh_accelerator_state: None) -> None:
    def refuse(**kwargs: object) -> None:
        raise ValueError("bf16 mixed precision requires a newer device")

    monkeypatch.setattr(runtime, "Accelerator", refuse)
    with pytest.raises(ModelError, match="precision bf16 is not available here.*--precision fp32"):
        make_accelerator("bf16", model="minilm")


# ---------------------------------------------------------------- dropout


def _tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=1,
                        hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5,
                        classifier_dropout=0.5)
    return BertForSequenceClassification(config)


def _train_mode_logits(model: torch.nn.Module) -> torch.Tensor:
    model.train()
    with torch.no_grad():
        return model(input_ids=torch.tensor([[1, 5, 7, 9, 2]])).logits


def test_disable_dropout_makes_training_forward_deterministic() -> None:
    kept, off = _tiny_bert(), _tiny_bert()
    disable_dropout(off)
    p_kept = [m.p for m in kept.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(p_kept) >= 5 and set(p_kept) == {0.5}  # embeddings, every layer, the head
    assert {m.p for m in off.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
    assert off.training is kept.training and all(  # the weights are untouched
        torch.equal(a, b) for a, b in zip(off.state_dict().values(), kept.state_dict().values()))
    # with dropout: two train-mode forwards differ; without: they equal the eval forward
    assert not torch.equal(_train_mode_logits(kept), _train_mode_logits(kept))
    once, twice = _train_mode_logits(off), _train_mode_logits(off)
    off.eval()
    with torch.no_grad():
        evaluated = off(input_ids=torch.tensor([[1, 5, 7, 9, 2]])).logits
    assert torch.equal(once, twice) and torch.equal(once, evaluated)


# ---------------------------------------------------------------- global torch settings


@pytest.mark.parametrize("before", [(False, False), (True, False), (True, True)],
                         ids=["off", "strict", "warn-only"])
def test_deterministic_restores_the_previous_mode(before: tuple[bool, bool],
                                                  deterministic_mode: None) -> None:
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.utils.deterministic.fill_uninitialized_memory = True
    outside = _mode()
    with deterministic(CUDA):
        assert _mode() == (True, True, False)  # warn-only deterministic kernels, no NaN filling
    assert _mode() == outside
    with pytest.raises(Boom), deterministic(CUDA):
        raise Boom
    assert _mode() == outside


def test_deterministic_leaves_a_cpu_run_alone(deterministic_mode: None) -> None:
    torch.use_deterministic_algorithms(False)
    outside = _mode()
    with deterministic(CPU):
        assert _mode() == outside  # CPU kernels here are deterministic already
    with pytest.raises(Boom), deterministic(CPU):
        raise Boom
    assert _mode() == outside


def test_threads_for_bow_is_one_thread_then_restored(two_threads: int) -> None:
    with threads_for(BOW):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == two_threads
    with threads_for("minilm"):
        assert torch.get_num_threads() == two_threads
    with pytest.raises(Boom), threads_for(BOW):
        raise Boom
    assert torch.get_num_threads() == two_threads


def test_training_context_sets_and_restores_both(two_threads: int, deterministic_mode: None) -> None:
    torch.use_deterministic_algorithms(False)
    outside = _mode()
    with pytest.raises(Boom), training_context(CUDA, model=BOW):
        assert torch.get_num_threads() == 1 and _mode() == (True, True, False)
        raise Boom
    assert torch.get_num_threads() == two_threads and _mode() == outside
