"""Peak memory (RSS): training and evaluation beside TRL and the naive loop, a compare, `serve`.

Every measurement runs in its own process, so each peak is that process's own (Linux VmHWM).
Training and evaluation are told apart by resetting the peak between them
(`rewardlab.training.memory.reset_peak`): `train_peak_mb` is the peak up to the end of training,
`eval_peak_mb` the peak while the test pairs are scored after it.

    .venv/bin/python benchmarks/memory.py train            # the three paths of train_throughput.py
    .venv/bin/python benchmarks/memory.py train --pairs 400 --paths rewardlab,trl
    .venv/bin/python benchmarks/memory.py ab --reps 3      # oneDNN cache: ours vs 4,096, interleaved
    .venv/bin/python benchmarks/memory.py compare -o /tmp/cmp   # `make run`'s compare, sampled
    .venv/bin/python benchmarks/memory.py serve            # `rewardlab serve` under a short load

Training runs reuse `train_throughput.py`'s runners (same data split, batch 8, max length 256,
one epoch). `ab` trains rewardlab with ONEDNN_PRIMITIVE_CACHE_CAPACITY set to each value in turn,
rep by rep in alternating order, and reports pairs/s and peak RSS of each. `compare` runs
`rewardlab compare --seeds 2` (what `make run` runs) with its own database, samples the process's
RSS every 2 s and reads each run's `memory:` line from its log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import train_throughput as tt  # noqa: E402  (the runners and the data split)

ROOT = Path(__file__).resolve().parents[1]
CAPACITY = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


# --- one training measurement, in this process -------------------------------------------------
def _hook_evaluation(marks: dict[str, float], test: list) -> None:
    """Record the training peak and reset it when the test pairs start being scored (rewardlab's
    evaluator for rewardlab and TRL; the naive loop builds its test dataset)."""
    import rewardlab.evaluation.evaluate as ev
    from rewardlab.training.memory import peak_rss_mb, reset_peak

    def mark() -> None:
        marks.setdefault("train_peak_mb", peak_rss_mb())
        reset_peak()

    evaluate, naive_dataset = ev.evaluate_reward_model, tt._naive_dataset

    def evaluate_marked(*a: Any, **k: Any) -> Any:
        mark()
        return evaluate(*a, **k)

    def naive_dataset_marked(pairs: list, *a: Any) -> Any:
        if pairs is test:
            mark()
        return naive_dataset(pairs, *a)

    ev.evaluate_reward_model = evaluate_marked
    tt._naive_dataset = naive_dataset_marked


def worker(args: argparse.Namespace) -> None:
    from rewardlab.training.memory import peak_rss_mb, reset_peak, rss_mb

    train, test = tt.load_split(args.data, args.pairs, args.test_pairs)
    marks: dict[str, float] = {"start_mb": rss_mb()}
    _hook_evaluation(marks, test)
    reset_peak()
    out = tt.RUNNERS[args.worker](train, test, args)
    marks["eval_peak_mb"] = peak_rss_mb()
    out.update(marks, path=args.worker, seed=args.seed, train_pairs=len(train),
               train_pairs_per_s=len(train) / out["train_seconds"],
               onednn_cache=os.environ.get(CAPACITY))
    print("RESULT " + json.dumps(out), flush=True)


def measure(path: str, args: argparse.Namespace, *, seed: int, env: dict[str, str] | None = None
            ) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "worker", "--worker", path, "--seed", str(seed),
           "--precision", args.precision]
    for flag, value in (("--pairs", args.pairs), ("--test-pairs", args.test_pairs)):
        if value:
            cmd += [flag, str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{path} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(lines[-1][len("RESULT "):]))


def _line(r: dict[str, Any]) -> str:
    return (f"{r['path']:<10} cache {r.get('onednn_cache') or '-':>5}  train {r['train_pairs_per_s']:6.2f} "
            f"pairs/s  train peak {r['train_peak_mb']:6.0f} MB  eval peak {r['eval_peak_mb']:6.0f} MB  "
            f"load {os.getloadavg()[0]:.1f}")


def train_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    paths = [p for p in args.paths.split(",") if p]
    runs = []
    for rep in range(args.reps):
        for path in paths[rep % len(paths):] + paths[:rep % len(paths)]:
            runs.append(measure(path, args, seed=args.seed + rep))
            print(_line(runs[-1]), flush=True)
    return runs


def ab_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    """rewardlab with each oneDNN cache capacity, alternating which goes first, same seed per rep."""
    values = args.capacities.split(",")
    runs = []
    for rep in range(args.reps):
        for value in values[rep % len(values):] + values[:rep % len(values)]:
            runs.append(measure("rewardlab", args, seed=args.seed + rep, env={CAPACITY: value}))
            print(f"rep {rep} " + _line(runs[-1]), flush=True)
    return runs


# --- a whole compare ---------------------------------------------------------------------------
def _sample_rss(pid: int, samples: list[float], stop: threading.Event) -> None:
    status = Path(f"/proc/{pid}/status")
    while not stop.wait(2.0):
        try:
            text = status.read_text()
        except OSError:
            return
        samples += [int(x.split()[1]) / 1024 for x in text.splitlines() if x.startswith("VmRSS:")]


def compare_part(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.output_dir or tempfile.mkdtemp(prefix="rewardlab-memory-"))
    cmd = [str(ROOT / ".venv" / "bin" / "rewardlab"), "compare", "--seeds", "2", "-o", str(out),
           "--db", f"sqlite:///{out / 'memory.db'}"]
    log_path = out / "compare.log"
    out.mkdir(parents=True, exist_ok=True)
    samples: list[float] = []
    stop = threading.Event()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        sampler = threading.Thread(target=_sample_rss, args=(proc.pid, samples, stop))
        sampler.start()
        code = proc.wait()
        stop.set()
        sampler.join()
    if code:
        raise SystemExit(f"compare failed ({code}): see {log_path}")
    return {"sampled_peak_mb": max(samples), **runs_from_log(log_path.read_text())}


def runs_from_log(text: str) -> dict[str, Any]:
    """Each trained run's `memory:` line from a compare log: peak and after, in MB."""
    found = re.findall(r"memory: peak RSS (\d+) MB.*?, (\d+) MB after the run", text)
    peaks, after = [float(p) for p, _ in found], [float(a) for _, a in found]
    return {"run_peaks_mb": peaks, "run_after_mb": after,
            "last_vs_first": peaks[-1] / peaks[0] if peaks else None}


