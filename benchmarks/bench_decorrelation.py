"""decorrelation_loss: eager PyTorch (Barlow-Twins off-diagonal penalty written the obvious way),
torch.compile of it, and fsrf's backends, at the FSRF shape (N = 64, d = 128) and a large one
(N = 8192, d = 256).

Run with ``pytest benchmarks/bench_decorrelation.py --benchmark-only``. ``fsrf-triton`` rows need a
CUDA device. The NaN/Inf input check (a host sync) is switched off while timing.
"""

import pytest
import torch

import fsrf

DEV = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = {"fsrf 64x128": (64, 128), "large 8192x256": (8192, 256)}
IMPLS = ["eager", "compile", "fsrf-torch", "fsrf-triton"]


def decor_eager(z, eps=1e-5):
    """Standardise columns (biased variance), C = ZsᵀZs/N, mean of the squared off-diagonal."""
    n, d = z.shape
    zs = (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)
    c = zs.T @ zs / n
    off = c - torch.diag(torch.diagonal(c))
    return off.pow(2).sum() / (d * (d - 1))


_compiled = torch.compile(decor_eager)


def _impl(name):
    if name == "eager":
        return decor_eager
    if name == "compile":
        return _compiled
    if name == "fsrf-torch":
        return lambda z: fsrf.ops.decorrelation_loss(z, backend="torch")
    if DEV != "cuda":
        pytest.skip("fsrf-triton needs a CUDA device (none here; the CPU interpreter is not a benchmark)")
    return lambda z: fsrf.ops.decorrelation_loss(z, backend="triton")


def _sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("label", list(SHAPES))
def test_decorrelation(benchmark, peak_memory, machine, label, impl, mode):
    n, d = SHAPES[label]
    fn = _impl(impl)
    fsrf.set_check_finite(False)
    try:
        z = torch.randn(n, d, device=DEV, requires_grad=mode != "fwd")

        def run():
            if mode == "fwd":
                with torch.no_grad():
                    out = fn(z)
            else:
                out = torch.autograd.grad(fn(z), (z,))
            _sync()
            return out

        run()
        mib = peak_memory(run, DEV)
        rounds = 20 if DEV == "cuda" else (5 if n * d > 1 << 20 else 50)
        benchmark.group = f"decorrelation_loss {label} {mode}"
        benchmark.extra_info.update(op="decorrelation_loss", shape=f"{n}x{d}", mode=mode, impl=impl,
                                    peak_mib=round(mib, 3), device=DEV, machine=machine, dtype="float32")
        benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    finally:
        fsrf.set_check_finite(True)
