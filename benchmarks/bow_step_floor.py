"""How a bow training step's cost grows with its rows, under three embedding updates (issue 32).

The companion of `benchmarks/ranking.py` (iii): forward-once trains on 32 rows a step where the
pairwise expansion forwards 76 for the same 38 pairs, so it can only be faster by what those extra
rows cost. One bow step (forward, Bradley-Terry loss, backward, norm clip, optimizer) on random
60-token rows, timed at 32 and 76 rows with
  dense:  the table's dense gradient and fused AdamW, as training runs it;
  frozen: no embedding update at all (the floor any embedding update could reach);
  sparse: a sparse embedding gradient, `torch.optim.SparseAdam` for the table, AdamW for the rest.
One thread, as training runs bow; process CPU ms per step, the best of `--reps` blocks of 100
steps, every case timed in each rep in turn.

    .venv/bin/python benchmarks/bow_step_floor.py --output benchmarks/bow_step_floor.json
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ranking import emit

from rewardlab.models.backbones import load_backbone
from rewardlab.training.runtime import training_context

MODES = ("dense", "frozen", "sparse")
ROWS = (32, 76)  # a grouped step's rows and the expansion's, 8 prompts of K = 4 (38 pairs)


def _clip(params: list[torch.nn.Parameter], max_norm: float) -> None:
    """clip_grad_norm_ that also takes sparse gradients (torch's refuses them)."""
    grads = []
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            grads.append(p.grad._values())
        elif p.grad is not None:
            grads.append(p.grad)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))


def make_step(mode: str, rows: int) -> Callable[[], None]:
    """One training step of a fresh bow model on `rows` fixed random rows, under `mode`."""
    model, _ = load_backbone("bow", max_length=64, seed=0)
    table = model.embeddings.weight
    rest = [p for name, p in model.named_parameters() if not name.startswith("embeddings")]
    table.requires_grad_(mode != "frozen")
    model.embeddings.sparse = mode == "sparse"
    params = rest if mode == "frozen" else [table, *rest]
    optimizers: list[torch.optim.Optimizer] = (
        [torch.optim.SparseAdam([table], lr=3e-3), torch.optim.AdamW(rest, lr=3e-3, fused=True)]
        if mode == "sparse" else [torch.optim.AdamW(params, lr=3e-3, fused=True)])
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (rows, 60), generator=generator)
    mask = torch.ones_like(ids)

    def step() -> None:
        rewards = model(input_ids=ids, attention_mask=mask).logits[:, 0]
        torch.nn.functional.softplus(-(rewards[0::2] - rewards[1::2])).mean().backward()
        _clip(params, 1.0)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for _ in range(30):  # warm: allocator, optimizer state
        step()
    return step


def block_ms(step: Callable[[], None]) -> float:
    start = time.process_time()
    for _ in range(100):
        step()
    return (time.process_time() - start) / 100 * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--output", type=Path)
    args = p.parse_args()
    record: dict[str, Any] = {"clock": "process CPU ms per step, best of reps × 100 steps",
                              "reps": args.reps}
    # one thread, as training runs bow (training_context); every case timed in each rep, in turn
    with training_context(torch.device("cpu"), model="bow"):
        steps = {(mode, rows): make_step(mode, rows) for mode in MODES for rows in ROWS}
        best = dict.fromkeys(steps, float("inf"))
        for _ in range(args.reps):
            for case, step in steps.items():
                best[case] = min(best[case], block_ms(step))
    for mode in MODES:
        record[mode] = {f"{rows}_rows_ms": best[mode, rows] for rows in ROWS} | {
            "ratio": best[mode, ROWS[1]] / best[mode, ROWS[0]]}
    record.update(load_avg=os.getloadavg()[0],
                  date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    emit(record, args.output)


if __name__ == "__main__":
    main()
