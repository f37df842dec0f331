#!/usr/bin/env bash
# Download the wheels the GPU check needs on a lent GPU machine (Python 3.12, x86-64, no internet:
# torch, transformers, accelerate and peft are there already) into .gpu-wheels/ (git-ignored), then
# check that they and the working tree fit in the 64 MiB a device call carries.
#
#   scripts/gpu_wheels.sh            # downloads ~16 small wheels (~14 MB) from the package index
#   scripts/gpu_wheels.sh --list     # only print what it would download
#
# The list is benchmarks/gpu_env.py's: pyproject's dependencies + TRL, their requirements, less what
# the machine has, each at the version installed in .venv (the versions the tests ran with).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DIR=.gpu-wheels

mapfile -t WHEELS < <("$PY" benchmarks/gpu_env.py wheels)
[ "${#WHEELS[@]}" -gt 0 ] || { echo "gpu_wheels: empty wheel list" >&2; exit 1; }
if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${WHEELS[@]}"
  exit 0
elif [ -n "${1:-}" ]; then
  echo "usage: scripts/gpu_wheels.sh [--list]" >&2
  exit 2
fi

# one version of each: a stale wheel beside a new one stops pip's install there
rm -rf "$DIR"
mkdir -p "$DIR"
PLATFORMS=()
for p in manylinux2014_x86_64 manylinux1_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_27_x86_64 manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 \
         manylinux_2_35_x86_64; do
  PLATFORMS+=(--platform "$p")
done
# --no-deps: the closure is already in the list, and pip must not fetch a CUDA torch
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" --disable-pip-version-check -q -d "$DIR" "${WHEELS[@]}"
echo "gpu_wheels: $(ls "$DIR"/*.whl | wc -l) wheels in $DIR"
"$PY" benchmarks/gpu_env.py size "$DIR"
