"""Runs per hour of `compare --preset strength` on the sample: `--workers 2` vs one process (issue 30).

The detectors (preference_strength's folds) run once, in a `compare --dry-run` on a scratch
SQLite store (not timed); each timed compare then starts from a copy of that store with
`--no-reuse-runs`, so it trains every run of the plan and nothing else is redone. The variants
are interleaved (sequential, workers, sequential, workers, …) so a change in the machine's load
falls on both; runs per hour = the plan's runs / the compare's wall time (process start to exit:
start-up, planning, training, statistics and report), and the same over the training phase alone
(from the detectors' check to the last run's log line, read as stderr is written).
`--workers 2` on a 2-core CPU gives each worker one torch thread (the `bow` backbone trains with
one thread in either case). `--seeds N` times a documented subset (the preset has 5 seeds: 55 runs).

    .venv/bin/python benchmarks/fanout.py --reps 2
    .venv/bin/python benchmarks/fanout.py --reps 1 --seeds 2 --output benchmarks/fanout.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "rewardlab"]
SAMPLE = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-sample.jsonl.gz"
# the training phase: from the log line that ends the detectors' check (then the plan, then the
# runs) to the last run's "test accuracy" line
PHASE_START = "reusing stored detector runs"
RUN_DONE = "test accuracy"


def _compare_args(seeds: int | None) -> list[str]:
    args = ["compare", "--train", str(SAMPLE), "--test-fraction", "0.3", "--preset", "strength",
            "--name", "hh", "--json"]
    return args + (["--seeds", str(seeds)] if seeds else [])


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def prepare(db: Path, out: Path, seeds: int | None) -> dict[str, Any]:
    """Ingest and run the detectors into `db` (a dry run: no training); the plan's summary."""
    done = subprocess.run([*CLI, *_compare_args(seeds), "--dry-run", "-o", str(out), "--db",
                           f"sqlite:///{db}"], capture_output=True, text=True, env=_env())
    if done.returncode:
        raise SystemExit(f"dry run failed: {done.stderr[-2000:]}")
    plan: dict[str, Any] = json.loads(done.stdout)
    return plan


def one_compare(base: Path, tmp: Path, seeds: int | None, workers: int, tag: str
                ) -> dict[str, Any]:
    """One timed compare from a copy of the prepared store: wall seconds, runs, runs per hour."""
    db = tmp / f"{tag}.db"
    shutil.copy(base, db)
    cmd = [*CLI, *_compare_args(seeds), "--no-reuse-runs", "--workers", str(workers), "-o",
           str(tmp / tag), "--db", f"sqlite:///{db}"]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_env())
    assert proc.stderr is not None
    seen: dict[str, float] = {}
    tail: list[str] = []
    for line in proc.stderr:  # read as written: each line's arrival time is its event's time
        tail = (tail + [line])[-20:]
        if PHASE_START in line:
            seen.setdefault("start", time.perf_counter())
        if RUN_DONE in line:
            seen["end"] = time.perf_counter()
    wall = time.perf_counter() - start
    if proc.wait():
        raise SystemExit(f"compare --workers {workers} failed: {''.join(tail)}")
    results = json.loads((tmp / tag / "results.json").read_text())
    runs = results["runs_planned"]
    phase = seen["end"] - seen["start"]
    return {"workers": workers, "runs": runs, "wall_s": round(wall, 1),
            "runs_per_hour": round(3600 * runs / wall, 1), "training_phase_s": round(phase, 1),
            "runs_per_hour_training_phase": round(3600 * runs / phase, 1),
            "load_avg_1min_at_start": load, "verdict_sha1": _sha1(results["verdict"])}


def _sha1(text: str) -> str:
    """The verdict, shortened: equal across variants when the results are."""
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:12]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2, help="pairs of (sequential, workers) compares")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seeds", type=int, help="a subset: seeds per arm (the preset's 5 if not given)")
    p.add_argument("--output", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        base = tmp / "prepared.db"
        plan = prepare(base, tmp / "dry", args.seeds)
        rows = []
        for rep in range(args.reps):  # interleaved: the load of the moment falls on both
            for workers in (1, args.workers):
                row = one_compare(base, tmp, args.seeds, workers, f"r{rep}-w{workers}")
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary: dict[str, Any] = {
        "benchmark": "compare --preset strength, --workers vs sequential", "seeds": args.seeds or 5,
        "runs": plan["runs"], "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine()}
    for key in ("runs_per_hour", "runs_per_hour_training_phase"):
        rate = {w: [r[key] for r in rows if r["workers"] == w] for w in (1, args.workers)}
        summary[key] = {"sequential": rate[1], "workers": rate[args.workers],
                        "speedup_of_means": round(sum(rate[args.workers]) / sum(rate[1]), 2)}
    summary["rows"] = rows
    print(json.dumps(summary, indent=1))
    if args.output:
        args.output.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
