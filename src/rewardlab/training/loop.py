"""Bradley-Terry reward model training: `TrainConfig` → `train_reward_model` → `TrainResult`.

Fast by construction: every text is tokenized once, batches group pairs of similar length and pad
only to their longest row, chosen and rejected go through the model in ONE forward, BERT-family
backbones run packed, all behind one call (`fast_forward`, see `rewardlab.training.fast`), bf16
autocast runs where the hardware does it faster, and accelerate places the model and splits the work
across processes.
Checkpoints hold model, optimizer, scheduler, RNG and the position in the data plan, so a resumed
run equals an uninterrupted one.

>>> # result = train_reward_model(pairs, config=TrainConfig(epochs=1), output_dir=Path("out/rm"))
>>> # result.model.score(["Human: hi"], ["Hello! How can I help?"])
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from rewardlab.data.pairs import PreferencePair, fingerprint_pairs
from rewardlab.errors import ModelError
from rewardlab.models.backbones import load_backbone
from rewardlab.models.batching import PairEncoding, encode_pairs, length_grouped_batches, pad_rows
from rewardlab.models.reward_model import RewardModel
from rewardlab.training.checkpoint import (
    Progress,
    clear_checkpoints,
    finished_run,
    restore_checkpoint,
    run_info,
    save_checkpoint,
    smoothing_fingerprint,
)
from rewardlab.training.config import TrainConfig
from rewardlab.training.fast import Restore, fast_forward
from rewardlab.training.runtime import disable_dropout, make_accelerator, training_context

__all__ = ["TrainResult", "bradley_terry_loss", "train_reward_model"]


@dataclass
class TrainResult:
    """What a run produced; `train_loss`/`train_accuracy` are over the last epoch's pairs."""

    output_dir: Path | None
    model: RewardModel
    history: list[dict[str, Any]]  # one entry every logging_steps: step, epoch, loss, accuracy, lr
    train_loss: float
    train_accuracy: float
    n_pairs: int
    n_truncated: int
    seconds: float
    n_response_truncated: int = 0
    precision: str = "fp32"
    steps: int = 0
    complete: bool = True  # False when max_steps stopped the run early


