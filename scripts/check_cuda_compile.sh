#!/usr/bin/env bash
# Cheap CI check of the CUDA sources: compile every csrc/*.cu with nvcc for sm_80 and sm_90
# against the headers of the installed torch (a CPU wheel is enough; no GPU, no link), and print
# each kernel's register, shared-memory and spill usage (ptxas -v).
#
#   scripts/check_cuda_compile.sh            # uses $PYTHON, else `python`
#   ARCHS="90" scripts/check_cuda_compile.sh # only sm_90
#   NVCC_STD=c++17 scripts/check_cuda_compile.sh
#
# Exits 0 with a message when nvcc is absent, non-zero when a file fails to compile. The CPU
# wheel lacks one generated header, c10/cuda/impl/cuda_cmake_macros.h; a stub of it is written to
# a temporary include directory. The .cu files include only headers the CPU wheel ships
# (ATen/ATen.h, ATen/Dispatch.h, c10/cuda/*, torch/library.h; not ATen/cuda/CUDAContext.h, which
# needs cuSPARSE headers). The flags mirror setup.py's nvcc flags.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
PY="${PYTHON:-python}"
ARCHS="${ARCHS:-80 90}"
# torch.utils.cpp_extension compiles .cu files with -std=c++20 (torch >= 2.10), so check that.
STD="${NVCC_STD:-c++20}"

if ! command -v nvcc >/dev/null 2>&1; then
  echo "check_cuda_compile: nvcc not found on PATH; skipping the CUDA compile check"
  exit 0
fi

# The real toolkit root (nvcc on PATH may be a wrapper script outside the toolkit).
CUDA_HOME="${CUDA_HOME:-$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's|^#\$ TOP=\(.*\)/bin/\.\.$|\1|p' | head -n 1)}"
if [ -z "$CUDA_HOME" ] || [ ! -f "$CUDA_HOME/include/cuda_runtime.h" ]; then
  echo "check_cuda_compile: could not locate the CUDA toolkit (CUDA_HOME='$CUDA_HOME')" >&2
  exit 1
fi

mapfile -t TORCH_INC < <("$PY" -c 'from torch.utils.cpp_extension import include_paths; print("\n".join(include_paths()))' 2>/dev/null)
if [ "${#TORCH_INC[@]}" -eq 0 ]; then
  echo "check_cuda_compile: '$PY' cannot import torch" >&2
  exit 1
fi
torch_ver="$("$PY" -c 'import torch; print(torch.__version__)')"

stub="$(mktemp -d)"
trap 'rm -rf "$stub"' EXIT
mkdir -p "$stub/c10/cuda/impl"
echo '#define C10_CUDA_BUILD_SHARED_LIBS' > "$stub/c10/cuda/impl/cuda_cmake_macros.h"

inc=()
for d in "${TORCH_INC[@]}"; do inc+=("-I$d"); done
inc+=("-I$CUDA_HOME/include" "-I$stub" "-I$here/csrc")
gencode=()
for a in $ARCHS; do gencode+=("-gencode=arch=compute_${a},code=sm_${a}"); done
nthreads=$(echo "$ARCHS" | wc -w)

shopt -s nullglob
files=(csrc/*.cu)
if [ "${#files[@]}" -eq 0 ]; then
  echo "check_cuda_compile: no csrc/*.cu files"
  exit 0
fi

echo "nvcc: $(nvcc --version | tail -n 1)"
echo "CUDA_HOME: $CUDA_HOME   torch headers: $torch_ver   archs: $ARCHS"
status=0
for f in "${files[@]}"; do
  log="$stub/$(basename "$f").log"
  start=$(date +%s)
  # Same defines and flags as setup.py's CUDAExtension build (torch adds the -D__CUDA_NO_* ones).
  if nvcc -c -std="$STD" "${gencode[@]}" --threads "$nthreads" -O3 --use_fast_math --expt-relaxed-constexpr \
      -lineinfo -Xptxas -v -DFSRF_WITH_CUDA=1 -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H \
      -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
      -D__CUDA_NO_HALF2_OPERATORS__ "${inc[@]}" -o "$stub/out.o" "$f" >"$log" 2>&1; then
    echo "OK    $f  ($(( $(date +%s) - start )) s)"
  else
    echo "FAIL  $f  ($(( $(date +%s) - start )) s)"
    grep -v -E '^ptxas info|^ptxas   ' "$log" | grep -v -E 'warning #3306|bit_field|^ *\^? *$|Remark: The warnings' | cut -c1-400 | head -n 60
    status=1
    continue
  fi
  # ptxas -v prints per kernel: "Compiling entry function '<mangled>' for 'sm_90'", then
  # "Used N registers, ... bytes smem ..." and "N bytes stack frame, N bytes spill stores, ...".
  # One line per kernel and arch, demangled, with the spill counts; kernels that spill are flagged.
  "$PY" - "$log" <<'PYEOF'
import re, subprocess, sys
lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
rows, cur = [], None
for ln in lines:
    m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+)'", ln)
    if m:
        cur = {"name": m.group(1), "arch": m.group(2), "regs": "?", "spill_st": 0, "spill_ld": 0, "stack": 0}
        rows.append(cur)
        continue
    if cur is None:
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", ln)
    if m:
        cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
    m = re.search(r"Used (\d+) registers", ln)
    if m:
        cur["regs"] = m.group(1)
names = [r["name"] for r in rows]
try:
    dem = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
except OSError:
    dem = names
if len(dem) != len(names):
    dem = names
def short(n):
    n = re.sub(r"fsrf::mca::", "", n)
    n = n.replace("c10::BFloat16", "bf16").replace("c10::Half", "f16")
    return re.sub(r"\(.*\)$", "", n)
spilled = 0
for r, d in zip(rows, dem):
    flag = "  <-- SPILLS" if r["spill_st"] or r["spill_ld"] else ""
    spilled += bool(flag)
    print(f"  {r['arch']:6s} regs {r['regs']:>3s}  stack {r['stack']:>4d}  spill st/ld {r['spill_st']:>4d}/{r['spill_ld']:<4d} {short(d)}{flag}")
print(f"  {len(rows)} kernel builds, {spilled} with spills")
PYEOF
done
exit $status