# --- serve ---------------------------------------------------------------------------------------
def serve_part(args: argparse.Namespace) -> dict[str, Any]:
    import serve_load as sl

    ns = argparse.Namespace(workers=1, max_batch=32, forward_batch=8, max_wait_ms=5.0,
                            precision=args.precision, max_length=256, clients=8, requests=8,
                            queries_per_request=1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = sl.make_model(Path(tmp) / "model", 256)
        queries = sl.make_queries(8 * 8 * 2, seed=0)
        plan, warmup = sl.plan_for(queries[:64], ns), sl.plan_for(queries[64:], ns)
        result = {k: sl.measure(k, model_dir, plan, warmup, ns) for k in ("rewardlab", "naive")}
    return {k: {"peak_rss_mb": v["peak_rss_mb"], "responses_per_s": v["responses_per_s"]}
            for k, v in result.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["train", "ab", "compare", "serve", "worker"])
    p.add_argument("--data", type=Path, default=tt.SAMPLE)
    p.add_argument("--pairs", type=int, help="first N train pairs (default: all ~1,030)")
    p.add_argument("--test-pairs", type=int, help="first N test pairs (default: all ~480)")
    p.add_argument("--paths", default=",".join(tt.PATHS))
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--capacities", default="256,4096", help="ab: oneDNN cache capacities")
    p.add_argument("-o", "--output-dir", help="compare: its output directory and database")
    p.add_argument("--json", type=Path, help="write the figures here too")
    p.add_argument("--worker", choices=tt.PATHS, help=argparse.SUPPRESS)
    args = p.parse_args()
    # what train_throughput's runners read from their arguments
    args.model, args.batch_size, args.max_length, args.lora_r = "minilm", 8, 256, 0
    if args.part == "worker":
        return worker(args)
    started = time.time()
    result: Any = {"train": train_part, "ab": ab_part, "compare": compare_part,
                   "serve": serve_part}[args.part](args)
    print(json.dumps(result if args.part in ("compare", "serve") else
                     [{k: r[k] for k in ("path", "onednn_cache", "train_pairs_per_s",
                                         "train_peak_mb", "eval_peak_mb")} for r in result],
                     indent=1))
    if args.json:
        meta = {"part": args.part, "seconds": time.time() - started, "load": os.getloadavg(),
                "args": {k: str(v) for k, v in vars(args).items()}}
        args.json.write_text(json.dumps({"result": result, "meta": meta}, indent=2))


if __name__ == "__main__":
    main()
