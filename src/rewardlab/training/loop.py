"""Bradley-Terry reward model training: `TrainConfig` → `train_reward_model` → `TrainResult`.

Fast by construction: every text is tokenized once, batches group pairs of similar length and pad
only to their longest row, chosen and rejected go through the model in ONE forward, BERT-family
backbones run packed, all behind one call (`fast_forward`, see `rewardlab.training.fast`), bf16
autocast runs where the hardware does it faster, and accelerate places the model and splits the work
across processes.
Checkpoints hold model, optimizer, scheduler, RNG and the position in the data plan, so a resumed
run equals an uninterrupted one. `train_reward_model`'s docstring has a run on tiny data.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from rewardlab.data.pairs import PreferencePair, fingerprint_pairs
from rewardlab.errors import ModelError
from rewardlab.models.backbones import load_backbone
from rewardlab.models.batching import PairEncoding, encode_pairs, length_grouped_batches, pad_rows
from rewardlab.models.input_rule import InputRule, choose_rule
from rewardlab.models.reward_model import RewardModel, reward_stats
from rewardlab.training.checkpoint import (
    CHECKPOINTS,
    Progress,
    clear_checkpoints,
    finished_run,
    gather_model,
    restore_checkpoint,
    run_info,
    save_checkpoint,
    smoothing_fingerprint,
)
from rewardlab.training.fast import Restore, fast_forward
from rewardlab.training.lora import (
    ADAPTER_DIR,
    Finish,
    adapt_for_training,
    autocast_precision,
    check_weight_dtype,
    unchanged,
)
from rewardlab.training.memory import bound_onednn_cache, released_after
from rewardlab.training.runtime import (
    check_launch,
    disable_dropout,
    fit_deepspeed,
    make_accelerator,
    micro_batch,
    shards_model,
    summed,
    training_context,
)
from rewardlab.training.schedule import linear_schedule
from rewardlab.training.train_config import TrainConfig

__all__ = ["TrainResult", "bradley_terry_loss", "train_reward_model"]

log = logging.getLogger("rewardlab")


@dataclass
class TrainResult:
    """What a run produced; `train_loss`/`train_accuracy` are over the last epoch's pairs.

    Parameters
    ----------
    output_dir : Path or None
        Where the model was saved (None: kept in memory only).
    model : RewardModel
        The trained model, ready to score (fp32 weights on the training device).
    history : list of dict
        One entry every `logging_steps` optimizer steps: step, epoch, loss, accuracy, lr.
    train_loss, train_accuracy : float
        Mean Bradley-Terry loss and share of pairs with r_chosen > r_rejected over the last
        epoch's pairs (ln 2 ≈ 0.693 and 0.5 mean nothing learned).
    n_pairs : int
        Training pairs given.
    n_truncated : int
        Pairs with a side cut to `max_length` tokens.
    seconds : float
        Wall time of the call.
    n_response_truncated : int, default 0
        Pairs with a reply that did not fit `max_length` by itself, so the reply was cut too.
    precision : str, default "fp32"
        The autocast dtype the run used ("fp32" or "bf16"; `auto` resolved).
    steps : int, default 0
        Optimizer steps taken.
    complete : bool, default True
        False when `max_steps` stopped the run before its last epoch.
    n_identical : int, default 0
        Pairs dropped from training because both sides were the same tokens after truncation.
    """

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
    n_identical: int = 0  # pairs dropped: both sides the same tokens (after truncation)


def bradley_terry_loss(rewards: torch.Tensor, *, margin: float | torch.Tensor = 0.0,
                       smoothing: torch.Tensor | None = None,
                       center_coefficient: float = 0.0) -> torch.Tensor:
    """Mean BT loss of (2B,) rewards, chosen rows first; `margin` a number or (B,) per pair,
    `smoothing` (B,) is per-pair ε; `center_coefficient` C adds TRL's C · mean((r_c + r_r)²).

    >>> round(float(bradley_terry_loss(torch.tensor([0.0, 0.0]))), 4)  # log 2
    0.6931
    """
    r_c, r_r = rewards.chunk(2)  # (B,), (B,)
    d = r_c - r_r - margin  # (B,)
    if smoothing is None:
        loss = -F.logsigmoid(d).mean()
    else:  # conservative BT: the label is wrong with probability ε, so ε of the pull points the other way
        loss = (-(1 - smoothing) * F.logsigmoid(d) - smoothing * F.logsigmoid(-d)).mean()
    if center_coefficient:  # TRL's auxiliary loss: rewards centred on 0 (Eisenstein et al., 2023)
        loss = loss + center_coefficient * ((r_c + r_r) ** 2).mean()
    return loss


@dataclass(frozen=True)
class _Step:
    """One optimizer step, as this process runs it."""

    epoch: int
    batches: list[list[int]]  # this process's micro-batches (pair indices)
    pairs: int  # pairs in the whole step, over every process: its loss is their mean
    lockstep: int = 0  # trailing batches repeated only so that every process has one (weight 0)


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
    plan: list[_Step]  # every optimizer step of the run, this process's share of it
    output_dir: Path | None
    fingerprints: dict[str, str | None]  # data_fingerprint, smoothing_fingerprint
    precision: str
    restore: Restore  # the trained forward → the plain model (undoes the fast path)
    finish: Finish = unchanged  # the plain model → the one to save (merges a LoRA adapter)
    margins: np.ndarray | None = None  # (N,) per-pair margins from the data, None when there are none
    rule: InputRule = "text-pair"  # how (prompt, response) became the tokens in `data`
    n_identical: int = 0  # pairs left out of the plan: token-identical sides

    def checkpoint_extra(self) -> dict[str, Any] | None:
        """What a checkpoint keeps of the run beyond the prepared model and optimizer (none)."""
        return None

    def restore_extra(self, saved: Any, where: Path) -> None:
        """Put back what `checkpoint_extra` saved (nothing here)."""


def _start(run: _Run, *, resume: bool) -> Progress:
    """Where the run starts: on `resume`, its last checkpoint in the output folder (with what
    `checkpoint_extra` saved); else step 0, the main process clearing any older run's states."""
    if resume and run.output_dir is not None:
        return restore_checkpoint(run.accelerator, run.output_dir,
                                  config=dataclasses.asdict(run.config),
                                  fingerprints=run.fingerprints, scheduler=run.scheduler,
                                  extra=run.restore_extra) or Progress()
    if run.output_dir is not None and run.accelerator.is_main_process:
        clear_checkpoints(run.output_dir)  # a fresh run must never resume from an older run's state
    return Progress()


