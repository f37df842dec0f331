"""One small `bow` experiment that the resume and fan-out tests run in different ways (a fixture
module): its command, its environment, and what of its results.json must match between two runs.

3 conditions × 2 seeds + 1 fraction × 2 arms × 2 seeds = 10 runs of seconds each; the uninterrupted,
one-process results are computed once per session (`sequential_results` in tests/experiment/conftest.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

SYN = "synthetic:n=120,noise=0.2,seed=0"
ARGS = ["compare", "--train", SYN, "--test-fraction", "0.25", "--model", "bow", "--seeds", "2",
        "--conditions", "unfiltered,clean,random", "--detectors", "oof_margin",
        "--fractions", "0.2", "--rank-by", "oof_margin", "--max-pairs", "0",
        "--precision", "fp32", "--json"]
RUNS = 10
EXECUTION_KEYS = ("workers", "ray", "gpus_per_run", "retries")  # how it ran, not what


def compare_command(out: Path, db: Path, *extra: str) -> list[str]:
    """The experiment's compare, writing to `out` with its own SQLite store `db`."""
    return [sys.executable, "-m", "rewardlab", *ARGS, *extra, "-o", str(out), "--db",
            f"sqlite:///{db}"]


def compare_env(ray_tmp: str | None = None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return {**env, "RAY_TMPDIR": ray_tmp} if ray_tmp else env


def comparable(value: Any, key: str | None = None) -> Any:
    """results.json less what measures the process rather than the experiment: when and how long
    (`created`, every `seconds`), each run's memory (`*_mb`: a worker or a resumed process holds
    other amounts) and the allocator it was measured under, how many runs came from the store,
    and the config's execution options."""
    if isinstance(value, dict):
        drop = (("created", "seconds", "runs_reused", "allocator")
                + (EXECUTION_KEYS if key == "config" else ()))
        return {k: comparable(v, k) for k, v in value.items()
                if k not in drop and not k.endswith("_mb")}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value
