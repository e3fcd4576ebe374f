#!/usr/bin/env bash
# One GPU check of the ODE engine, run from the repository root on a machine with CUDA:
#   OUT=/some/folder bash benchmarks/gpu_run.sh
# (1) the ODE test suite, CUDA cases included, without the CPU torch.compile tests (slow to
#     compile from a cold cache; -x: stops at the first failure; the failure is
#     reported loudly; the benchmark still runs unless STOP_ON_TEST_FAILURE=1, since the GPU is
#     lent once, and the script exits 1 at the end);
# (2) benchmarks/ode_peers.py --device cuda: writes $OUT/RESULTS.md and
#     $OUT/ode_peers_cuda.json row by row, so a later failure keeps what finished;
# (3) benchmarks/gpu_profile.py at batch 16 and 256: $OUT/profile_b16.txt, profile_b256.txt
#     (where the host time of one solve goes).
# Expected wall time on an H100/H200: tests ~1 min, benchmark ~2-4 min, profiles ~1 min
# (limits: 150 s, 330 s, 2 x 60 s).
# COMPILED=1: also options compile=True on CUDA (compiled blocks captured in CUDA graphs; never
# run on a GPU before): its CUDA tests (marked compiles and cuda) and the benchmark's dl-c
# variant for dopri5. Compiling from a cold cache takes minutes: run it as a second call, or
# alone, with the limits below raised by COMPILED_EXTRA seconds (default 120 each).
set -euo pipefail
OUT="${OUT:-benchmarks/gpu_out}"
# This checkout's package first (works without an editable install too).
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3; fi
LOG="$OUT/gpu_run.log"
echo "== gpu_run.sh $(date -u +%FT%TZ) python=$PY" | tee "$LOG"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true; } | tee -a "$LOG"
"$PY" - <<'PYEOF' 2>&1 | tee -a "$LOG"
import sys, torch
print("torch", torch.__version__, "cuda", torch.version.cuda)
if not torch.cuda.is_available():
    sys.exit("FAIL: torch.cuda.is_available() is False; this script needs a GPU")
print("device:", torch.cuda.get_device_name())
import deeplimits, torchdiffeq, torchode  # noqa: F401  (fail early if the bench extra is missing)
PYEOF
MARK="not compiles"
BENCH_ARGS=()
EXTRA=0
if [ "${COMPILED:-0}" = 1 ]; then
  MARK="not compiles or cuda"
  BENCH_ARGS=(--compiled)
  EXTRA="${COMPILED_EXTRA:-120}"
fi
echo "== [1/3] pytest tests/ode (CUDA cases included; -m \"$MARK\")" | tee -a "$LOG"
STATUS=0
if ! timeout $((150 + EXTRA)) "$PY" -m pytest tests/ode -q -x -p no:cacheprovider -rs -m "$MARK" 2>&1 | tee "$OUT/pytest.log"; then
  echo "!!!!! FAIL: tests/ode failed or timed out on the GPU; see $OUT/pytest.log !!!!!" | tee -a "$LOG"
  STATUS=1
  if [ "${STOP_ON_TEST_FAILURE:-0}" = 1 ]; then exit 1; fi
fi
echo "== [2/3] benchmarks/ode_peers.py --device cuda" | tee -a "$LOG"
if ! timeout $((330 + EXTRA)) "$PY" benchmarks/ode_peers.py --device cuda --reps 7 --out "$OUT" "${BENCH_ARGS[@]}" 2>&1 | tee "$OUT/bench.log"; then
  echo "FAIL: the benchmark failed or timed out; partial results in $OUT/RESULTS.md" | tee -a "$LOG"
  exit 1
fi
echo "== [3/3] benchmarks/gpu_profile.py" | tee -a "$LOG"
timeout 60 "$PY" benchmarks/gpu_profile.py --batch 16 --reps 20 > "$OUT/profile_b16.txt" 2>&1 \
  || echo "FAIL: profile at batch 16 (see $OUT/profile_b16.txt)" | tee -a "$LOG"
timeout 60 "$PY" benchmarks/gpu_profile.py --batch 256 --dim 32 --hidden 256 --reps 20 \
  > "$OUT/profile_b256.txt" 2>&1 \
  || echo "FAIL: profile at batch 256 (see $OUT/profile_b256.txt)" | tee -a "$LOG"
head -1 "$OUT/profile_b16.txt" "$OUT/profile_b256.txt" | tee -a "$LOG"
if [ "$STATUS" != 0 ]; then
  echo "!!!!! FAIL: the benchmark ran, but tests/ode failed on the GPU (see $OUT/pytest.log) !!!!!" | tee -a "$LOG"
  exit 1
fi
echo "== done: $OUT/RESULTS.md" | tee -a "$LOG"
