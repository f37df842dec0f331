"""Training throughput: rewardlab vs the original notebook's naive loop vs TRL's RewardTrainer.

Same data (HH-RLHF harmless sample, fixed 70/30 split by prompt hash), same backbone (MiniLM),
batch 8 pairs, max length 256, one epoch. Each measurement runs in its own subprocess (clean peak
RSS, no shared thread pools or accelerate state) and the paths are interleaved rep by rep, so
machine load drifts hit all of them alike.

    .venv/bin/python benchmarks/train_throughput.py                 # full sample, 1 rep
    .venv/bin/python benchmarks/train_throughput.py --pairs 200 --reps 2 --no-trl

Paths:
  rewardlab  `train_reward_model` + `evaluate_reward_model` (tokenize once, length-grouped batches,
             dynamic padding, chosen+rejected in one forward, bf16 autocast where faster).
  naive      the notebook: tokenize per item in `__getitem__`, pad every text to max_length,
             chosen and rejected in two forwards, fp32, plain torch loop (right truncation).
  trl        `trl.RewardTrainer` defaults except gradient checkpointing off (faster) and no saving;
             fed the same token ids as rewardlab (chosen_ids/rejected_ids), bf16 as rewardlab;
             its model is then scored by rewardlab's evaluator (test accuracy only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-sample.jsonl.gz"
PATHS = ("rewardlab", "naive", "trl")
LR = 2e-5


def load_split(path: Path, n_train: int | None, n_test: int | None) -> tuple[list, list]:
    """The fixed ~70/30 split by prompt hash (rewardlab.data.sources.assign_split_by_hash)."""
    from rewardlab.data.sources import read_source

    pairs = read_source(str(path), test_fraction=0.3).pairs
    train = [p for p in pairs if p.split == "train"][:n_train]
    test = [p for p in pairs if p.split == "test"][:n_test]
    return train, test


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- (a) rewardlab -------------------------------------------------------------------------------
def run_rewardlab(train: list, test: list, args: argparse.Namespace) -> dict[str, Any]:
    from rewardlab.evaluation.evaluate import evaluate_reward_model
    from rewardlab.training.config import TrainConfig
    from rewardlab.training.loop import train_reward_model

    config = TrainConfig(model="minilm", epochs=1, batch_size=args.batch_size, lr=LR,
                         max_length=args.max_length, seed=args.seed, precision=args.precision)
    t0 = time.perf_counter()
    result = train_reward_model(train, config=config, progress=False)
    t1 = time.perf_counter()
    ev = evaluate_reward_model(result.model, test)
    t2 = time.perf_counter()
    from rewardlab.training.fast.kernels import compiled_kernels

    return {"train_seconds": t1 - t0, "eval_seconds": t2 - t1, "train_loss": result.train_loss,
            "test_accuracy": ev.metrics["accuracy"], "precision": result.precision,
            "n_truncated": result.n_truncated,
            "compiled_attention": compiled_kernels() is not None}  # built by scripts/setup.sh


# --- (b) the original notebook's naive loop ---------------------------------------------------------
def _naive_dataset(pairs: list, tok: Any, max_length: int) -> Any:
    import torch

    class NaivePairs(torch.utils.data.Dataset):
        """Tokenizes on every access and pads every text to max_length."""

        def __len__(self) -> int:
            return len(pairs)

        def __getitem__(self, i: int) -> dict[str, Any]:
            p, item = pairs[i], {}
            for side in ("chosen", "rejected"):
                enc = tok(p.prompt_text, getattr(p, side), truncation=True, max_length=max_length,
                          padding="max_length", return_tensors="pt")
                item.update({f"{side}_{k}": v[0] for k, v in enc.items()})
            return item

    return NaivePairs()


def _naive_rewards(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Two forwards: chosen, then rejected."""
    out = []
    for side in ("chosen", "rejected"):
        inputs = {k[len(side) + 1:]: v for k, v in batch.items() if k.startswith(side)}
        out.append(model(**inputs).logits.squeeze(-1))
    return out[0], out[1]


