"""Training state on disk: resumable checkpoints and the run record (`rewardlab.json`).

A resumable checkpoint is `OUT/checkpoints/step-NNNNNNN/`: accelerate's `save_state` (model
weights as safetensors, optimizer), `scheduler.json` (the LR scheduler), `rng_state_RANK.json`
(every RNG of each process) plus `trainer_state.json` (`Progress`: position in the data plan,
running sums, history). `trainer_state.json` is written last and atomically, so its presence marks
a complete checkpoint. Only the newest checkpoint is kept; a finished run removes them all, since
the final `save_pretrained` directory is the artifact.

Resume executes nothing from disk: a checkpoint folder may come from anywhere, and a pickle can run
code when loaded. So restore reads no pickle but through `torch.load(weights_only=True)` (tensors
and plain containers only; anything else is refused with a ModelError), reads the scheduler and RNG
states from JSON, and never reads the pickles accelerate writes beside them (`random_states_*.pkl`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import OPTIMIZER_NAME, SAFE_MODEL_NAME, SCALER_NAME
from safetensors.torch import load_model
from transformers import AutoModelForSequenceClassification

from rewardlab._version import __version__
from rewardlab.errors import ModelError
from rewardlab.models.backbones import first_line
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
    "gather_model",
]

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
SCHEDULER_FILE = "scheduler.json"
log = logging.getLogger("rewardlab")
# Settings that may change between an interrupted run and its resume: they do not shape the weights.
_FREE_ON_RESUME = frozenset({"save_steps", "logging_steps", "eval_batch_size", "max_steps"})
# TrainConfig fields newer than some saved runs, with the value those runs trained with
_ADDED_FIELDS: dict[str, Any] = {"ties": "drop", "tie_model": None, "ranking": "pairs",
                                 "margin_from_scores": False}


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
    found = ([d for d in root.glob("step-*") if d.name[5:].isdigit() and (d / STATE_FILE).exists()]
             if root.is_dir() else [])
    return sorted(found, key=lambda d: int(d.name.split("-")[1]))


def _rng_file(accelerator: Accelerator) -> str:
    return f"rng_state_{accelerator.process_index}.json"


def _rng_state() -> dict[str, Any]:
    """Every RNG of this process as plain JSON numbers."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, np.asarray(keys).tolist(), pos, has_gauss, cached],
            "torch": torch.get_rng_state().tolist(), "cuda": cuda}