def _plan(lengths: np.ndarray, config: TrainConfig, *, rank: int, world: int) -> list[_Step]:
    """Every optimizer step of every epoch, fixed by the seed: resume = skip the first k steps.

    A step is the next `grad_accum × world` batches of the epoch; process `rank` takes every
    world-th of them from the rank-th on, so the processes share each step without overlap and
    the run takes the same steps as one process with `grad_accum × world` (the global batch).
    """
    per_step = config.grad_accum * world
    plan = []
    for epoch in range(config.epochs):
        batches = length_grouped_batches(lengths, batch_size=config.batch_size, seed=config.seed,
                                         epoch=epoch)
        for j in range(0, len(batches), per_step):
            group = batches[j:j + per_step]
            real, pairs = len(group), sum(len(b) for b in group)
            if world > 1:  # every process needs a micro-batch to stay in lockstep: wrap around
                group += [batches[k % len(batches)] for k in range(per_step - len(group))]
            mine = range(rank, len(group), world)
            plan.append(_Step(epoch, [group[i] for i in mine], pairs, sum(i >= real for i in mine)))
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
                    padding_side=tok.padding_side, device=run.accelerator.device,
                    position_ids=tok.padding_side == "left" and run.rule != "text-pair")


def _train_step(run: _Run, step: _Step) -> tuple[float, int, int]:
    """One optimizer step over this process's micro-batches → (loss × pairs, correct, pairs)."""
    acc, model, config = run.accelerator, run.model, run.config
    # the step's loss is the mean over all its pairs: the processes' gradients are averaged, and
    # backward divides by accelerate's gradient-accumulation steps (DeepSpeed's, else 1)
    scale = acc.num_processes * acc.gradient_accumulation_steps
    real = len(step.batches) - step.lockstep  # the rest only keep the processes in step
    loss_sum, correct, n = 0.0, 0, 0
    for k, idx in enumerate(step.batches):
        inputs = _collate(run, idx)
        eps = (torch.as_tensor(run.smoothing[idx], dtype=torch.float32, device=acc.device)
               if run.smoothing is not None else None)  # (B,)
        margin = (config.margin + torch.as_tensor(run.margins[idx], dtype=torch.float32,
                                                  device=acc.device)
                  if run.margins is not None else config.margin)  # (B,) or a number
        # gradients are all-reduced across processes only on the step's last micro-batch
        with micro_batch(acc, model, last=k == len(step.batches) - 1):
            rewards = model(**inputs).logits[:, 0].float()  # (2B,) chosen first, then rejected
            loss = bradley_terry_loss(rewards, margin=margin, smoothing=eps,
                                      center_coefficient=config.center_rewards_coefficient)
            acc.backward(loss * (len(idx) * scale if k < real else 0) / step.pairs)
        if k < real:
            r_c, r_r = rewards.detach().chunk(2)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((r_c > r_r).sum())
            n += len(idx)
    if config.max_grad_norm > 0:
        acc.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_sum, correct, n


