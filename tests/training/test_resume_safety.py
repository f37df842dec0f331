"""Resume is safe: a checkpoint folder runs no code, a missing or half-written one is said out loud.

A checkpoint folder may come from anywhere (a shared drive, a download), and a pickle runs code
when it is loaded. Resume reads tensors through `torch.load(weights_only=True)` and every other
state from JSON, so a crafted pickle is refused (or never read) and its payload never runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from rewardlab.data.pairs import PreferencePair
from rewardlab.errors import ModelError
from rewardlab.training.checkpoint import (
    CHECKPOINTS,
    STATE_FILE,
    Progress,
    restore_checkpoint,
    save_checkpoint,
)
from rewardlab.training.loop import train_reward_model
from rewardlab.training.runtime import make_accelerator
from rewardlab.training.train_config import TrainConfig
from tests._tiny import planted_pairs

CONFIG = dataclasses.asdict(TrainConfig(model="bow", epochs=2, batch_size=2, max_length=32))
PRINTS: dict[str, str | None] = {"data_fingerprint": "d", "smoothing_fingerprint": None}


class _WritesMarker:
    """Unpickling this calls open(marker, "w"): the file appears iff the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _bow_config(**overrides: object) -> TrainConfig:
    values = {"model": "bow", "epochs": 2, "batch_size": 4, "max_length": 32, "save_steps": 2,
              "seed": 3}
    return TrainConfig(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pairs() -> list[PreferencePair]:
    return planted_pairs(16, seed=0)


def _interrupted_run(pairs: list[PreferencePair], out: Path) -> Path:
    """Train 2 of 8 steps and stop: the checkpoint a resume would read."""
    result = train_reward_model(pairs, config=_bow_config(max_steps=2), output_dir=out,
                                progress=False)
    assert not result.complete
    ckpt = out / CHECKPOINTS / "step-0000002"
    assert (ckpt / STATE_FILE).is_file()
    return ckpt


# where accelerate's save_state/load_state keep pickles: the optimizer (read, as tensors only), the
# registered scheduler and the RNG states (never read: rewardlab keeps those as JSON)
@pytest.mark.parametrize("name", ["optimizer.bin", "custom_checkpoint_0.pkl", "random_states_0.pkl"])
def test_a_crafted_pickle_in_a_checkpoint_never_runs(pairs: list[PreferencePair], tmp_path: Path,
                                                     name: str) -> None:
    ckpt = _interrupted_run(pairs, tmp_path / "rm")
    marker = tmp_path / "pwned"
    torch.save(_WritesMarker(marker), ckpt / name)
    if name == "optimizer.bin":
        with pytest.raises(ModelError, match=r"optimizer\.bin: refused, not plain tensor data") as err:
            train_reward_model(pairs, config=_bow_config(), output_dir=tmp_path / "rm",
                               resume=True, progress=False)
        # rewardlab's words, not torch's advice to retry with weights_only=False (the unsafe path)
        assert "safetensors" in str(err.value) and "weights_only" not in str(err.value)
        assert "\n" not in str(err.value)
    else:
        resumed = train_reward_model(pairs, config=_bow_config(), output_dir=tmp_path / "rm",
                                     resume=True, progress=False)
        assert resumed.complete
    assert not marker.exists()


def test_resume_without_a_checkpoint_says_so_and_trains(pairs: list[PreferencePair],
                                                        tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rewardlab"):
        result = train_reward_model(pairs, config=_bow_config(), output_dir=tmp_path / "rm",
                                    resume=True, progress=False)
    assert result.complete and result.steps == 8
    assert "no checkpoint in" in caplog.text and "training from scratch" in caplog.text


# ------------------------------------------------ restore on its own (no training, a Linear model)


@pytest.fixture(scope="module")
def prepared() -> tuple[object, torch.nn.Module, torch.optim.Optimizer, object]:
    accelerator, _ = make_accelerator("fp32", model="bow")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer, scheduler


def _progress(steps: int) -> Progress:
    state = Progress()
    for k in range(steps):
        state.record(0, loss_sum=0.1 * k, correct=k % 2, pairs=2)
    return state


def test_scheduler_and_rng_round_trip_as_json(prepared: tuple, tmp_path: Path) -> None:
    accelerator, model, optimizer, scheduler = prepared
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    ckpt = save_checkpoint(accelerator, tmp_path, _progress(1), config=CONFIG, fingerprints=PRINTS,
                           scheduler=scheduler)
    assert ckpt is not None
    saved_lr, next_draw = scheduler.get_last_lr(), torch.rand(2)
    scheduler.step()
    scheduler.step()
    assert json.loads((ckpt / "scheduler.json").read_text())["last_epoch"] == 1
    assert restore_checkpoint(accelerator, tmp_path, config=CONFIG, fingerprints=PRINTS,
                              scheduler=scheduler) == _progress(1)
    assert scheduler.get_last_lr() == saved_lr and torch.equal(torch.rand(2), next_draw)


def test_a_half_written_state_falls_back_to_the_previous_checkpoint(
        prepared: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    accelerator, _, _, scheduler = prepared
    old = save_checkpoint(accelerator, tmp_path, _progress(2), config=CONFIG, fingerprints=PRINTS,
                          scheduler=scheduler)
    assert old is not None
    shutil.copytree(old, tmp_path / "keep")
    new = save_checkpoint(accelerator, tmp_path, _progress(4), config=CONFIG, fingerprints=PRINTS,
                          scheduler=scheduler)
    assert new is not None and not old.exists()
    shutil.move(tmp_path / "keep", old)  # as if the run died while writing the newer state
    (new / STATE_FILE).write_text('{"progress": {"step": 4, "ep')
    with caplog.at_level(logging.WARNING, logger="rewardlab"):
        restored = restore_checkpoint(accelerator, tmp_path, config=CONFIG, fingerprints=PRINTS,
                                      scheduler=scheduler)
    assert restored == _progress(2)
    assert f"{new / STATE_FILE} is unreadable" in caplog.text


def test_only_a_half_written_state_means_from_scratch_with_a_message(
        prepared: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    accelerator, _, _, scheduler = prepared
    ckpt = save_checkpoint(accelerator, tmp_path, _progress(2), config=CONFIG, fingerprints=PRINTS,
                           scheduler=scheduler)
    assert ckpt is not None
    (ckpt / STATE_FILE).write_text("")
    with caplog.at_level(logging.WARNING, logger="rewardlab"):
        assert restore_checkpoint(accelerator, tmp_path, config=CONFIG, fingerprints=PRINTS,
                                  scheduler=scheduler) is None
    assert "unreadable" in caplog.text and "no readable checkpoint" in caplog.text
    assert "training from scratch" in caplog.text


def test_the_state_file_is_written_atomically(prepared: tuple, tmp_path: Path) -> None:
    accelerator, _, _, scheduler = prepared
    ckpt = save_checkpoint(accelerator, tmp_path, _progress(1), config=CONFIG, fingerprints=PRINTS,
                           scheduler=scheduler)
    assert ckpt is not None and not list(ckpt.glob("*.tmp"))
    assert json.loads((ckpt / STATE_FILE).read_text())["progress"]["step"] == 1
