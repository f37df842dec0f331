"""Ties and rankings on `synthetic:n=1500,k=4,ties=0.2` with `bow`, fp32 (issue 32, acceptance 2).

(i) `--ties model`: the predicted tie share (mean P(tie) over the test prompts' pairs) against the
    observed one (0.2 by construction), and the tie parameter against the true band: ν, P(tie) at
    equal rewards, and the band it implies in quality units (`implied_band`);
(ii) Kendall's tau of `--ranking listwise` and all pairs (`--ranking pairs`) against the hidden
    quality on the test prompts, with best-of-K accuracy;
(iii) training pairs/s of the forward-once all-pairs path against the pairwise expansion (each
    decided pair a plain pair through `train_reward_model`), on the same data, interleaved reps:
    pairs = decided pairs × epochs over the training steps' own time (`train_seconds`), and over
    their CPU time; at equal pairs per step (`speedup`, the issue's figure) and, as a second view,
    at equal rows (memory) per step (`rows_speedup`).

    .venv/bin/python benchmarks/ranking.py --reps 3 --output benchmarks/ranking.avx2.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch

import rewardlab.training.grouped as grouped
import rewardlab.training.loop as loop
from rewardlab.data.synthetic import read_synthetic_rated
from rewardlab.evaluation.rated import evaluate_rated
from rewardlab.experiment.ties_lesson import implied_band
from rewardlab.training.grouped import pairwise_expansion, train_on_rated
from rewardlab.training.loop import train_reward_model
from rewardlab.training.train_config import TrainConfig

SPEC = "synthetic:n=1500,k=4,ties=0.2"
SPEEDUPS = tuple(f"{key}{clock}speedup" for key in ("", "rows_") for clock in ("", "cpu_", "call_"))


def config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {"model": "bow", "precision": "fp32", "seed": 0, "epochs": 3,
                            "batch_size": 8, "max_length": 64}
    return TrainConfig(**{**base, **overrides})


def quality(train: list[Any], test: list[Any]) -> dict[str, Any]:
    """(i) and (ii): one run per condition, measured on the test prompts."""
    out: dict[str, Any] = {}
    for name, options in (("ties_model", {"ties": "model"}), ("all_pairs", {}),
                          ("listwise", {"ranking": "listwise"})):
        result = train_on_rated(train, config=config(**options), progress=False)
        metrics = evaluate_rated(result.model, test)
        out[name] = {"kendall_tau": metrics["kendall_tau"],
                     "best_of_k_accuracy": metrics["best_of_k_accuracy"],
                     "pair_accuracy": metrics["pair_accuracy"], "tie_share": metrics["tie_share"],
                     "tie_accuracy": metrics["tie_accuracy"], "tie_nll": metrics["tie_nll"],
                     "ties": result.model.info.get("ties"), "train_seconds":
                     result.model.info["train_seconds"]}
        if options.get("ties") == "model":
            out[name]["implied_band"] = implied_band(result.model, test)
    return out


@contextlib.contextmanager
def cpu_clocked(sink: list[float]) -> Iterator[None]:
    """Append the process CPU seconds of each training loop run inside (both paths' steps):
    on a machine others load, a wall-clock second is partly theirs, a CPU second is not."""
    original = loop._train_loop

    def timed(*args: Any, **kwargs: Any) -> bool:
        start = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            sink.append(time.process_time() - start)

    with mock.patch.object(loop, "_train_loop", timed), mock.patch.object(grouped, "_train_loop",
                                                                            timed):
        yield


def throughput(train: list[Any], reps: int, *, model: str = "bow") -> list[dict[str, float]]:
    """(iii): grouped and expanded runs alternate, so machine load hits both alike. Per run:
    pairs/s over the training steps (`train_seconds`, wall clock), over the steps' process CPU
    time (`cpu`), and over the whole call (tokenizing, set-up and the reward statistics included).

    `expanded` takes as many pairs a step as the grouped path's 8 prompts hold (equal pairs per
    step, the headline `speedup`); `expanded_rows` as many ROWS a step as they forward (8 × K
    responses = 16 pairs at K = 4: equal memory per step, `rows_speedup`)."""
    pairs = pairwise_expansion(train)
    per_step = round(8 * len(pairs) / len(train))  # a grouped step's decided pairs (8 prompts)
    rows = round(8 * sum(len(p.responses) for p in train) / len(train) / 2)  # its rows, as pairs
    sizes = {"expanded": per_step, "expanded_rows": rows}
    runs = []
    for rep in range(reps):
        row: dict[str, float] = {"rep": rep, "load_avg": os.getloadavg()[0]}
        order = ("grouped", "expanded", "expanded_rows")
        for name in order if rep % 2 == 0 else order[::-1]:
            cpu: list[float] = []
            start = time.perf_counter()
            with cpu_clocked(cpu):
                if name == "grouped":
                    info = train_on_rated(train, config=config(epochs=1, model=model),
                                          progress=False).model.info
                else:
                    info = train_reward_model(pairs, config=config(epochs=1, model=model,
                                                                   batch_size=sizes[name]),
                                              progress=False).model.info
            wall = time.perf_counter() - start
            row[f"{name}_pairs_per_s"] = info["n_pairs"] / info["train_seconds"]
            row[f"{name}_cpu_pairs_per_s"] = info["n_pairs"] / cpu[0]
            row[f"{name}_call_pairs_per_s"] = info["n_pairs"] / wall
            row[f"{name}_steps"] = info["total_steps"]
        for key, base in (("", "expanded"), ("rows_", "expanded_rows")):
            for clock in ("", "cpu_", "call_"):
                row[f"{key}{clock}speedup"] = (row[f"grouped_{clock}pairs_per_s"]
                                               / row[f"{base}_{clock}pairs_per_s"])
        runs.append(row)
    return runs


def median(rows: list[dict[str, float]], key: str) -> float:
    values = sorted(r[key] for r in rows)
    return values[len(values) // 2] if len(values) % 2 else sum(values[len(values) // 2 - 1:
                                                                       len(values) // 2 + 1]) / 2


def emit(record: dict[str, Any], output: Path | None) -> None:
    """Print the record as JSON, and write it to `output` when one is given."""
    text = json.dumps(record, indent=2)
    if output:
        output.write_text(text)
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--output", type=Path)
    p.add_argument("--minilm-prompts", type=int, default=150,
                   help="also time MiniLM (forward-bound) on this many train prompts; 0 = skip")
    args = p.parse_args()
    data = read_synthetic_rated(SPEC)
    train = [r for r in data.prompts if r.split == "train"]
    test = [r for r in data.prompts if r.split == "test"]
    started = time.perf_counter()
    record = {"spec": SPEC, "true_tie_band": data.tie_band, "true_tie_share": 0.2,
              "train_prompts": len(train), "test_prompts": len(test),
              "config": {"model": "bow", "precision": "fp32", "epochs": 3, "batch_size": 8,
                         "max_length": 64, "throughput_epochs": 1},
              "quality": quality(train, test), "throughput": throughput(train, args.reps),
              "throughput_minilm": (throughput(train[:args.minilm_prompts], args.reps,
                                               model="minilm") if args.minilm_prompts else []),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(),
                          "load_avg": os.getloadavg()[0]},
              "seconds": time.perf_counter() - started,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for key in ("throughput", "throughput_minilm"):
        if record[key]:
            record[f"{key}_median"] = {m: median(record[key], m) for m in SPEEDUPS}
    emit(record, args.output)


if __name__ == "__main__":
    main()