def bradley_terry_loss(rewards: torch.Tensor, *, margin: float = 0.0,
                       smoothing: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BT loss of (2B,) rewards, chosen rows first; `smoothing` (B,) is per-pair ε.

    >>> round(float(bradley_terry_loss(torch.tensor([0.0, 0.0]))), 4)  # log 2
    0.6931
    """
    r_c, r_r = rewards.chunk(2)  # (B,), (B,)
    if smoothing is None:
        return -F.logsigmoid(r_c - r_r - margin).mean()
    d = r_c - r_r - margin  # (B,)
    # conservative BT: the label is wrong with probability ε, so ε of the pull points the other way
    return (-(1 - smoothing) * F.logsigmoid(d) - smoothing * F.logsigmoid(-d)).mean()


@dataclass
class _Run:
    """The objects one training run threads through its steps."""

    config: TrainConfig
    accelerator: Accelerator
    model: Any  # what runs the forward: the backbone, or its packed wrapper
    tokenizer: Any
    optimizer: Any
    scheduler: Any
    data: PairEncoding
    smoothing: np.ndarray | None  # (N,) per-pair ε, None when all zero
    plan: list[tuple[int, list[list[int]]]]  # per optimizer step: (epoch, micro-batches of indices)
    output_dir: Path | None
    fingerprints: dict[str, str | None]  # data_fingerprint, smoothing_fingerprint
    precision: str
    restore: Restore  # the trained forward → the plain model (undoes the fast path)


def _plan(lengths: np.ndarray, config: TrainConfig, *, rank: int, world: int
          ) -> list[tuple[int, list[list[int]]]]:
    """Every optimizer step of every epoch, fixed by the seed: resume = skip the first k steps."""
    per_step = config.grad_accum * world
    plan = []
    for epoch in range(config.epochs):
        batches = length_grouped_batches(lengths, batch_size=config.batch_size, seed=config.seed,
                                         epoch=epoch)
        for j in range(0, len(batches), per_step):
            group = batches[j:j + per_step]
            if world > 1:  # every process needs a micro-batch to stay in lockstep: wrap around
                group += [batches[k % len(batches)] for k in range(per_step - len(group))]
            plan.append((epoch, group[rank::world]))
    return plan


def _optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device
               ) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]  # biases, norms
    # fused: one kernel for all parameters (~9% of a MiniLM CPU step saved); CPU and CUDA have it
    fused = True if device.type in ("cpu", "cuda") else None
    return torch.optim.AdamW(groups, lr=config.resolved_lr(), fused=fused)


def _collate(run: _Run, idx: list[int]) -> dict[str, torch.Tensor]:
    """(2B, T) inputs: the B chosen rows first, then the B rejected rows."""
    c, r = run.data.chosen, run.data.rejected
    ids = [c.input_ids[i] for i in idx] + [r.input_ids[i] for i in idx]
    types = None
    if c.token_type_ids is not None and r.token_type_ids is not None:
        types = [c.token_type_ids[i] for i in idx] + [r.token_type_ids[i] for i in idx]
    tok = run.tokenizer
    return pad_rows(ids, types, pad_id=tok.pad_token_id, pad_type_id=tok.pad_token_type_id,
                    padding_side=tok.padding_side, device=run.accelerator.device)


def _train_step(run: _Run, batches: list[list[int]]) -> tuple[float, int, int]:
    """One optimizer step over the step's micro-batches → (loss × pairs, correct, pairs)."""
    acc, model, config = run.accelerator, run.model, run.config
    n_step = sum(len(b) for b in batches)
    loss_sum, correct = 0.0, 0
    for k, idx in enumerate(batches):
        inputs = _collate(run, idx)
        eps = (torch.as_tensor(run.smoothing[idx], dtype=torch.float32, device=acc.device)
               if run.smoothing is not None else None)  # (B,)
        # gradients are all-reduced across processes only on the step's last micro-batch
        with acc.no_sync(model) if k < len(batches) - 1 else contextlib.nullcontext():
            rewards = model(**inputs).logits[:, 0].float()  # (2B,) chosen first, then rejected
            loss = bradley_terry_loss(rewards, margin=config.margin, smoothing=eps)
            acc.backward(loss * len(idx) / n_step)
        r_c, r_r = rewards.detach().chunk(2)
        loss_sum += float(loss.detach()) * len(idx)
        correct += int((r_c > r_r).sum())
    if config.max_grad_norm > 0:
        acc.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_sum, correct, n_step


def _train_loop(run: _Run, state: Progress, *, progress: bool) -> bool:
    """Run the remaining plan; True when `max_steps` stopped it early."""
    config, total = run.config, len(run.plan)
    # in a log file (no terminal) a redraw every 0.1 s would be one line of megabytes: every 30 s
    bar = tqdm(total=total, initial=state.step, desc="train", unit="step", dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0,
               disable=not progress or not run.accelerator.is_main_process)
    run.model.train()
    for epoch, batches in run.plan[state.step:]:
        lr = run.scheduler.get_last_lr()[0]
        t0 = time.perf_counter()
        state.record(epoch, *_train_step(run, batches))
        state.seconds += time.perf_counter() - t0
        if state.step % config.logging_steps == 0 or state.step == total:
            state.log(lr)
        bar.set_postfix(loss=f"{state.epoch_mean_loss:.4f}", acc=f"{state.epoch_accuracy:.3f}",
                        refresh=False)  # drawn by update(), at most every mininterval
        bar.update(1)
        stop = bool(config.max_steps) and state.step >= config.max_steps and state.step < total
        if stop or (config.save_steps and state.step % config.save_steps == 0 and state.step < total):
            save_checkpoint(run.accelerator, run.output_dir, state, config=dataclasses.asdict(config),
                            fingerprints=run.fingerprints, scheduler=run.scheduler)
        if stop:
            bar.close()
            return True
    bar.close()
    return False


def _smoothing(pairs: Sequence[PreferencePair], smoothing: Sequence[float] | None,
               config: TrainConfig) -> np.ndarray | None:
    """(N,) per-pair ε (explicit list overrides config.label_smoothing), None when all zero."""
    if smoothing is not None and len(smoothing) != len(pairs):
        raise ModelError(f"smoothing has {len(smoothing)} values for {len(pairs)} pairs")
    eps = (np.asarray(smoothing, dtype=np.float64) if smoothing is not None
           else np.full(len(pairs), config.label_smoothing))
    if ((eps < 0) | (eps >= 0.5)).any():
        raise ModelError("per-pair smoothing must be in [0, 0.5)")
    return eps if eps.any() else None


def _setup(pairs: list[PreferencePair], config: TrainConfig, output_dir: Path | None,
           eps: np.ndarray | None, fingerprints: dict[str, str | None]) -> _Run:
    accelerator, precision = make_accelerator(config.precision, model=config.model)
    set_seed(config.seed)
    model, tokenizer = load_backbone(config.model, max_length=config.max_length, seed=config.seed)
    data = encode_pairs(tokenizer, [p.prompt_text for p in pairs], [p.chosen for p in pairs],
                        [p.rejected for p in pairs], max_length=config.max_length)
    plan = _plan(data.lengths, config, rank=accelerator.process_index,
                 world=accelerator.num_processes)
    if not config.dropout:
        disable_dropout(model)
    # the same rewards with less work (packed forward, kernels, …): a wrapper, the weights stay put
    forward, restore = fast_forward(model, device=accelerator.device, precision=precision,
                                    processes=accelerator.num_processes,
                                    padding_side=tokenizer.padding_side)
    optimizer = _optimizer(forward, config, accelerator.device)
    scheduler = get_scheduler("linear", optimizer, num_training_steps=len(plan),
                              num_warmup_steps=round(config.warmup_ratio * len(plan)))
    # the scheduler is not registered with accelerate: it would pickle it and load it back with
    # weights_only=False; save_checkpoint/restore_checkpoint keep its state as JSON instead
    forward, optimizer = accelerator.prepare(forward, optimizer)
    return _Run(config, accelerator, forward, tokenizer, optimizer, scheduler, data, eps, plan,
                output_dir, fingerprints, precision, restore)


def train_reward_model(pairs: Sequence[PreferencePair], *, config: TrainConfig,
                       output_dir: Path | None = None, resume: bool = False,
                       smoothing: Sequence[float] | None = None,
                       progress: bool = True) -> TrainResult:
    """Train a Bradley-Terry reward model on `pairs`; save it to `output_dir` when given.

    `smoothing` gives each pair its own label-smoothing ε (the `soft` treatment); `resume`
    continues from the last checkpoint in `output_dir` (or returns a finished run as is).
    """
    start = time.perf_counter()
    pairs = list(pairs)
    if not pairs:
        raise ModelError("no training pairs")
    eps = _smoothing(pairs, smoothing, config)
    fingerprints = {"data_fingerprint": fingerprint_pairs(pairs),
                    "smoothing_fingerprint": smoothing_fingerprint(eps)}
    output_dir = Path(output_dir) if output_dir is not None else None
    if resume and output_dir is not None:
        done = finished_run(output_dir, config=dataclasses.asdict(config), fingerprints=fingerprints)
        if done is not None:
            return _result_from_info(output_dir, done)
    run = _setup(pairs, config, output_dir, eps, fingerprints)
    state = Progress()
    if resume and output_dir is not None:
        state = restore_checkpoint(run.accelerator, output_dir, config=dataclasses.asdict(config),
                                   fingerprints=fingerprints, scheduler=run.scheduler) or state
    elif output_dir is not None and run.accelerator.is_main_process:
        clear_checkpoints(output_dir)  # a fresh run must never resume from an older run's state
    with training_context(run.accelerator.device, model=config.model):
        stopped = _train_loop(run, state, progress=progress)
    return _finish(run, state, stopped=stopped, started=start)


def _finish(run: _Run, state: Progress, *, stopped: bool, started: float) -> TrainResult:
    acc = run.accelerator
    acc.wait_for_everyone()
    # keep_fp32_wrapper=False: scoring after training runs in fp32, exactly like a reloaded model
    model = run.restore(acc.unwrap_model(run.model, keep_fp32_wrapper=False))
    rm = RewardModel(model, run.tokenizer, max_length=run.config.max_length,
                     batch_size=run.config.eval_batch_size)
    data = run.data
    info = run_info(config=dataclasses.asdict(run.config), state=state, fingerprints=run.fingerprints,
                    lr=run.config.resolved_lr(), precision=run.precision,
                    n_pairs=len(data), n_truncated=int(data.truncated.sum()),
                    n_response_truncated=int(data.response_truncated.sum()),
                    total_steps=len(run.plan), num_processes=acc.num_processes)
    rm.info = info
    if run.output_dir is not None and acc.is_main_process:
        rm.save(run.output_dir, info=info)
        if not stopped:
            clear_checkpoints(run.output_dir)  # the final model is the artifact; states are large
    acc.wait_for_everyone()
    return _result(run.output_dir, rm, info, seconds=time.perf_counter() - started)


def _result(output_dir: Path | None, rm: RewardModel, info: dict[str, Any], *,
            seconds: float) -> TrainResult:
    return TrainResult(output_dir=output_dir, model=rm, history=info["history"],
                       train_loss=info["train_loss"], train_accuracy=info["train_accuracy"],
                       n_pairs=info["n_pairs"], n_truncated=info["n_truncated"], seconds=seconds,
                       n_response_truncated=info["n_response_truncated"],
                       precision=info["precision"], steps=info["steps"],
                       complete=info["complete"])


def _result_from_info(output_dir: Path, info: dict[str, Any]) -> TrainResult:
    """A finished run found on --resume: reload it instead of training again."""
    return _result(output_dir, RewardModel.load(output_dir), info, seconds=0.0)
