"""Time from process start to the first training step of `rewardlab train` (issue 34: ≤ 10 s).

Ingests the bundled sample into a scratch SQLite store once (not timed), then runs the unmodified
CLI `rewardlab train hh --max-steps 5` with `REWARDLAB_STAGES=1`, timing from just before exec to
the stage line "training steps" (entering the first step) and to the process's exit; repeats.

    .venv/bin/python benchmarks/first_step.py --reps 3
    .venv/bin/python benchmarks/first_step.py --reps 2 --output benchmarks/first_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "rewardlab"]
MARKER = "training steps"


def ingest(db: str) -> None:
    subprocess.run([*CLI, "ingest", "hh-rlhf-sample", "--name", "hh", "--db", db], check=True,
                   capture_output=True)


def one_run(db: str, out: Path) -> dict[str, Any]:
    """Seconds from exec to the first-step marker and to exit, and the stage lines' times."""
    env = {**os.environ, "REWARDLAB_STAGES": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [*CLI, "train", "hh", "--db", db, "-o", str(out), "--max-steps", "5"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=env)
    assert proc.stderr is not None
    stages: dict[str, float] = {}
    for line in proc.stderr:  # read as written: each line's arrival time is the stage's time
        if "rewardlab stage:" in line:
            stages.setdefault(line.split(":", 2)[-1].strip(), time.perf_counter() - start)
    code = proc.wait()
    if code:
        raise SystemExit(f"rewardlab train failed (exit {code})")
    return {"first_step_s": stages.get(MARKER), "exit_s": time.perf_counter() - start,
            "stages": stages, "load_avg_start": os.getloadavg()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--output", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{tmp}/rl.db"
        ingest(db)
        runs = []
        for rep in range(args.reps):
            runs.append(one_run(db, Path(tmp) / f"m{rep}"))
            print(f"rep {rep}: first step at {runs[-1]['first_step_s']:.2f} s, exit at "
                  f"{runs[-1]['exit_s']:.2f} s", flush=True)
    record = {"what": "rewardlab train hh --max-steps 5 (defaults) on the bundled sample, "
                      "exec to the 'training steps' stage line",
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "runs": runs}
    if args.output:
        args.output.write_text(json.dumps(record, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
