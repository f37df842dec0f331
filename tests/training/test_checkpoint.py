"""checkpoint.py on its own: fingerprints, Progress arithmetic, the run record, finished-run lookup,
and save → restore of model, optimizer, RNG and progress through a real Accelerator.

The end-to-end "interrupted + resumed run equals an uninterrupted one" lives in tests/training/test_train.py
(test_resume_after_interruption_equals_uninterrupted); it is not repeated here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rewardlab.data.pairs import PreferencePair, fingerprint_pairs
from rewardlab.errors import ModelError
from rewardlab.models.reward_model import INFO_FILE
from rewardlab.training.checkpoint import (
    CHECKPOINTS,
    STATE_FILE,
    Progress,
    clear_checkpoints,
    finished_run,
    restore_checkpoint,
    run_info,
    save_checkpoint,
    smoothing_fingerprint,
)
from rewardlab.training.runtime import make_accelerator
from rewardlab.training.train_config import TrainConfig


def _pairs(n: int = 4) -> list[PreferencePair]:
    return [PreferencePair(source_index=i, split="train", prompt=f"q{i}", chosen=f"good {i}",
                           rejected=f"bad {i}") for i in range(n)]


def _prints(pairs: list[PreferencePair], eps: np.ndarray | None = None) -> dict[str, str | None]:
    return {"data_fingerprint": fingerprint_pairs(pairs), "smoothing_fingerprint": smoothing_fingerprint(eps)}


CONFIG = dataclasses.asdict(TrainConfig(model="bow", epochs=2, batch_size=2, max_length=32))


# ---------------------------------------------------------------- fingerprints


def test_data_fingerprint_is_order_and_content_sensitive() -> None:
    pairs = _pairs()
    print_ = fingerprint_pairs(pairs)
    assert print_ == fingerprint_pairs(_pairs()) and len(print_) == 64
    by_hand = hashlib.sha256("".join(p.content_hash for p in pairs).encode()).hexdigest()
    assert print_ == by_hand  # sha256 over the content hashes, in order
    assert fingerprint_pairs(pairs[::-1]) != print_
    assert fingerprint_pairs(pairs[:-1]) != print_
    assert fingerprint_pairs([pairs[0].flipped(), *pairs[1:]]) != print_
    edited = dataclasses.replace(pairs[2], chosen="good 2.")
    assert fingerprint_pairs([*pairs[:2], edited, pairs[3]]) != print_
    assert fingerprint_pairs([]) == hashlib.sha256().hexdigest()
    # the store's id is not content: the same pairs loaded again print the same
    assert fingerprint_pairs([dataclasses.replace(p, example_id=7) for p in pairs]) == print_


def test_smoothing_fingerprint() -> None:
    eps = np.array([0.0, 0.3, 0.0, 0.3])
    assert smoothing_fingerprint(None) is None
    assert smoothing_fingerprint(eps) == smoothing_fingerprint([0.0, 0.3, 0.0, 0.3])
    assert smoothing_fingerprint(eps) == hashlib.sha256(b"[0.0, 0.3, 0.0, 0.3]").hexdigest()
    assert smoothing_fingerprint(eps[::-1]) != smoothing_fingerprint(eps)
    assert smoothing_fingerprint(eps + [0, 0, 0, 1e-9]) != smoothing_fingerprint(eps)
    assert smoothing_fingerprint(np.zeros(4)) != smoothing_fingerprint(np.zeros(3))


# ---------------------------------------------------------------- Progress


def test_progress_record_and_log_arithmetic() -> None:
    state = Progress()
    state.record(0, loss_sum=1.2, correct=1, pairs=2)
    state.record(0, loss_sum=0.8, correct=2, pairs=2)
    assert (state.step, state.epoch_pairs, state.epoch_correct) == (2, 4, 3)
    assert state.epoch_mean_loss == pytest.approx(0.5) and state.epoch_accuracy == 0.75
    state.log(lr=1e-3)
    assert state.history == [{"step": 2, "loss": pytest.approx(0.5), "accuracy": 0.75, "lr": 1e-3}]
    assert (state.window_loss, state.window_correct, state.window_pairs) == (0.0, 0, 0)
    state.record(0, loss_sum=0.3, correct=0, pairs=1)  # one step into the window ...
    state.record(1, loss_sum=0.6, correct=3, pairs=3)  # ... then a new epoch: epoch sums restart
    assert (state.step, state.epoch, state.epoch_pairs, state.epoch_correct) == (4, 1, 3, 3)
    assert state.epoch_mean_loss == pytest.approx(0.2) and state.epoch_accuracy == 1.0
    state.log(lr=5e-4)  # the window spans the epoch boundary: (0.3 + 0.6) / 4, 3 / 4
    assert state.history[-1] == {"step": 4, "loss": pytest.approx(0.225), "accuracy": 0.75, "lr": 5e-4}


def test_progress_empty_window_and_json_round_trip() -> None:
    state = Progress()
    assert state.epoch_mean_loss == 0.0 and state.epoch_accuracy == 0.0  # no division by zero
    state.log(lr=0.1)
    assert state.history == [{"step": 0, "loss": 0.0, "accuracy": 0.0, "lr": 0.1}]
    state.record(0, loss_sum=0.1 + 0.2, correct=1, pairs=3)  # a float JSON must keep exactly
    state.seconds = 1 / 3
    back = Progress(**json.loads(json.dumps(dataclasses.asdict(state))))
    assert back == state


# ---------------------------------------------------------------- the run record


def _info(state: Progress, *, total_steps: int, config: dict = CONFIG,
          prints: dict | None = None) -> dict:
    return run_info(config=config, state=state, fingerprints=prints or _prints(_pairs()), lr=0.01,
                    precision="fp32", n_pairs=4, n_truncated=1, n_response_truncated=0,
                    total_steps=total_steps, num_processes=1)


def test_run_info_fields() -> None:
    state = Progress()
    for _ in range(4):
        state.record(0, loss_sum=1.0, correct=1, pairs=2)
    state.log(lr=0.01)
    info = _info(state, total_steps=4)
    assert info["complete"] and info["steps"] == 4 and info["total_steps"] == 4
    assert info["train_loss"] == 0.5 and info["train_accuracy"] == 0.5
    assert info["history"] == state.history and info["config"] == CONFIG
    assert info["data_fingerprint"] == fingerprint_pairs(_pairs())
    assert info["smoothing_fingerprint"] is None
    assert (info["n_pairs"], info["n_truncated"], info["n_response_truncated"]) == (4, 1, 0)
    assert info["versions"]["torch"] == torch.__version__ and info["precision"] == "fp32"
    assert not _info(state, total_steps=5)["complete"]
    json.dumps(info, allow_nan=False)  # a plain JSON record


def _write(out: Path, info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / INFO_FILE).write_text(json.dumps(info))


def _done_state() -> Progress:
    state = Progress()
    state.record(0, loss_sum=0.4, correct=2, pairs=2)
    return state


def test_finished_run_found_only_for_a_complete_matching_record(tmp_path: Path) -> None:
    prints = _prints(_pairs())
    assert finished_run(tmp_path / "missing", config=CONFIG, fingerprints=prints) is None
    _write(tmp_path, _info(_done_state(), total_steps=1))
    info = finished_run(tmp_path, config=CONFIG, fingerprints=prints)
    assert info is not None and info["complete"] and info["train_loss"] == 0.2
    # settings that do not shape the weights may differ
    free = {**CONFIG, "max_steps": 9, "save_steps": 3, "logging_steps": 2, "eval_batch_size": 4}
    assert finished_run(tmp_path, config=free, fingerprints=prints) == info
    _write(tmp_path, _info(_done_state(), total_steps=2))  # stopped early: not finished
    assert finished_run(tmp_path, config=CONFIG, fingerprints=prints) is None
    (tmp_path / INFO_FILE).write_text('{"complete": tr')  # half written: train again
    assert finished_run(tmp_path, config=CONFIG, fingerprints=prints) is None


def test_finished_run_of_other_settings_or_data_refuses(tmp_path: Path) -> None:
    """A different config or data is an error, not a silent retrain over someone's model."""
    _write(tmp_path, _info(_done_state(), total_steps=1))
    prints = _prints(_pairs())
    with pytest.raises(ModelError, match="lr=None, not 0.1"):
        finished_run(tmp_path, config={**CONFIG, "lr": 0.1}, fingerprints=prints)
    with pytest.raises(ModelError, match="seed="):
        finished_run(tmp_path, config={**CONFIG, "seed": 1}, fingerprints=prints)
    with pytest.raises(ModelError, match="training pairs"):
        finished_run(tmp_path, config=CONFIG, fingerprints=_prints(_pairs(3)))
    with pytest.raises(ModelError, match="per-pair smoothing"):
        finished_run(tmp_path, config=CONFIG, fingerprints=_prints(_pairs(), np.full(4, 0.1)))