def _write_atomically(path: Path, text: str) -> None:
    """Write then rename: a reader (or a killed run) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_checkpoint(accelerator: Accelerator, output_dir: Path | None, state: Progress, *,
                    config: dict[str, Any], fingerprints: dict[str, str | None],
                    scheduler: Any = None, extra: dict[str, Any] | None = None) -> Path | None:
    """Save everything a resume needs at `state.step`; keep only this newest checkpoint.

    `extra`: JSON-able state of the run outside the prepared model (a tie model's parameter),
    given back to `restore_checkpoint`'s `extra`."""
    if output_dir is None:
        return None
    ckpt = output_dir / CHECKPOINTS / f"step-{state.step:07d}"
    accelerator.save_state(str(ckpt))  # model (safetensors) + optimizer; nothing registered
    (ckpt / _rng_file(accelerator)).write_text(json.dumps(_rng_state()), encoding="utf-8")
    accelerator.wait_for_everyone()  # every process's files are there before the state marks it complete
    if accelerator.is_main_process:
        if scheduler is not None:
            (ckpt / SCHEDULER_FILE).write_text(json.dumps(scheduler.state_dict()), encoding="utf-8")
        payload = {"progress": asdict(state), "config": config, **fingerprints,
                   "num_processes": accelerator.num_processes}
        if extra is not None:
            payload["extra"] = extra
        _write_atomically(ckpt / STATE_FILE, json.dumps(payload))
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
    if not isinstance(old, dict):  # a hand-edited or hostile record: one line, not a traceback
        raise ModelError(f"cannot resume from {where}: its config must be an object, got "
                         f"{type(old).__name__}")
    for name, value in config.items():
        # a field added since that run was saved (issue 32's ties, ranking, …) had its default then
        if name not in old and name in _ADDED_FIELDS:
            old = {**old, name: _ADDED_FIELDS[name]}
        if name not in _FREE_ON_RESUME and old.get(name) != value:
            raise ModelError(f"cannot resume from {where}: it was trained with {name}="
                             f"{old.get(name)!r}, not {value!r} (use another --output or drop "
                             "--resume)")


def _check_same_processes(saved: Any, processes: int, where: Path) -> None:
    """A step of the plan is grad_accum × processes batches: the same steps need as many processes."""
    if saved != processes:
        raise ModelError(f"cannot resume from {where}: it ran as {saved} process(es), this run has "
                         f"{processes} (its steps hold other batches); launch {saved}, or use "
                         "another --output")


def _read_state(ckpt: Path) -> dict[str, Any] | None:
    """The checkpoint's trainer_state.json, None (with a warning) when it is unreadable."""
    try:
        saved = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        log.warning("resume: %s is unreadable (%s); skipping that checkpoint", ckpt / STATE_FILE, e)
        return None
    if not isinstance(saved, dict) or not isinstance(saved.get("progress"), dict):
        log.warning("resume: %s holds no progress record; skipping that checkpoint", ckpt / STATE_FILE)
        return None
    return saved


def _load_tensors(path: Path) -> Any:
    """torch.load of tensors and plain containers only: a pickle that would run code is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as e:
        # first_line words a refused pickle as what rewardlab accepts, not torch's advice to retry
        # with weights_only=False (the unsafe path)
        raise ModelError(f"{path}: refused, not plain tensor data ({first_line(e)})") from e


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: unreadable ({e})") from e


def _set_rng_state(rng: Any, path: Path) -> None:
    """Put back every RNG of this process; a malformed record is a ModelError naming the file."""
    try:
        version, internal, gauss = rng["python"]
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        random.setstate((version, tuple(internal), gauss))
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
        if torch.cuda.is_available() and rng["cuda"]:
            torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in rng["cuda"]])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: not an RNG state record ({e})") from e


def _load_state(accelerator: Accelerator, ckpt: Path, scheduler: Any) -> None:
    """accelerate's load_state without its pickle loads (it reads registered objects and RNG
    states with weights_only=False); the pickles and JSON are read before anything is changed."""
    # the objects accelerator.prepare registered: the same ones save_state wrote, in that order
    models, optimizers = accelerator._models, accelerator._optimizers
    names = [f"{SAFE_MODEL_NAME}{f'_{i}' if i else ''}.safetensors" for i in range(len(models))]
    for name in names:
        if not (ckpt / name).is_file():
            raise ModelError(f"{ckpt / name}: missing (resume reads model weights as safetensors)")
    opt_states = [_load_tensors(ckpt / f"{OPTIMIZER_NAME}{f'_{i}' if i else ''}.bin")
                  for i in range(len(optimizers))]
    scaler_state = (_load_tensors(ckpt / SCALER_NAME) if accelerator.scaler is not None else None)
    sched_state = _load_json(ckpt / SCHEDULER_FILE) if scheduler is not None else None
    rng = _load_json(ckpt / _rng_file(accelerator))
    try:
        for model, name in zip(models, names):
            load_model(model, str(ckpt / name), device="cpu")
        for optimizer, opt_state in zip(optimizers, opt_states):
            optimizer.load_state_dict(opt_state)
        if scaler_state is not None:
            accelerator.scaler.load_state_dict(scaler_state)
        if scheduler is not None:
            scheduler.load_state_dict(sched_state)
    except (KeyError, TypeError, ValueError, RuntimeError, OSError) as e:
        raise ModelError(f"{ckpt}: does not fit this run ({e})") from e
    _set_rng_state(rng, ckpt / _rng_file(accelerator))


def restore_checkpoint(accelerator: Accelerator, output_dir: Path, *, config: dict[str, Any],
                       fingerprints: dict[str, str | None], scheduler: Any = None,
                       extra: Callable[[Any, Path], None] | None = None) -> Progress | None:
    """Load the newest readable checkpoint into the prepared objects; None when there is none.

    A checkpoint whose trainer_state.json is unreadable (half-written) is skipped for the one
    before it; with none left the run starts from scratch, and says so. `extra` is called with
    what `save_checkpoint` saved as its `extra` (None if nothing) and the file it came from: it
    puts that state back, or raises `ModelError`.
    """
    found = _checkpoints(output_dir)
    if not found:
        log.warning("resume: no checkpoint in %s; training from scratch", output_dir / CHECKPOINTS)
        return None
    for ckpt in reversed(found):
        saved = _read_state(ckpt)
        if saved is None:
            continue
        _check_same_run(saved, config, fingerprints, ckpt)
        _check_same_processes(saved.get("num_processes", 1), accelerator.num_processes, ckpt)
        try:
            progress = Progress(**saved["progress"])
        except TypeError as e:
            raise ModelError(f"{ckpt / STATE_FILE}: not a progress record ({e})") from e
        if extra is not None:  # checked before the weights are touched
            extra(saved.get("extra"), ckpt / STATE_FILE)
        _load_state(accelerator, ckpt, scheduler)
        return progress
    log.warning("resume: no readable checkpoint in %s; training from scratch",
                output_dir / CHECKPOINTS)
    return None


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
    if not isinstance(info, dict):
        raise ModelError(f"{path}: expected a JSON object, got {type(info).__name__}")
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


def gather_model(accelerator: Accelerator, prepared: Any, output_dir: Path) -> Any:
    """The trained model, whole, in every process, from a run that holds it in shards (FSDP,
    DeepSpeed): `get_state_dict` gathers the full weights on the main process (a collective call:
    every process makes it), the main process writes them as a standard checkpoint into
    `output_dir`, and every process reads that back onto its device, in the saved dtype (so the
    whole model must fit one device, for the train-set reward statistics that follow)."""
    import rewardlab.models.bow  # noqa: F401  (registers the `bow` architecture with the Auto classes)

    state = accelerator.get_state_dict(prepared)
    if accelerator.is_main_process:
        accelerator.unwrap_model(prepared).save_pretrained(output_dir, state_dict=state)
    accelerator.wait_for_everyone()
    model = AutoModelForSequenceClassification.from_pretrained(output_dir, dtype="auto")
    return model.to(accelerator.device)
