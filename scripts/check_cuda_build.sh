#!/usr/bin/env bash
# Full CUDA build check on a machine without a GPU: build fsrf._C with its CUDA kernels against
# the CUDA build of torch, then check that it imports, reports CUDA, registers the CUDA kernels
# with the dispatcher, and that the CPU path still works.
#
#   scripts/check_cuda_build.sh
#
# Environment (all optional):
#   CUDA_VENV             venv holding the CUDA torch (default: .venv-cuda in the repository;
#                         created when missing: about 5.5 GB, a minute or two from a local wheel
#                         mirror, more when downloaded)
#   PYTHON                interpreter that creates that venv (default: python3)
#   TORCH_CUDA_SPEC       torch requirement for the venv (default: torch==2.14.1, a CUDA 13 build)
#   TORCH_CUDA_ARCH_LIST  archs to build (default: 9.0)
#   MAX_JOBS              parallel compile jobs (default: 2)
#   KEEP_SCRATCH=1        keep the scratch copy the build ran in
#
# The build runs in a scratch copy of the working tree (tracked files plus untracked files that
# git does not ignore, so uncommitted edits are included) and installs fsrf into the venv, so
# the repository's own in-place build is left alone. nvcc must be on PATH (exit 0 with a message
# when it is not); CUDA_HOME is derived from it by setup.py.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CUDA_VENV:-$root/.venv-cuda}"
PYBASE="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_CUDA_SPEC:-torch==2.14.1}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-2}"

if ! command -v nvcc >/dev/null 2>&1; then
  echo "check_cuda_build: nvcc not found on PATH; skipping the CUDA build check"
  exit 0
fi

t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

# 1. The CUDA torch venv.
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
  stamp "creating $VENV with $TORCH_SPEC"
  "$PYBASE" -m venv "$VENV"
  "$VENV/bin/pip" install -q "$TORCH_SPEC" numpy ninja pybind11 setuptools
fi
"$VENV/bin/python" -c 'import torch; assert torch.version.cuda, "torch in the venv is a CPU build"; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU visible:", torch.cuda.is_available())'
stamp "venv ready"

# 2. Scratch copy of the working tree.
scratch="$(mktemp -d)"
cleanup() {
  if [ "${KEEP_SCRATCH:-0}" = "1" ]; then echo "scratch copy kept: $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT
(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents "{}" "$scratch/" 2>/dev/null || true)
# Files deleted in the work tree but still tracked are listed by --cached and fail to copy; fine.
[ -f "$scratch/setup.py" ] || { echo "check_cuda_build: scratch copy lacks setup.py" >&2; exit 1; }
stamp "scratch copy in $scratch ($(find "$scratch" -type f | wc -l) files)"

# 3. Build and install into the venv.
bstart=$(date +%s)
if ! (cd "$scratch" && "$VENV/bin/pip" install --no-build-isolation --no-deps --force-reinstall -v . >"$scratch/build.log" 2>&1); then
  echo "check_cuda_build: BUILD FAILED; last lines of the log:" >&2
  grep -E "error|Error|FAILED" "$scratch/build.log" | head -n 40 >&2 || true
  tail -n 40 "$scratch/build.log" >&2
  exit 1
fi
btime=$(( $(date +%s) - bstart ))
grep -E "nvcc .*masked_cross_attention_cuda" "$scratch/build.log" | head -n 1 | sed 's/^/  nvcc command: /' | cut -c1-400 || true
stamp "built and installed in ${btime} s (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, MAX_JOBS=$MAX_JOBS)"

# 4. Checks, from a directory where `import fsrf` cannot pick up a source tree.
mkdir -p "$scratch/empty"
cd "$scratch/empty"
"$VENV/bin/python" - <<'PYEOF'
import os, sys, warnings
import torch
import fsrf
from fsrf.runtime import backend, extension as _extension

assert os.path.dirname(fsrf.__file__).startswith(sys.prefix) or "site-packages" in fsrf.__file__, fsrf.__file__
err = _extension.extension_error()
assert err is None, f"fsrf._C did not load: {err}"
import fsrf._C as C
info = dict(C.build_info())
print("build_info:", info)
assert info["with_cuda"] is True, "fsrf._C was built without CUDA kernels"
assert _extension.has_cuda_kernels()
for op in ("fsrf::masked_cross_attention_fwd", "fsrf::masked_cross_attention_bwd"):
    for key in ("CPU", "CUDA"):
        ok = torch._C._dispatch_has_kernel_for_dispatch_key(op, key)
        print(f"{op} has a {key} kernel: {ok}")
        assert ok, f"{op} has no {key} kernel"
assert backend.available("cuda", "cuda"), "backend 'cuda' not usable for CUDA tensors"

# The CPU path of the same build.
from fsrf.ops import masked_cross_attention
g = torch.Generator().manual_seed(0)
q = torch.randn(2, 2, 7, 33, generator=g, dtype=torch.float64, requires_grad=True)
k = torch.randn(2, 2, 11, 33, generator=g, dtype=torch.float64, requires_grad=True)
v = torch.randn(2, 2, 11, 33, generator=g, dtype=torch.float64, requires_grad=True)
mask = torch.rand(2, 11, generator=g) < 0.6
mask[1] = False
out = masked_cross_attention(q, k, v, mask, backend="cpp")
ref = masked_cross_attention(q, k, v, mask, backend="torch")
assert torch.allclose(out, ref, atol=1e-10, rtol=1e-8), (out - ref).abs().max()
grads = torch.autograd.grad(out.sum(), (q, k, v))
rgrads = torch.autograd.grad(ref.sum(), (q, k, v))
for a, b in zip(grads, rgrads):
    assert torch.allclose(a, b, atol=1e-8, rtol=1e-6), (a - b).abs().max()
assert out[1].abs().max() == 0
print("CPU path: cpp backend matches the torch reference (values and grads, float64)")

if not torch.cuda.is_available():
    try:
        torch.ops.fsrf.masked_cross_attention_fwd(q.detach().to("cuda"), k.detach().to("cuda"),
                                                  v.detach().to("cuda"), None, 0.5)
    except Exception as exc:  # no driver here: the CUDA kernel can only be compiled, not run
        print("CUDA call without a GPU fails as expected:", type(exc).__name__, str(exc).splitlines()[0][:100])
print("check_cuda_build: OK")
PYEOF
stamp "all checks passed"
