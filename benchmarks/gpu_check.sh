#!/usr/bin/env bash
# One-call GPU validation of fsrf, for a fresh GPU machine with PyTorch, Triton, nvcc and ninja
# but no network (run from a copy of the repository's working tree):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default ./gpu_check_out
#
# Phases, each under its own `timeout` so a stuck one cannot eat the others' time; a failed
# phase is reported and the script goes on. The limits add up to TOTAL_S = 520 s, so the whole
# check ends inside one 9-minute call on a fresh H100 (cold Triton and Inductor caches) whatever
# hangs (a phase ignoring SIGTERM is killed 5 s later); the tests also get what env and build
# leave of their limits:
#   env    (LIMIT_ENV 15 s)     GPU, driver, torch / triton / nvcc versions; are pytest, numpy and
#                               pytest-xdist there? (no pytest or numpy: the tests are skipped; no
#                               xdist: they run in one process)
#   build  (LIMIT_BUILD 140 s)  pip install --no-build-isolation --no-deps -e . with
#                               TORCH_CUDA_ARCH_LIST set from the present GPU, MAX_JOBS=16; if that
#                               fails, a regular (non-editable) install of the same tree, which
#                               maps kernels/ to fsrf.kernels as the editable one does
#   tests  (LIMIT_TESTS 210 s   pytest -m gpu tests/ (pytest-xdist when installed), JUnit XML kept:
#           + env/build slack)
#                               a cold Triton cache, MMD autotuning and the torch.compile tests
#                               take most of it. pytest gets SIGINT 25 s before the limit, so an
#                               overrun still writes the JUnit file with every finished test
#   bench  (LIMIT_BENCH 45 s)   benchmarks/gpu_report.py bench: ceilings, every op vs eager /
#                               torch.compile / SDPA, one FSRFModel step (peers skipped when its
#                               budget runs short)
#   train  (LIMIT_TRAIN 100 s)  benchmarks/bench_train_step.py: the whole training step (eager
#                               torch, eager auto, compile(auto), compile(auto, fullgraph),
#                               reduce-overhead) at MOSEI aligned and unaligned shapes, its rows
#                               added to bench_rows.jsonl; the prediction is printed before it runs
#   table  (LIMIT_TABLE 10 s)   benchmarks/gpu_report.py table: phase and test summary, then the
#                               table (train-step rows included), LAST
# OUT_DIR receives 8 files, what a device call brings back at most: gpu_check.log (everything
# printed), build.log, gpu_tests.xml, phases.tsv, roofline.json, bench_rows.jsonl, results.csv and
# results.json. Exit status: 0 when every phase succeeded, 1 otherwise.
#
# Environment: PYTHON (default python3, the interpreter that has torch), MAX_JOBS (16),
# TORCH_CUDA_ARCH_LIST (default: the present GPU's capability, e.g. 9.0), PYTEST_WORKERS (4),
# LIMIT_<PHASE> (seconds, as above), TOTAL_S (520).
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
: "${LIMIT_ENV:=15}" "${LIMIT_BUILD:=140}" "${LIMIT_TESTS:=210}" "${LIMIT_BENCH:=45}" "${LIMIT_TRAIN:=100}"
: "${LIMIT_TABLE:=10}"

# Everything printed also goes to the log; the tee is waited for at the end so the table is
# the last thing written.
exec > >(tee -a "$out/gpu_check.log") 2>&1
tee_pid=$!

t_all=$(date +%s)
overall=0

# run_phase NAME TIMEOUT_S COMMAND...: runs, times and records one phase. COMMAND may be a
# function of this script (`timeout` runs programs, so a function runs in a child bash that
# receives its definition; the variables it reads are exported).
: "${TOTAL_S:=$(( LIMIT_ENV + LIMIT_BUILD + LIMIT_TESTS + LIMIT_BENCH + LIMIT_TRAIN + LIMIT_TABLE ))}"
export PY out MAX_JOBS LIMIT_TRAIN
run_phase() {
  local name="$1" limit="$2"
  shift 2
  echo
  echo "=== phase $name (limit ${limit} s) ==="
  local start rc status
  start=$(date +%s)
  if [ "$(type -t "$1")" = "function" ]; then
    timeout --kill-after=5 "$limit" bash -c "$(declare -f "$1"); $1"
  else
    timeout --kill-after=5 "$limit" "$@"
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
import os, sys, torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda)
try:
    import triton
    print("triton", triton.__version__)
except Exception as exc:
    print("triton not importable:", exc)
# what the tests and benchmarks need besides torch (there is no network to install it here)
missing = []
for mod in ("pytest", "numpy", "xdist"):
    try:
        m = __import__(mod)
        print(mod, getattr(m, "__version__", "?"))
    except Exception as exc:
        print(f"{mod} NOT importable: {exc}")
        missing.append(mod)
with open(os.path.join(os.environ["out"], ".missing"), "w") as fh:
    fh.write(" ".join(missing))
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device {p.name}, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.1f} GiB")
    sys.exit(0)