def run_naive(train: list, test: list, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rewardlab.models.backbones import minilm_path

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=1)
    loader = DataLoader(_naive_dataset(train, tok, args.max_length), batch_size=args.batch_size,
                        shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    losses = []
    for batch in loader:
        r_c, r_r = _naive_rewards(model, batch)
        loss = -F.logsigmoid(r_c - r_r).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    t1 = time.perf_counter()
    model.eval()
    correct = 0
    with torch.no_grad():
        for batch in DataLoader(_naive_dataset(test, tok, args.max_length),
                                batch_size=args.batch_size):
            r_c, r_r = _naive_rewards(model, batch)
            correct += int((r_c > r_r).sum())
    t2 = time.perf_counter()
    return {"train_seconds": t1 - t0, "eval_seconds": t2 - t1,
            "train_loss": sum(losses) / len(losses), "test_accuracy": correct / len(test),
            "precision": "fp32"}


# --- (c) TRL's RewardTrainer ---------------------------------------------------------------------
def run_trl(train: list, test: list, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from rewardlab.models.backbones import load_backbone
    from rewardlab.models.batching import encode_pairs
    from rewardlab.training.runtime import resolve_precision

    precision = resolve_precision(args.precision, model="minilm", device=torch.device("cpu"))
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    model, tok = load_backbone("minilm", max_length=args.max_length, seed=args.seed)
    enc = encode_pairs(tok, [p.prompt_text for p in train], [p.chosen for p in train],
                       [p.rejected for p in train], max_length=args.max_length)
    data = Dataset.from_dict({"chosen_ids": enc.chosen.input_ids,
                              "rejected_ids": enc.rejected.input_ids})
    with tempfile.TemporaryDirectory() as out:
        config = RewardConfig(output_dir=out, per_device_train_batch_size=args.batch_size,
                              num_train_epochs=1, learning_rate=LR, max_length=args.max_length,
                              gradient_checkpointing=False, bf16=precision == "bf16",
                              save_strategy="no", report_to="none", logging_steps=50,
                              seed=args.seed, disable_tqdm=True,
                              use_cpu=not torch.cuda.is_available())
        trainer = RewardTrainer(model=model, args=config, train_dataset=data,
                                processing_class=tok)
        stats = trainer.train()
    t1 = time.perf_counter()
    # TRL's model scored by rewardlab's evaluator: the same test pairs and inputs as (a)
    from rewardlab.evaluation.evaluate import evaluate_reward_model
    from rewardlab.models.reward_model import RewardModel

    trained = RewardModel(trainer.model.float(), tok, max_length=args.max_length)
    accuracy = evaluate_reward_model(trained, test).metrics["accuracy"]
    return {"train_seconds": t1 - t0, "eval_seconds": None, "train_loss": stats.training_loss,
            "test_accuracy": accuracy, "precision": precision}


RUNNERS = {"rewardlab": run_rewardlab, "naive": run_naive, "trl": run_trl}


def worker(args: argparse.Namespace) -> None:
    """One measurement, in this process; prints one JSON line."""
    train, test = load_split(args.data, args.pairs, args.test_pairs)
    load_start, cpu_start = os.getloadavg()[0], _cpu_seconds()
    out = RUNNERS[args.worker](train, test, args)
    # CPU seconds next to wall seconds: on a shared machine, wall time also counts waiting
    out.update(cpu_seconds=_cpu_seconds() - cpu_start, load_avg_start=load_start,
               load_avg_end=os.getloadavg()[0])
    out.update(path=args.worker, seed=args.seed, train_pairs=len(train), test_pairs=len(test),
               train_pairs_per_s=len(train) / out["train_seconds"],
               eval_pairs_per_s=len(test) / out["eval_seconds"] if out["eval_seconds"] else None,
               peak_rss_mb=peak_rss_mb(), threads=__import__("torch").get_num_threads())
    print("RESULT " + json.dumps(out), flush=True)


def measure(path: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", path, "--seed", str(seed), "--data",
           str(args.data), "--batch-size", str(args.batch_size), "--max-length",
           str(args.max_length), "--precision", args.precision]
    for flag, value in (("--pairs", args.pairs), ("--test-pairs", args.test_pairs)):
        if value:
            cmd += [flag, str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(path: str, key: str) -> float | None:
        values = [r[key] for r in runs if r["path"] == path and r.get(key) is not None]
        return statistics.median(values) if values else None

    def mean(path: str, key: str) -> float | None:
        values = [r[key] for r in runs if r["path"] == path and r.get(key) is not None]
        return statistics.fmean(values) if values else None

    paths = sorted({r["path"] for r in runs}, key=PATHS.index)
    table = {p: {"train_pairs_per_s": med(p, "train_pairs_per_s"),
                 "eval_pairs_per_s": med(p, "eval_pairs_per_s"),
                 "peak_rss_mb": med(p, "peak_rss_mb"), "test_accuracy": mean(p, "test_accuracy"),
                 "train_loss": mean(p, "train_loss")} for p in paths}
    a = table.get("rewardlab", {}).get("train_pairs_per_s")
    ratios = {f"rewardlab/{p}": a / table[p]["train_pairs_per_s"] for p in paths
              if p != "rewardlab" and a and table[p]["train_pairs_per_s"]}
    if "naive" in table and table["rewardlab"]["eval_pairs_per_s"]:
        ratios["eval rewardlab/naive"] = (table["rewardlab"]["eval_pairs_per_s"]
                                          / table["naive"]["eval_pairs_per_s"])
    paired = {f"rewardlab/{p}": paired_ratio(runs, p) for p in paths if p != "rewardlab"}
    return {"table": table, "ratios": ratios,
            "paired_ratios": {k: v for k, v in paired.items() if v is not None}}


def paired_ratio(runs: list[dict[str, Any]], other: str) -> dict[str, Any] | None:
    """Speed ratio per repetition (same seed, run back to back) with a 95% CI.

    The ratios are averaged on the log scale (geometric mean) and the interval is Student's t over
    the repetitions: with three of them it is wide, which is the honest answer on a machine whose
    whole-run times move by ~5%.
    """
    import math

    from scipy import stats

    def speed(path: str) -> dict[int, float]:
        return {r["seed"]: r["train_pairs_per_s"] for r in runs if r["path"] == path}

    ours, theirs = speed("rewardlab"), speed(other)
    logs = [math.log(ours[s] / theirs[s]) for s in sorted(ours) if s in theirs]
    if not logs:
        return None
    mean = statistics.fmean(logs)
    out: dict[str, Any] = {"per_rep": [math.exp(x) for x in logs], "geomean": math.exp(mean)}
    if len(logs) > 1:
        half = stats.t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        out["ci95"] = [math.exp(mean - half), math.exp(mean + half)]
    return out


def print_table(summary: dict[str, Any]) -> None:
    def fmt(v: Any, spec: str) -> str:
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    print(f"{'path':<10} {'train pairs/s':>13} {'eval pairs/s':>12} {'peak RSS MB':>11} "
          f"{'test acc':>8} {'train loss':>10}")
    for path, row in summary["table"].items():
        print(f"{path:<10} {fmt(row['train_pairs_per_s'], '13.2f')} "
              f"{fmt(row['eval_pairs_per_s'], '12.2f')} {fmt(row['peak_rss_mb'], '11.0f')} "
              f"{fmt(row['test_accuracy'], '8.4f')} {fmt(row['train_loss'], '10.4f')}")
    for name, ratio in summary["ratios"].items():
        print(f"{name}: {ratio:.2f}x")
    for name, paired in summary["paired_ratios"].items():
        ci = paired.get("ci95")
        interval = f", 95% CI {ci[0]:.2f}-{ci[1]:.2f}x" if ci else ""
        reps = ", ".join(f"{x:.2f}" for x in paired["per_rep"])
        print(f"{name} per repetition: {reps} (geometric mean {paired['geomean']:.2f}x{interval})")


def _commit() -> str | None:
    """The code measured: figures from different runs are comparable only for the same commit."""
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=SAMPLE)
    p.add_argument("--pairs", type=int, help="first N train pairs (default: all ~1,030)")
    p.add_argument("--test-pairs", type=int, help="first N test pairs (default: all ~480)")
    p.add_argument("--reps", type=int, default=1, help="interleaved repetitions per path")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset of paths")
    p.add_argument("--no-trl", action="store_true", help="skip TRL even when it is installed")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "train_throughput.json")
    p.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    paths = [x for x in args.paths.split(",") if x]
    try:
        import trl  # noqa: F401
    except ImportError:
        args.no_trl = True
    if args.no_trl and "trl" in paths:
        paths.remove("trl")
    runs = []
    for rep in range(args.reps):
        order = paths[rep % len(paths):] + paths[:rep % len(paths)]  # rotate: no path always first
        for path in order:
            runs.append(measure(path, args.seed + rep, args))
            r = runs[-1]
            print(f"rep {rep} {path:<10} train {r['train_pairs_per_s']:.2f} pairs/s "
                  f"({r['train_seconds']:.0f}s)", flush=True)
    summary = summarize(runs)
    print_table(summary)
    meta = {"cpu_count": os.cpu_count(), "load_avg_end": os.getloadavg(), "commit": _commit(),
            "args": {k: str(v) for k, v in vars(args).items() if k != "worker"}}
    args.output.write_text(json.dumps({**summary, "runs": runs, "meta": meta}, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
