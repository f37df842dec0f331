#!/usr/bin/env bash
# Create .venv and install rewardlab into it. torch 2.13.0 goes first: any other torch spec would pull
# a multi-GB CUDA build on a CPU machine, and installing it first lets everything else resolve to it.
# One line per step, and pip's own lines under it (one per package), so a 4-minute install is never
# silent; nothing reads stdin, so it runs the same under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-test,dev}  # pip extras: test (pytest, hypothesis, ray), dev (+ mypy, ruff), bench (trl)
TORCH=2.13.0

step() { printf '[%s/5] %s\n' "$1" "$2"; }

# pip without -q, filtered to the lines that show progress: a package found (on this disk or
# downloaded), the install, the result. Unbuffered (PYTHONUNBUFFERED, and `read` rather than awk,
# which Debian's mawk buffers): a pipe would otherwise get them in one block at the end. pip's
# warnings and errors go to stderr, unfiltered.
pip_install() {
  # and a heartbeat while pip installs silently (unpacking ~90 packages takes minutes on 2 cores)
  ( n=0; while sleep 30 >/dev/null 2>&1; do n=$((n + 30)); printf '      ... still installing (%s s)\n' "$n"; done ) &
  local beat=$! status=0
  PYTHONUNBUFFERED=1 .venv/bin/python -m pip install --no-input --progress-bar off "$@" \
    | while IFS= read -r line; do
        case "$line" in
          Collecting*|*Downloading*|Processing*|Installing*|Successfully*)
            printf '      %s\n' "${line#"${line%%[! ]*}"}" ;;
        esac
      done || status=$?
  kill "$beat" 2>/dev/null || true
  return "$status"
}

if [ -x .venv/bin/python ]; then
  step 1 "using $(pwd)/.venv"
else
  step 1 "creating $(pwd)/.venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true

if .venv/bin/python -m pip show torch 2>/dev/null | grep -q "^Version: ${TORCH}"; then
  step 2 "torch ${TORCH}: already installed"
else
  step 2 "torch ${TORCH} (CPU build, ~200 MB; from this disk where pip's find-links has it)"
  pip_install "torch==${TORCH}"
fi

step 3 "rewardlab and its dependencies, extras [${EXTRAS}] (~100 packages, a few minutes)"
pip_install -e ".[${EXTRAS}]"

# build the compiled CPU attention now (~30 s, once; cached) rather than inside the first training
# run; kernels.py prints its own "building ..." line, or nothing where a build is cached
step 4 "compiled CPU attention kernel (built once, ~30 s; cached after that)"
.venv/bin/python -c "from rewardlab.models.kernels import compiled_kernels; import sys; \
ok = compiled_kernels() is not None; print('      ready' if ok else ''); \
sys.exit(0 if ok else 'rewardlab: compiled kernels unavailable')" \
  || [ "${CI:-}" != true ]

# the heap allocator rewardlab runs on where installed: an experiment's memory stays flat run over run
step 5 "jemalloc (apt libjemalloc2, as root; without it rewardlab uses glibc's malloc)"
bash scripts/install_jemalloc.sh 2>&1 | sed 's/^/      /'
echo "rewardlab installed in $(pwd)/.venv (${SECONDS} s)"