def _train_loop(run: _Run, state: Progress, *, progress: bool,
                train_step: Callable[[Any, _Step], tuple[float, int, int]] = _train_step) -> bool:
    """Run the remaining plan (each step by `train_step`); True when `max_steps` stopped it early."""
    config, total = run.config, len(run.plan)
    # in a log file (no terminal) a redraw every 0.1 s would be one line of megabytes: every 30 s
    bar = tqdm(total=total, initial=state.step, desc="train", unit="step", dynamic_ncols=True,
               mininterval=0.1 if sys.stderr.isatty() else 30.0,
               disable=not progress or not run.accelerator.is_main_process)
    run.model.train()
    for step in run.plan[state.step:]:
        lr = run.scheduler.get_last_lr()[0]
        t0 = time.perf_counter()
        loss_sum, correct, pairs = summed(run.accelerator, train_step(run, step))  # all processes
        if not math.isfinite(loss_sum):  # a host float already: the check adds no device sync
            bar.close()
            raise _diverged(run, step=state.step + 1, total=total, what=f"the loss is {loss_sum}")
        state.record(step.epoch, loss_sum, int(correct), int(pairs))
        state.seconds += time.perf_counter() - t0
        if state.step % config.logging_steps == 0 or state.step == total:
            state.log(lr)
        bar.set_postfix(loss=f"{state.epoch_mean_loss:.4f}", acc=f"{state.epoch_accuracy:.3f}",
                        refresh=False)  # drawn by update(), at most every mininterval
        bar.update(1)
        stop = bool(config.max_steps) and state.step >= config.max_steps and state.step < total
        if stop or (config.save_steps and state.step % config.save_steps == 0 and state.step < total):
            save_checkpoint(run.accelerator, run.output_dir, state, config=dataclasses.asdict(config),
                            fingerprints=run.fingerprints, scheduler=run.scheduler,
                            extra=run.checkpoint_extra())
        if stop:
            bar.close()
            return True
    bar.close()
    return False


