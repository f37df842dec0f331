"""Where a training step's time goes, grouped (forward-once) vs the pairwise expansion, bow, fp32.

The companion of `benchmarks/ranking.py` (iii): each path's step taken apart phase by phase
(inputs, forward, loss, backward, accuracy bookkeeping, gradient clipping, optimizer, scheduler)
over one epoch of `synthetic:n=1500,k=4,ties=0.2`, timed by the process CPU clock (load from other
processes inflates it less than the wall clock), the minimum per phase over `--reps` epochs. The
phases are the steps' own calls (`training.grouped._rated_step`, `training.loop._train_step`),
run one by one here so that each can be timed; the sum is within a few % of a real step.

    .venv/bin/python benchmarks/ranking_steps.py --reps 4 --output benchmarks/ranking_steps.json
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ranking import SPEC, config, emit  # the same data and record format as its companion

from rewardlab.data.synthetic import read_synthetic_rated
from rewardlab.training import grouped, loop
from rewardlab.training.runtime import training_context
from rewardlab.training.train_config import TrainConfig

PHASES = ("inputs", "forward", "loss", "backward", "bookkeeping", "clip", "optimizer", "scheduler")
ROW_PHASES = ("inputs", "forward", "loss", "backward")  # their work grows with the step's rows


def _config(batch_size: int) -> TrainConfig:
    return config(epochs=1, batch_size=batch_size)  # ranking.py's settings, one epoch


def _grouped_batch(run: Any, idx: list[int], tick: Callable[[str], None]) -> None:
    at = np.asarray(idx, dtype=np.int64)
    k = run.rated.scores.shape[1]
    inputs, where = grouped._collate(run, at)
    labels = run.labels.take(at)
    tick("inputs")
    flat = run.model(**inputs).logits[:, 0].float()
    rewards = (flat.view(len(at), k) if where is None
               else flat.new_zeros(len(at) * k).index_copy(0, where, flat).view(len(at), k))
    tick("forward")
    loss = grouped._loss(run, rewards, labels)
    tick("loss")
    run.accelerator.backward(loss)
    tick("backward")
    float(loss.detach()), grouped._correct(rewards.detach(), labels), run.items[at].sum()
    tick("bookkeeping")


def _expanded_batch(run: Any, idx: list[int], tick: Callable[[str], None]) -> None:
    inputs = loop._collate(run, idx)
    tick("inputs")
    rewards = run.model(**inputs).logits[:, 0].float()
    tick("forward")
    loss = loop.bradley_terry_loss(rewards)
    tick("loss")
    run.accelerator.backward(loss)
    tick("backward")
    r_c, r_r = rewards.detach().chunk(2)
    float(loss.detach()), int((r_c > r_r).sum())
    tick("bookkeeping")


class _Clock:
    """CPU seconds spent per phase: `tick(name)` charges the time since the last tick to `name`."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys(PHASES, 0.0)
        self.last = time.process_time()

    def start(self) -> None:
        self.last = time.process_time()

    def tick(self, name: str) -> None:
        now = time.process_time()
        self.spent[name] += now - self.last
        self.last = time.process_time()


def phases(run: Any, batch: Callable[..., None], reps: int) -> dict[str, float]:
    """ms per step of each phase: the minimum over `reps` epochs of the plan."""
    best = dict.fromkeys(PHASES, float("inf"))
    run.model.train()
    for _ in range(reps):
        clock = _Clock()
        for step in run.plan:
            clock.start()
            for idx in step.batches:
                batch(run, idx, clock.tick)
            run.accelerator.clip_grad_norm_(run.model.parameters(), run.config.max_grad_norm)
            clock.tick("clip")
            run.optimizer.step()
            clock.tick("optimizer")
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            clock.tick("scheduler")
        for name in PHASES:
            best[name] = min(best[name], clock.spent[name] / len(run.plan) * 1e3)
    return {**best, "step": sum(best.values()), "steps": len(run.plan)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--output", type=Path)
    p.add_argument("--first", choices=("grouped", "expanded"), default="grouped",
                   help="which path is timed first (run both orders: the second tends to be slower)")
    args = p.parse_args()
    train = [r for r in read_synthetic_rated(SPEC).prompts if r.split == "train"]
    pairs = grouped.pairwise_expansion(train)
    per_step = round(8 * len(pairs) / len(train))
    record: dict[str, Any] = {"spec": SPEC, "clock": "process CPU time, min over reps",
                              "reps": args.reps}
    runs = {"grouped": grouped._setup_rated(train, _config(8), None),
            "expanded": loop._setup(pairs, _config(per_step), None, None, {})}
    # one thread, cyclic GC paused: as the real loop runs; the order alternates with --reps
    with training_context(torch.device("cpu"), model="bow"):
        for name in ("grouped", "expanded") if args.first == "grouped" else ("expanded", "grouped"):
            batch = _grouped_batch if name == "grouped" else _expanded_batch
            record[f"{name}_ms"] = phases(runs[name], batch, args.reps)
    record.update(load_avg=os.getloadavg()[0], date=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime()))
    record["step_ratio"] = record["expanded_ms"]["step"] / record["grouped_ms"]["step"]
    # the most forward-once can give here: the ratio if every per-step cost (clip, optimizer,
    # scheduler, bookkeeping) were free and only the phases that grow with the rows were left
    record["row_phases_ratio"] = (sum(record["expanded_ms"][k] for k in ROW_PHASES)
                                  / sum(record["grouped_ms"][k] for k in ROW_PHASES))
    emit(record, args.output)


if __name__ == "__main__":
    main()
