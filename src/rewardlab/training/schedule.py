"""The learning-rate schedule: linear warm-up, then linear decay to 0 (transformers' "linear").

The same multiplier as `transformers.get_linear_schedule_with_warmup`, written here because importing
`transformers.optimization` pulls in the Trainer's utilities and, through them, peft: ~2–3 s of a
CPU run's start for one formula. The state it saves (`LambdaLR.state_dict()`) is the same as
transformers' scheduler's, so checkpoints resume either way.

>>> import torch
>>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
>>> sched = linear_schedule(opt, warmup_steps=2, total_steps=6)
>>> lrs = []
>>> for _ in range(6):
...     lrs.append(round(sched.get_last_lr()[0], 3)); opt.step(); sched.step()
>>> lrs
[0.0, 0.5, 1.0, 0.75, 0.5, 0.25]
"""

from __future__ import annotations

import functools

import torch

__all__ = ["linear_schedule"]


def _linear_multiplier(step: int, *, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def linear_schedule(optimizer: torch.optim.Optimizer, *, warmup_steps: int,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LR × step/warmup for the first `warmup_steps`, then down linearly to 0 at `total_steps`."""
    rule = functools.partial(_linear_multiplier, warmup_steps=warmup_steps, total_steps=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, rule)