sys.exit(3)
PYEOF
}
run_phase env "$LIMIT_ENV" env_phase
have_gpu=$?
missing="$(cat "$out/.missing" 2>/dev/null)"
rm -f "$out/.missing"

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
    # a regular install, not `setup.py build_ext --inplace`: an in-place build leaves kernels/
    # unmapped, so fsrf.kernels (every Triton op) would not import
    echo "retrying with a regular install: pip install --no-build-isolation --no-deps --no-index ."
    FSRF_FORCE_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps --no-index . >>"$out/build.log" 2>&1 || {
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
import fsrf.kernels.mmd  # noqa: F401  (the Triton kernels must import as fsrf.kernels)
info = dict(C.build_info())
print("fsrf._C build_info:", info)
print("masked_cross_attention on cuda resolves to:", fsrf.info()["ops"]["masked_cross_attention"]["cuda"])
sys.exit(0 if info.get("with_cuda") else 1)
PYEOF
}
PHASE_NOTE="TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
run_phase build "$LIMIT_BUILD" build_phase

# ------------------------------------------------------------------------------------ tests
# what is left of TOTAL_S once the later phases have theirs (at least LIMIT_TESTS when env and
# build kept to their limits, more when they finished early)
LIMIT_TESTS=$(( t_all + TOTAL_S - $(date +%s) - LIMIT_BENCH - LIMIT_TRAIN - LIMIT_TABLE ))
[ "$LIMIT_TESTS" -ge 60 ] || LIMIT_TESTS=60
export LIMIT_TESTS
tests_phase() {
  local xdist=()
  if "$PY" -c 'import xdist' 2>/dev/null; then
    xdist=(-n "${PYTEST_WORKERS:-4}")
  else
    echo "pytest-xdist is not installed: the GPU tests run in one process (slower)"
  fi
  # SIGINT before the phase's SIGTERM: an interrupted pytest still writes its JUnit file
  timeout --signal=INT --kill-after=15 "$(( LIMIT_TESTS - 25 ))" \
    "$PY" -m pytest -m gpu tests/ -q -rfE -p no:cacheprovider --junitxml="$out/gpu_tests.xml" "${xdist[@]}"
}
case " $missing " in
  *" pytest "*|*" numpy "*)
    echo
    echo "=== phase tests: skipped, not installed: $missing ==="
    printf '%s\t%s\t%s\t%s\n' tests "skipped(missing $missing)" 0 "" >>"$out/phases.tsv"
    overall=1 ;;
  *)
    if [ -n "$missing" ]; then PHASE_NOTE="not installed: $missing"; fi
    run_phase tests "$LIMIT_TESTS" tests_phase ;;
esac

# ------------------------------------------------------------------------------------ bench
run_phase bench "$LIMIT_BENCH" "$PY" benchmarks/gpu_report.py bench "$out" --budget-s "$(( LIMIT_BENCH - 10 ))"

# ------------------------------------------------------------------------------------ train
# The prediction is printed before the measurement; BENCHMARKS.md ("GPU") has the same text.
train_phase() {
  cat <<'PREDICTION'
prediction (H100, written before any GPU run of this benchmark): at these shapes the step is
  launch-bound, so eager auto ~1.5-3x eager torch (one Triton launch per loss group instead of
  ~10 small kernels per term); compile(auto) = compile(auto, fullgraph) (the step has no graph
  break) ~1.3-2x eager auto; reduce-overhead (CUDA graphs) ~2-4x compile(auto, fullgraph) at
  B=64 T=50 and ~1.2-1.5x at T=50/500/500, where attention over 550-1000 keys becomes arithmetic.
PREDICTION
  local deadline=$(( $(date +%s) + LIMIT_TRAIN - 10 ))
  "$PY" benchmarks/bench_train_step.py --device cuda --rows "$out/bench_rows.jsonl" \
    --shape "MOSEI aligned B=64 T=50" --budget-s "$(( (LIMIT_TRAIN - 10) / 2 ))" || return 1
  # compile(auto) is left out at the second shape: the step has no graph break, so it is the
  # fullgraph row (the first shape shows both)
  "$PY" benchmarks/bench_train_step.py --device cuda --rows "$out/bench_rows.jsonl" \
    --shape "MOSEI unaligned B=64 T=50/500/500" --impl "eager torch" --impl "eager auto" \
    --impl "compile(auto, fullgraph)" --impl "compile(auto, fullgraph, reduce-overhead)" \
    --budget-s "$(( deadline - $(date +%s) ))"
}
if [ "$have_gpu" -eq 0 ]; then
  run_phase train "$LIMIT_TRAIN" train_phase
else
  printf '%s\t%s\t%s\t%s\n' train "skipped(no GPU)" 0 "" >>"$out/phases.tsv"
fi

# ------------------------------------------------------------------------------------ table
PHASE_NOTE="total $(( $(date +%s) - t_all )) s before the table"
printf '%s\t%s\t%s\t%s\n' "total" "$([ $overall -eq 0 ] && echo ok || echo 'some failed')" \
  "$(( $(date +%s) - t_all ))" "" >>"$out/phases.tsv"
timeout "$LIMIT_TABLE" "$PY" benchmarks/gpu_report.py table "$out" || { echo "table step failed"; overall=1; }

exec >&- 2>&-
wait "$tee_pid" 2>/dev/null
exit $overall
