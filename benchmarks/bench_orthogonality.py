"""orthogonality_loss: eager PyTorch (MISA's DiffLoss written the obvious way), torch.compile of it,
and fsrf's backends, at the FSRF shape (N = 64, d = 128) and a large one (N = 8192, d = 256).

Run with ``pytest benchmarks/bench_orthogonality.py --benchmark-only``. ``fsrf-triton`` rows need
a CUDA device (the Triton interpreter on CPU is a correctness tool, not a performance one).
"""

import pytest
import torch

import fsrf

DEV = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = {"fsrf 64x128/64x128": (64, 128, 128), "large 8192x256/8192x256": (8192, 256, 256)}
IMPLS = ["eager", "compile", "fsrf-torch", "fsrf-triton"]


def orth_eager(a, b, eps=1e-6):
    """MISA DiffLoss: centre columns, divide rows by (detached norm + eps), mean of squared AᵀB."""
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    a = a / (a.norm(dim=1, keepdim=True).detach() + eps)
    b = b / (b.norm(dim=1, keepdim=True).detach() + eps)
    return (a.T @ b).pow(2).mean()


_compiled = torch.compile(orth_eager)


def _impl(name):
    if name == "eager":
        return orth_eager
    if name == "compile":
        return _compiled
    if name == "fsrf-torch":
        return lambda a, b: fsrf.ops.orthogonality_loss(a, b, backend="torch")
    if DEV != "cuda":
        pytest.skip("fsrf-triton needs a CUDA device (none here; the CPU interpreter is not a benchmark)")
    return lambda a, b: fsrf.ops.orthogonality_loss(a, b, backend="triton")


def _sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("label", list(SHAPES))
def test_orthogonality(benchmark, peak_memory, machine, label, impl, mode):
    n, d1, d2 = SHAPES[label]
    fn = _impl(impl)
    fsrf.set_check_finite(False)     # the NaN check is a host sync: not part of the kernel cost
    try:
        a = torch.randn(n, d1, device=DEV, requires_grad=mode != "fwd")
        b = torch.randn(n, d2, device=DEV, requires_grad=mode != "fwd")

        def run():
            if mode == "fwd":
                with torch.no_grad():
                    out = fn(a, b)
            else:
                out = torch.autograd.grad(fn(a, b), (a, b))
            _sync()
            return out

        run()                       # compile / autotune / warm caches outside the timing
        mib = peak_memory(run, DEV)
        large = n * max(d1, d2) > 1 << 20
        rounds = 20 if DEV == "cuda" else (5 if large else 50)
        benchmark.group = f"orthogonality_loss {label} {mode}"
        benchmark.extra_info.update(op="orthogonality_loss", shape=f"{n}x{d1}/{n}x{d2}", mode=mode, impl=impl,
                                    peak_mib=round(mib, 3), device=DEV, machine=machine, dtype="float32")
        benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    finally:
        fsrf.set_check_finite(True)