def _diverged(run: _Run, *, step: int, total: int, what: str) -> ModelError:
    """The error that stops a run whose numbers left the finite range: every process sees the same
    summed loss, so all of them stop together, and nothing is saved as a finished model."""
    saved = (f"; the last resumable checkpoint (if any) is in {run.output_dir / CHECKPOINTS}"
             if run.output_dir is not None and run.config.save_steps else "")
    return ModelError(f"training diverged at step {step} of {total}: {what}; nothing saved as a "
                      f"finished model{saved}. Lower --lr (this run: {run.config.resolved_lr():g})")


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


def _margins(pairs: Sequence[PreferencePair]) -> np.ndarray | None:
    """(N,) per-pair margins from the data's `margin` column (0 where a pair has none), or None."""
    given = [p.margin for p in pairs]
    n_given = sum(m is not None for m in given)
    if n_given == 0:
        return None
    if n_given < len(pairs):
        log.warning("%d of %d training pairs have no margin: they train with margin 0 (+ --margin)",
                    len(pairs) - n_given, len(pairs))
    return np.array([m or 0.0 for m in given], dtype=np.float64)


@dataclass
class _Loaded:
    """The backbone of a run, placed and adapted, before any data: what every kind of run shares."""

    accelerator: Accelerator
    precision: str
    model: Any
    tokenizer: Any
    rule: InputRule
    finish: Finish


def _load_model(config: TrainConfig, *, resume: bool, has_output: bool) -> _Loaded:
    bound_onednn_cache()  # before any bf16 matmul (`auto` precision times some): read once
    accelerator, precision = make_accelerator(autocast_precision(config), model=config.model)
    check_launch(accelerator, resume=resume, save_steps=config.save_steps,
                 max_steps=config.max_steps, lora_r=config.lora_r, has_output=has_output)
    check_weight_dtype(config, device=accelerator.device)
    set_seed(config.seed)
    model, tokenizer = load_backbone(config.model, max_length=config.max_length, seed=config.seed,
                                     dtype=config.torch_dtype)
    if not config.dropout:
        disable_dropout(model)  # before LoRA: --lora-dropout is the adapter's own, kept
    rule = choose_rule(tokenizer, model.config)  # text pair, chat template or plain dialogue
    model, finish = adapt_for_training(model, config, device=accelerator.device)
    return _Loaded(accelerator, precision, model, tokenizer, rule, finish)


def _prepare(loaded: _Loaded, config: TrainConfig, *, total_steps: int,
             extra: dict[str, Any] | None = None) -> tuple[Any, Restore, Any, Any]:
    """(forward, restore, optimizer, scheduler) for `total_steps` steps; `extra` is one more
    optimizer parameter group (a tie model's parameter), trained with the model."""
    accelerator = loaded.accelerator
    # the same rewards with less work (packed forward, kernels, …): a wrapper, the weights stay put;
    # not with checkpointing, whose recomputation lives in the stock layers the packed path bypasses,
    # nor under FSDP/DeepSpeed, which gather a layer's weights only when its own forward runs
    forward, restore = (fast_forward(loaded.model, device=accelerator.device,
                                     precision=loaded.precision,
                                     processes=accelerator.num_processes,
                                     padding_side=loaded.tokenizer.padding_side)
                        if not config.gradient_checkpointing and not shards_model(accelerator)
                        else (loaded.model, unchanged))
    optimizer = _optimizer(forward, config, accelerator.device)
    if extra is not None:
        optimizer.add_param_group(extra)
    scheduler = linear_schedule(optimizer, total_steps=total_steps,
                                warmup_steps=round(config.warmup_ratio * total_steps))
    # the scheduler is not registered with accelerate: it would pickle it and load it back with
    # weights_only=False; save_checkpoint/restore_checkpoint keep its state as JSON instead
    fit_deepspeed(accelerator.state.deepspeed_plugin, batch_size=config.batch_size,
                  grad_accum=config.grad_accum, max_grad_norm=config.max_grad_norm)
    forward, optimizer = accelerator.prepare(forward, optimizer)
    return forward, restore, optimizer, scheduler


