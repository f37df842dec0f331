"""Where a rewardlab training step spends its time: torch.profiler over a short run on the sample.

    .venv/bin/python benchmarks/profile_train.py              # 160 pairs = 20 steps, MiniLM
    .venv/bin/python benchmarks/profile_train.py --pairs 80 --rows 40

Prints the op table (self CPU time) and a summary by kind of work: linear-layer and attention matrix
multiplies (with their achieved GFLOP/s, from the profiler's FLOP counts), softmax, GELU, LayerNorm,
the optimizer, and everything else. On a CPU the step is bound by the linear layers' matrix
multiplies, so what is left to win is in the rest.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

# what each op is, in a BERT-family packed training step: linear layers are mm/addmm, attention is
# bmm (one batched matmul per row, heads batched) plus its softmax; the optimizer is fused AdamW
KINDS = {
    "linear layers (mm, addmm)": ("aten::mm", "aten::addmm"),
    "attention matmuls (bmm)": ("aten::bmm",),
    "attention softmax": ("aten::_softmax", "aten::_softmax_backward_data"),
    "GELU": ("aten::gelu", "aten::gelu_backward"),
    "LayerNorm": ("aten::native_layer_norm", "aten::native_layer_norm_backward"),
    "optimizer (AdamW, clip, zero_grad)": ("aten::_fused_adamw_", "aten::linalg_vector_norm",
                                           "Optimizer.zero_grad#AdamW.zero_grad"),
}


def summarize(events: list) -> list[tuple[str, float, str]]:
    """(kind, share of profiled op time, achieved GFLOP/s where the profiler counts FLOPs)."""
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    rows, covered = [], 0.0
    for kind, ops in KINDS.items():
        chosen = [e for e in events if e.key in ops]
        us = sum(e.self_cpu_time_total for e in chosen)
        flops = sum(e.flops for e in chosen)
        covered += us
        rows.append((kind, us / total, f"{flops / (us * 1e-6) / 1e9:.0f} GFLOP/s" if flops else ""))
    rows.append(("everything else", 1 - covered / total, "casts, copies, adds, embeddings, Python"))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=160, help="train pairs to profile (batch 8)")
    p.add_argument("--rows", type=int, default=25, help="op-table rows to print")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = p.parse_args()

    import time

    from torch.profiler import ProfilerActivity, profile
    from train_throughput import SAMPLE, load_split

    from rewardlab.training.loop import train_reward_model
    from rewardlab.training.train_config import TrainConfig

    train, _ = load_split(SAMPLE, args.pairs, 0)
    config = TrainConfig(model="minilm", epochs=1, batch_size=8, max_length=256, seed=42,
                         precision=args.precision)
    train_reward_model(train[:16], config=config, progress=False)  # warm up kernels and caches
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        t0 = time.perf_counter()
        result = train_reward_model(train, config=config, progress=False)
        seconds = time.perf_counter() - t0
    events = list(prof.key_averages())
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    print(f"precision {result.precision}, {len(train)} pairs, {len(train) / seconds:.2f} pairs/s "
          f"(profiler overhead included), {seconds:.1f} s profiled")
    for kind, share, note in summarize(events):
        print(f"  {kind:<36} {share:6.1%}  {note}")


if __name__ == "__main__":
    main()
