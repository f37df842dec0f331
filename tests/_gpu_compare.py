"""`rewardlab compare` on a tiny decoder in a subprocess, as the GPU tests run it (tests/gpu/)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def run_compare(args: Sequence[str], decoder: str, out: Path, *extra: str
                ) -> subprocess.CompletedProcess[str]:
    """compare `args` with `--model decoder`, writing to `out` with its own SQLite store."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # deterministic cuBLAS in every process
    cmd = [sys.executable, "-m", "rewardlab", *args, "--model", decoder, "-o", str(out),
           "--db", f"sqlite:///{out}.db", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