# ---------------------------------------------------------------- save / restore


@pytest.fixture
def prepared() -> tuple:
    accelerator, _ = make_accelerator("fp32", model="bow")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    model(torch.randn(8, 4)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()


def _progress(steps: int) -> Progress:
    state = Progress()
    for k in range(steps):
        state.record(k // 3, loss_sum=0.1 * k, correct=k % 2, pairs=2)
        state.log(lr=0.1 / (k + 1))
    return state


def test_save_then_restore_brings_back_weights_optimizer_rng_and_progress(
        prepared: tuple, tmp_path: Path) -> None:
    accelerator, model, optimizer = prepared
    prints = _prints(_pairs())
    _step(model, optimizer)
    save_checkpoint(accelerator, tmp_path, _progress(3), config=CONFIG, fingerprints=prints)
    _step(model, optimizer)
    saved_state = _progress(5)
    ckpt = save_checkpoint(accelerator, tmp_path, saved_state, config=CONFIG, fingerprints=prints)
    assert ckpt == tmp_path / CHECKPOINTS / "step-0000005"
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir()) == ["step-0000005"]  # newest only
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    moments = optimizer.state_dict()["state"][0]["exp_avg"].clone()
    next_draw = torch.rand(3)  # what the RNG gives right after the save

    _step(model, optimizer)  # the run goes on, then is interrupted
    _step(model, optimizer)
    (tmp_path / CHECKPOINTS / "step-0000009").mkdir()  # a save killed before trainer_state.json
    assert not torch.equal(model.weight, weights["weight"])

    restored = restore_checkpoint(accelerator, tmp_path, config=CONFIG, fingerprints=prints)
    assert restored == saved_state
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert torch.equal(optimizer.state_dict()["state"][0]["exp_avg"], moments)
    assert torch.equal(torch.rand(3), next_draw)
    payload = json.loads((ckpt / STATE_FILE).read_text())
    assert payload["config"] == CONFIG and payload["data_fingerprint"] == prints["data_fingerprint"]


def test_restore_checks_the_run_and_handles_missing_or_broken_state(prepared: tuple,
                                                                    tmp_path: Path) -> None:
    accelerator, model, optimizer = prepared
    prints = _prints(_pairs())
    assert restore_checkpoint(accelerator, tmp_path, config=CONFIG, fingerprints=prints) is None
    assert save_checkpoint(accelerator, None, _progress(1), config=CONFIG, fingerprints=prints) is None
    save_checkpoint(accelerator, tmp_path, _progress(2), config=CONFIG, fingerprints=prints)
    with pytest.raises(ModelError, match="batch_size=2, not 4"):
        restore_checkpoint(accelerator, tmp_path, config={**CONFIG, "batch_size": 4},
                           fingerprints=prints)
    with pytest.raises(ModelError, match="training pairs"):
        restore_checkpoint(accelerator, tmp_path, config=CONFIG, fingerprints=_prints(_pairs(5)))
    free = {**CONFIG, "max_steps": 1, "save_steps": 1}
    assert restore_checkpoint(accelerator, tmp_path, config=free, fingerprints=prints) == _progress(2)
    (tmp_path / CHECKPOINTS / "step-0000002" / STATE_FILE).write_text("{")
    # a half-written state is skipped, not fatal: no other checkpoint, so from scratch (issue 17)
    assert restore_checkpoint(accelerator, tmp_path, config=CONFIG, fingerprints=prints) is None


def test_clear_checkpoints_leaves_the_model_alone(prepared: tuple, tmp_path: Path) -> None:
    accelerator, _, _ = prepared
    save_checkpoint(accelerator, tmp_path, _progress(1), config=CONFIG, fingerprints=_prints(_pairs()))
    _write(tmp_path, {"complete": False})
    clear_checkpoints(tmp_path)
    assert not (tmp_path / CHECKPOINTS).exists() and (tmp_path / INFO_FILE).exists()
    clear_checkpoints(tmp_path)  # nothing to clear is fine
    clear_checkpoints(tmp_path / "never-created")
