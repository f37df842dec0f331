#!/usr/bin/env bash
# Create .venv and install rewardlab into it. torch 2.13.0 goes first: any other torch spec would pull
# a multi-GB CUDA build on a CPU machine, and installing it first lets everything else resolve to it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-test,dev}  # pip extras: test (pytest, hypothesis), dev (+ mypy, ruff), bench (trl)
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip show torch 2>/dev/null | grep -q '^Version: 2.13.0' \
  || .venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
# build the compiled CPU attention now (~30 s, once; cached) rather than inside the first training run
.venv/bin/python -c "from rewardlab.training.fast.kernels import compiled_kernels; import sys; \
sys.exit(0 if compiled_kernels() is not None else 'rewardlab: compiled kernels unavailable')" \
  || [ "${CI:-}" != true ]
echo "rewardlab installed in $(pwd)/.venv"
