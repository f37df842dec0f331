#!/usr/bin/env bash
# The GPU check, for the few minutes a GPU machine is lent (one H100/H200, Python 3.12 with torch,
# transformers, accelerate and peft, no internet; the rest carried as wheels, scripts/gpu_wheels.sh):
#   1. the tests marked `gpu` (tests/gpu/): bf16 autocast, fp16 LoRA, the decoder path, `serve` on
#      CUDA, rated data with the tie model, `compare --workers N --gpus-per-run 1` (N = the GPUs,
#      up to 2; one more is refused);
#   2. decoder reward-model training, rewardlab vs TRL's RewardTrainer, on a random Qwen2 with
#      Qwen2.5-0.5B's shapes (same ids, bf16, batch 8, max length 1024), with model-FLOPs
#      utilisation against the card's bf16 peak;
#   3. `rewardlab serve` vs a naive per-request endpoint on the same model;
# then writes ONE JSON of the figures: $OUT/gpu_check.json where $OUT is set, else
# out/gpu-check/gpu_check.json. Each step has its own time limit (<= 8 min in all on one H100); a
# step that fails leaves null figures and the others go on.
#
#   scripts/gpu_check.sh             # on the GPU machine, from the repo root (carry .gpu-wheels)
#   scripts/gpu_check.sh --dry-run   # here, no GPU: every step wired (tests collected and skipped,
#                                    # wheel list resolved, a tiny CPU pass of each benchmark)
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
case "${1:-}" in
  "") ;;
  --dry-run) DRY=1 ;;
  *) echo "usage: scripts/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export REWARDLAB_KERNELS=0  # the compiled CPU attention: not used on a GPU, not built there
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STATUS=()
FAILED=0

# run NAME SECONDS CMD...: one step under its time limit; its exit status goes into the report
run() {
  local name=$1 limit=$2 rc=0
  shift 2
  echo "== ${name} (limit ${limit} s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  echo "== ${name}: exit ${rc} after $((SECONDS - start)) s"
  STATUS+=(--step-status "${name}=${rc}")
  [ "$rc" -eq 0 ] || FAILED=1
}

if [ "$DRY" -eq 1 ]; then
  PY=${PYTHON:-.venv/bin/python}
  JSON=${OUT:-$WORK/out}/gpu_check.json
  TINY=(--tiny)
  # the wheel list resolves against pyproject, and the scripts parse their arguments
  run wheels 120 "$PY" benchmarks/gpu_env.py check
  run wheel-script 60 bash scripts/gpu_wheels.sh --list
  "$PY" benchmarks/gpu_env.py installed > "$WORK/env.json" || FAILED=1
  # collected, marked and skipped without CUDA (the report counts them)
  run tests 300 "$PY" -m pytest -q -p no:cacheprovider --strict-markers -m gpu tests/gpu \
    --junitxml "$WORK/tests.xml"
  LIMITS=(600 600)
else
  PY=${PYTHON:-python3}
  JSON=${OUT:-out/gpu-check}/gpu_check.json
  TINY=()
  ls .gpu-wheels/*.whl >/dev/null 2>&1 || { echo "no .gpu-wheels/: run scripts/gpu_wheels.sh here and carry .gpu-wheels" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" .gpu-wheels/*.whl || exit 1
  export PYTHONPATH="$WORK/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  nvidia-smi -L || true
  "$PY" benchmarks/gpu_env.py installed | tee "$WORK/env.json"
  # a test that hangs fails alone (pytest-timeout is there) rather than taking the whole step
  PER_TEST=()
  "$PY" -c "import pytest_timeout" 2>/dev/null && PER_TEST=(--timeout 100)
  run tests 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu "${PER_TEST[@]}" \
    --junitxml "$WORK/tests.xml"
  LIMITS=(180 130)  # with the tests' 150 s and ~20 s to install and report: <= 8 min
fi
run train "${LIMITS[0]}" "$PY" benchmarks/gpu_bench.py train --work "$WORK" "${TINY[@]}"
run serve "${LIMITS[1]}" "$PY" benchmarks/gpu_bench.py serve --work "$WORK" "${TINY[@]}"
"$PY" benchmarks/gpu_bench.py report --work "$WORK" -o "$JSON" "${STATUS[@]}" || FAILED=1
if [ "$DRY" -eq 1 ]; then
  # wired: the report holds a figure of each benchmark and every gpu test was collected, none ran
  "$PY" - "$JSON" <<'EOF' || FAILED=1
import json, sys
r = json.load(open(sys.argv[1]))
assert r["tests"]["tests"] >= 5 and r["tests"]["skipped"] == r["tests"]["tests"], r["tests"]
assert {"rewardlab", "trl"} <= set(r["train"]["paths"]), r["train"]
assert all(p["steps_pairs_per_s"] > 0 and p["runs"][0]["tokens"] > 0 for p in r["train"]["paths"].values())
assert r["serve"]["versus_naive"]["rewardlab"]["responses_per_s_ratio_geomean"] > 0, r["serve"]
print("dry run: every step wired")
EOF
fi
exit "$FAILED"
