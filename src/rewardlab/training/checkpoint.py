"""Training state on disk: resumable checkpoints and the run record (`rewardlab.json`).

A resumable checkpoint is `OUT/checkpoints/step-NNNNNNN/`: accelerate's `save_state` (model,
optimizer, the registered LR scheduler, every RNG) plus `trainer_state.json` (`Progress`: position
in the data plan, running sums, history). `trainer_state.json` is written last, so its presence
marks a complete checkpoint. Only the newest checkpoint is kept; a finished run removes them all,
since the final `save_pretrained` directory is the artifact.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator

from rewardlab._version import __version__
from rewardlab.errors import ModelError
from rewardlab.models.reward_model import INFO_FILE

__all__ = [
    "CHECKPOINTS",
    "STATE_FILE",
    "Progress",
    "smoothing_fingerprint",
    "save_checkpoint",
    "restore_checkpoint",
    "clear_checkpoints",
    "finished_run",
    "run_info",
]

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
# Settings that may change between an interrupted run and its resume: they do not shape the weights.
_FREE_ON_RESUME = frozenset({"save_steps", "logging_steps", "eval_batch_size", "max_steps"})


@dataclass
class Progress:
    """Where a run is and what it has measured; plain numbers so JSON round-trips them exactly."""

    step: int = 0
    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_loss: float = 0.0  # Σ loss × pairs over the current epoch
    epoch_correct: int = 0
    epoch_pairs: int = 0
    window_loss: float = 0.0  # the same sums since the last history entry
    window_correct: int = 0
    window_pairs: int = 0
    seconds: float = 0.0  # time spent in training steps, over all sessions

    def record(self, epoch: int, loss_sum: float, correct: int, pairs: int) -> None:
        """Add one optimizer step's sums; a new epoch restarts the epoch sums."""
        if epoch != self.epoch:
            self.epoch, self.epoch_loss, self.epoch_correct, self.epoch_pairs = epoch, 0.0, 0, 0
        self.step += 1
        self.epoch_loss += loss_sum
        self.epoch_correct += correct
        self.epoch_pairs += pairs
        self.window_loss += loss_sum
        self.window_correct += correct
        self.window_pairs += pairs

    def log(self, lr: float) -> None:
        """Append {step, loss, accuracy, lr} averaged since the previous entry."""
        n = max(self.window_pairs, 1)
        self.history.append({"step": self.step, "loss": self.window_loss / n,
                             "accuracy": self.window_correct / n, "lr": lr})
        self.window_loss, self.window_correct, self.window_pairs = 0.0, 0, 0

    @property
    def epoch_mean_loss(self) -> float:
        return self.epoch_loss / max(self.epoch_pairs, 1)

    @property
    def epoch_accuracy(self) -> float:
        return self.epoch_correct / max(self.epoch_pairs, 1)


def smoothing_fingerprint(eps: np.ndarray | None) -> str | None:
    """sha256 of the per-pair ε, None when there is none."""
    if eps is None:
        return None
    return hashlib.sha256(json.dumps([float(x) for x in eps]).encode()).hexdigest()


def _checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = output_dir / CHECKPOINTS
    found = [d for d in root.glob("step-*") if (d / STATE_FILE).exists()] if root.is_dir() else []
    return sorted(found, key=lambda d: int(d.name.split("-")[1]))


def save_checkpoint(accelerator: Accelerator, output_dir: Path | None, state: Progress, *,
                    config: dict[str, Any], fingerprints: dict[str, str | None]) -> Path | None:
    """Save everything a resume needs at `state.step`; keep only this newest checkpoint."""
    if output_dir is None:
        return None
    ckpt = output_dir / CHECKPOINTS / f"step-{state.step:07d}"
    accelerator.save_state(str(ckpt))
    if accelerator.is_main_process:
        payload = {"progress": asdict(state), "config": config, **fingerprints}
        (ckpt / STATE_FILE).write_text(json.dumps(payload), encoding="utf-8")
        for old in _checkpoints(output_dir):
            if old != ckpt:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return ckpt


def _check_same_run(saved: dict[str, Any], config: dict[str, Any],
                    fingerprints: dict[str, str | None], where: Path) -> None:
    """A resume must continue the same run: same data, same trajectory-shaping settings."""
    for key, value in fingerprints.items():
        if saved.get(key) != value:
            what = "training pairs" if key == "data_fingerprint" else "per-pair smoothing"
            raise ModelError(f"cannot resume from {where}: its {what} differ from this run's "
                             "(use another --output or drop --resume)")
    old = saved.get("config", {})
    for name, value in config.items():
        if name not in _FREE_ON_RESUME and old.get(name) != value:
            raise ModelError(f"cannot resume from {where}: it was trained with {name}="
                             f"{old.get(name)!r}, not {value!r} (use another --output or drop "
                             "--resume)")


def restore_checkpoint(accelerator: Accelerator, output_dir: Path, *, config: dict[str, Any],
                       fingerprints: dict[str, str | None]) -> Progress | None:
    """Load the newest checkpoint into the prepared objects; None when there is none."""
    found = _checkpoints(output_dir)
    if not found:
        return None
    ckpt = found[-1]
    try:
        saved = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{ckpt / STATE_FILE}: unreadable ({e})") from e
    _check_same_run(saved, config, fingerprints, ckpt)
    accelerator.load_state(str(ckpt))
    return Progress(**saved["progress"])


def clear_checkpoints(output_dir: Path) -> None:
    shutil.rmtree(output_dir / CHECKPOINTS, ignore_errors=True)


def finished_run(output_dir: Path, *, config: dict[str, Any],
                 fingerprints: dict[str, str | None]) -> dict[str, Any] | None:
    """The rewardlab.json of a complete run of this very config and data, else None."""
    path = output_dir / INFO_FILE
    if not path.exists():
        return None
    try:
        info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a half-written record: train again
    if not info.get("complete"):
        return None
    _check_same_run(info, config, fingerprints, output_dir)
    return info


def run_info(*, config: dict[str, Any], state: Progress, fingerprints: dict[str, str | None],
             lr: float, precision: str, n_pairs: int, n_truncated: int,
             n_response_truncated: int, total_steps: int, num_processes: int) -> dict[str, Any]:
    """The rewardlab.json record of a run (also `RewardModel.info` after training)."""
    import torch
    import transformers

    return {
        "rewardlab_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": config,
        "lr": lr,
        "precision": precision,
        "num_processes": num_processes,
        **fingerprints,
        "n_pairs": n_pairs,
        "n_truncated": n_truncated,
        "n_response_truncated": n_response_truncated,
        "steps": state.step,
        "total_steps": total_steps,
        "complete": state.step == total_steps,
        "train_loss": state.epoch_mean_loss,
        "train_accuracy": state.epoch_accuracy,
        "train_seconds": state.seconds,
        "history": state.history,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