def _setup(pairs: list[PreferencePair], config: TrainConfig, output_dir: Path | None,
           eps: np.ndarray | None, fingerprints: dict[str, str | None], *,
           resume: bool = False) -> _Run:
    loaded = _load_model(config, resume=resume, has_output=output_dir is not None)
    data = encode_pairs(loaded.tokenizer, [p.prompt_text for p in pairs], [p.chosen for p in pairs],
                        [p.rejected for p in pairs], max_length=config.max_length, rule=loaded.rule)
    keep = _distinct_pairs(data)
    acc = loaded.accelerator
    plan = _plan(data.lengths[keep], config, rank=acc.process_index, world=acc.num_processes)
    if len(keep) < len(data):  # plan positions → pair indices
        plan = [dataclasses.replace(s, batches=[[int(keep[i]) for i in b] for b in s.batches])
                for s in plan]
    forward, restore, optimizer, scheduler = _prepare(loaded, config, total_steps=len(plan))
    return _Run(config, acc, forward, loaded.tokenizer, optimizer, scheduler, data, eps, plan,
                output_dir, fingerprints, loaded.precision, restore, finish=loaded.finish,
                margins=_margins(pairs), rule=loaded.rule, n_identical=len(data) - len(keep))


def _distinct_pairs(data: PairEncoding) -> np.ndarray:
    """Indices of the pairs whose sides differ as tokens; the others (identical texts, or cut to
    the same tokens) cannot teach a preference (their loss is log 2 whatever the weights): dropped,
    counted, said."""
    identical = data.identical
    if identical.all():
        raise ModelError(f"all {len(data)} training pairs have token-identical chosen and rejected "
                         f"inputs (after truncation to max_length): nothing to learn")
    if identical.any():
        log.warning("%d of %d training pairs dropped: chosen and rejected are the same tokens "
                    "(after truncation to max_length)", int(identical.sum()), len(data))
    return np.flatnonzero(~identical)


def _check_pair_options(config: TrainConfig) -> None:
    """Rated-data options mean nothing on plain pairs: refused, not ignored."""
    wanted = [flag for flag, on in (("--ties " + config.ties, config.ties != "drop"),
                                    ("--ranking listwise", config.ranking == "listwise"),
                                    ("--margin-from-scores", config.margin_from_scores)) if on]
    if wanted:
        raise ModelError(f"{wanted[0]} needs rated data (K responses with scores, or votes with "
                         "ties: `training.grouped.train_on_rated`); these are plain pairs")


