#!/usr/bin/env bash
# One-call GPU validation of fsrf, for a fresh GPU machine with PyTorch, Triton, nvcc and ninja
# but no network (run from a copy of the repository's working tree):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default ./gpu_check_out
#
# Phases, each under its own `timeout` so a stuck one cannot eat the others' time; a failed
# phase is reported and the script goes on. Budget on an H100: under 8 minutes in all.
#   env    (20 s)   GPU, driver, torch / triton / nvcc versions
#   build  (180 s)  pip install --no-build-isolation --no-deps -e . with TORCH_CUDA_ARCH_LIST set
#                   from the present GPU, MAX_JOBS=16 (falls back to setup.py build_ext --inplace)
#   tests  (120 s)  pytest -m gpu tests/ (pytest-xdist when installed), JUnit XML kept
#   bench  (130 s)  benchmarks/gpu_report.py bench: ceilings, every op vs eager / torch.compile /
#                   SDPA, one FSRFModel training step
#   table  (30 s)   benchmarks/gpu_report.py table: phase and test summary, then the table, LAST
# OUT_DIR receives gpu_check.log (everything printed), build.log, gpu_tests.xml, phases.tsv,
# roofline.json, bench_rows.jsonl, results.csv and results.json. Exit status: 0 when every
# phase succeeded, 1 otherwise.
#
# Environment: PYTHON (default python3, the interpreter that has torch), MAX_JOBS (16),
# TORCH_CUDA_ARCH_LIST (default: the present GPU's capability, e.g. 9.0), PYTEST_WORKERS (4).
set -u

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
out="${1:-./gpu_check_out}"
mkdir -p "$out" || exit 1
out="$(cd "$out" && pwd)"
: >"$out/phases.tsv"
rm -f "$out/bench_rows.jsonl" "$out/gpu_tests.xml" "$out/roofline.json"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
export MAX_JOBS="${MAX_JOBS:-16}"

# Everything printed also goes to the log; the tee is waited for at the end so the table is
# the last thing written.
exec > >(tee -a "$out/gpu_check.log") 2>&1
tee_pid=$!

t_all=$(date +%s)
overall=0

# run_phase NAME TIMEOUT_S COMMAND...: runs, times and records one phase. COMMAND may be a
# function of this script (`timeout` runs programs, so a function runs in a child bash that
# receives its definition; the variables it reads are exported).
export PY out MAX_JOBS
run_phase() {
  local name="$1" limit="$2"
  shift 2
  echo
  echo "=== phase $name (limit ${limit} s) ==="
  local start rc status
  start=$(date +%s)
  if [ "$(type -t "$1")" = "function" ]; then
    timeout --kill-after=10 "$limit" bash -c "$(declare -f "$1"); $1"
  else
    timeout --kill-after=10 "$limit" "$@"
  fi
  rc=$?
  local secs=$(( $(date +%s) - start ))
  if [ "$rc" -eq 0 ]; then status=ok
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status=timeout
  else status="failed(rc=$rc)"; fi
  [ "$rc" -eq 0 ] || overall=1
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "${PHASE_NOTE:-}" >>"$out/phases.tsv"
  echo "=== phase $name: $status after ${secs} s ==="
  PHASE_NOTE=""
  return $rc
}

# ------------------------------------------------------------------------------------ env
env_phase() {
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 | head -n 5
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
  "$PY" - <<'PYEOF'
import sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda)
try:
    import triton
    print("triton", triton.__version__)
except Exception as exc:
    print("triton not importable:", exc)
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device {p.name}, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.1f} GiB")
    sys.exit(0)
sys.exit(3)
PYEOF
}
run_phase env 30 env_phase
have_gpu=$?

# ------------------------------------------------------------------------------------ build
ARCH="${TORCH_CUDA_ARCH_LIST:-}"
if [ -z "$ARCH" ] && [ "$have_gpu" -eq 0 ]; then
  ARCH="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null)"
fi
export TORCH_CUDA_ARCH_LIST="${ARCH:-9.0}"

build_phase() {
  local start=$(date +%s)
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS; build log: $out/build.log"
  if ! FSRF_FORCE_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps --no-index -e . >"$out/build.log" 2>&1; then
    echo "pip install -e . failed; last lines:"
    grep -E "error|Error" "$out/build.log" | head -n 20
    tail -n 15 "$out/build.log"
    echo "retrying with setup.py build_ext --inplace"
    FSRF_FORCE_CUDA=1 "$PY" setup.py build_ext --inplace >>"$out/build.log" 2>&1 || {
      tail -n 30 "$out/build.log"; return 1; }
  fi
  echo "compiled in $(( $(date +%s) - start )) s"
  "$PY" - <<'PYEOF'
import sys
import fsrf
from fsrf.runtime import extension as _extension
err = _extension.extension_error()
if err:
    print("fsrf._C NOT loaded:", err)
    sys.exit(1)
import fsrf._C as C
info = dict(C.build_info())
print("fsrf._C build_info:", info)
print("masked_cross_attention on cuda resolves to:", fsrf.info()["ops"]["masked_cross_attention"]["cuda"])
sys.exit(0 if info.get("with_cuda") else 1)
PYEOF
}
PHASE_NOTE="TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
run_phase build 180 build_phase

# ------------------------------------------------------------------------------------ tests
tests_phase() {
  local xdist=()
  if "$PY" -c 'import xdist' 2>/dev/null; then xdist=(-n "${PYTEST_WORKERS:-4}"); fi
  "$PY" -m pytest -m gpu tests/ -q -rfE -p no:cacheprovider --junitxml="$out/gpu_tests.xml" "${xdist[@]}"
}
run_phase tests 120 tests_phase

# ------------------------------------------------------------------------------------ bench
run_phase bench 130 "$PY" benchmarks/gpu_report.py bench "$out" --budget-s 110

# ------------------------------------------------------------------------------------ table
PHASE_NOTE="total $(( $(date +%s) - t_all )) s before the table"
printf '%s\t%s\t%s\t%s\n' "total" "$([ $overall -eq 0 ] && echo ok || echo 'some failed')" \
  "$(( $(date +%s) - t_all ))" "" >>"$out/phases.tsv"
timeout 30 "$PY" benchmarks/gpu_report.py table "$out" || { echo "table step failed"; overall=1; }

exec >&- 2>&-
wait "$tee_pid" 2>/dev/null
exit $overall