def train_reward_model(pairs: Sequence[PreferencePair], *, config: TrainConfig,
                       output_dir: Path | None = None, resume: bool = False,
                       smoothing: Sequence[float] | None = None,
                       progress: bool = True) -> TrainResult:
    """Train a Bradley-Terry reward model on `pairs`; save it to `output_dir` when given.

    Parameters
    ----------
    pairs : sequence of PreferencePair
        The training pairs (their `split` is not read); at least one.
    config : TrainConfig
        Every option of the run (backbone, epochs, batch size, learning rate, precision, LoRA, …).
    output_dir : Path or None, default None
        Save the model here (a plain transformers checkpoint + tokenizer + rewardlab.json + a model
        card) and the resumable checkpoints of `config.save_steps`; None keeps it in memory.
    resume : bool, default False
        Continue from the last checkpoint in `output_dir` (the same config and pairs, else
        `ModelError`); a finished run there is returned as is, without training.
    smoothing : sequence of float or None, default None
        A label-smoothing ε per pair, in [0, 0.5) (the `soft` treatment of flagged pairs); None
        uses `config.label_smoothing` for every pair.
    progress : bool, default True
        Show a progress bar (on stderr).

    Returns
    -------
    TrainResult
        The trained `RewardModel` and the run's figures (loss, accuracy, history, truncation).

    >>> from rewardlab.data.sources import read_source
    >>> pairs = read_source("synthetic:n=96,noise=0,seed=0", split="train").pairs
    >>> config = TrainConfig(model="bow", epochs=4, precision="fp32", seed=0)
    >>> result = train_reward_model(pairs, config=config, progress=False)
    >>> result.n_pairs, result.train_loss < 0.6931  # below ln 2: it learned which reply is better
    (96, True)
    >>> pair = pairs[0]
    >>> chosen, rejected = result.model.score([pair.prompt_text] * 2, [pair.chosen, pair.rejected])
    >>> chosen > rejected
    True
    """
    start = time.perf_counter()
    pairs = list(pairs)
    if not pairs:
        raise ModelError("no training pairs")
    _check_pair_options(config)
    eps = _smoothing(pairs, smoothing, config)
    fingerprints = {"data_fingerprint": fingerprint_pairs(pairs),
                    "smoothing_fingerprint": smoothing_fingerprint(eps)}
    output_dir = Path(output_dir) if output_dir is not None else None
    if resume and output_dir is not None:
        done = finished_run(output_dir, config=dataclasses.asdict(config), fingerprints=fingerprints)
        if done is not None:
            return _result_from_info(output_dir, done)
    # what the run made and drops is freed when it ends, so the next run in this process starts
    # from the same heap: the optimizer, its state, the packed wrapper, the token ids
    with released_after():
        run = _setup(pairs, config, output_dir, eps, fingerprints, resume=resume)
        state = _start(run, resume=resume)
        with training_context(run.accelerator.device, model=config.model):
            stopped = _train_loop(run, state, progress=progress)
        result = _finish(run, state, stopped=stopped, started=start)
        del run, state
    return result


def _finish(run: _Run, state: Progress, *, stopped: bool, started: float,
            extra_info: dict[str, Any] | None = None) -> TrainResult:
    """The trained model, saved with its rewardlab.json (plus `extra_info`)."""
    acc = run.accelerator
    acc.wait_for_everyone()
    if shards_model(acc):  # FSDP/DeepSpeed: gathered whole (check_launch asked for output_dir)
        assert run.output_dir is not None
        model = gather_model(acc, run.model, run.output_dir)
    else:  # keep_fp32_wrapper=False: scoring after training runs in fp32, like a reloaded model
        model = run.restore(acc.unwrap_model(run.model, keep_fp32_wrapper=False))
    adapter = (run.output_dir / ADAPTER_DIR if run.config.save_adapter and run.output_dir is not None
               and acc.is_main_process else None)
    model = run.finish(model, adapter_dir=adapter)  # LoRA: merged into a plain model
    rm = RewardModel(model, run.tokenizer, max_length=run.config.max_length,
                     batch_size=run.config.eval_batch_size, input_rule=run.rule)
    data = run.data
    info = run_info(config=dataclasses.asdict(run.config), state=state, fingerprints=run.fingerprints,
                    lr=run.config.resolved_lr(), precision=run.precision,
                    n_pairs=len(data), n_truncated=int(data.truncated.sum()),
                    n_response_truncated=int(data.response_truncated.sum()),
                    total_steps=len(run.plan), num_processes=acc.num_processes)
    # OpenRLHF normalises rewards with config.mean/std: measured on the train pairs, trained model
    stats = reward_stats(rm, data, seed=run.config.seed)
    if not (math.isfinite(stats["mean"]) and math.isfinite(stats["std"])):  # the last step blew up
        raise _diverged(run, step=state.step, total=len(run.plan),
                        what="the trained model's rewards are not finite numbers")
    info.update(input_rule=run.rule, n_identical=run.n_identical, reward_stats=stats)
    if extra_info is not None:
        info.update(extra_info)
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
                       complete=info["complete"], n_identical=info.get("n_identical", 0))


def _result_from_info(output_dir: Path, info: dict[str, Any]) -> TrainResult:
    """A finished run found on --resume: reload it instead of training again."""
    return _result(output_dir, RewardModel.load(output_dir), info, seconds=0.0)
