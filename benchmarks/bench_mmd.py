"""Benchmarks of fsrf.ops.mmd (biased MMD², 5 Gaussian kernels, ratio 2, σ² from the data).

Rows per (shape, mode): ``eager`` (PyTorch written the obvious way, DAN style: torch.cdist of the
pooled sample, full n×n kernel matrices), ``compile`` (torch.compile of that), ``fsrf-torch``
(the row-chunked reference backend) and ``fsrf-triton`` (the tiled kernels; CUDA only). All rows
of a run use one device: CUDA when present, else CPU. A separate benchmark checks the spec's
memory bound for the torch backend (N = M = 20000, d = 64, forward + backward < 512 MiB).
Run with ``pytest benchmarks/bench_mmd.py --benchmark-only``.
"""

import pytest
import torch

import fsrf

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
K, MUL = 5, 2.0
SHAPES = {"fsrf 64x64x128": (64, 64, 128), "large 8192x8192x256": (8192, 8192, 256)}
IMPLS = ["eager", "compile", "fsrf-torch", "fsrf-triton"]
# the dense baselines hold several n×n fp32 matrices (n = N + M); above this many bytes per
# matrix they are skipped on CPU, where the machine's RAM is shared (a GPU runs them)
CPU_DENSE_LIMIT = 2**28


def eager_mmd(x, y):
    """The obvious PyTorch: cdist of the pooled sample, σ² from it, K full kernel matrices."""
    n = x.shape[0] + y.shape[0]
    total = torch.cat([x, y])
    l2 = torch.cdist(total, total) ** 2
    bw = l2.detach().sum() / (n * n - n)
    bw = bw / (MUL ** (K // 2))
    kern = sum(torch.exp(-l2 / (bw * MUL ** i)) for i in range(K))
    N = x.shape[0]
    return kern[:N, :N].mean() + kern[N:, N:].mean() - 2 * kern[:N, N:].mean()


_compiled = None


def _impl(name):
    global _compiled
    if name == "eager":
        return eager_mmd
    if name == "compile":
        if _compiled is None:
            _compiled = torch.compile(eager_mmd)
        return _compiled
    backend = name.split("-", 1)[1]
    return lambda x, y: fsrf.ops.mmd(x, y, num_kernels=K, kernel_mul=MUL, backend=backend)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _data(N, M, d):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, d, generator=g)
    y = torch.randn(M, d, generator=g) * 1.2 + 0.3
    return x.to(DEVICE), y.to(DEVICE)


def _fn(f, x, y, mode):
    if mode == "fwd+bwd":
        x.requires_grad_(True)
        y.requires_grad_(True)

        def fn():
            torch.autograd.grad(f(x, y), (x, y))
            _sync()
    else:
        def fn():
            with torch.no_grad():
                f(x, y)
            _sync()
    return fn


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("label", list(SHAPES))
def test_mmd(benchmark, peak_memory, machine, impl, mode, label):
    N, M, d = SHAPES[label]
    n = N + M
    if impl == "fsrf-triton" and DEVICE != "cuda":
        pytest.skip("fsrf-triton is benchmarked on CUDA only (the CPU interpreter's timings mean nothing)")
    if impl in ("eager", "compile") and DEVICE == "cpu" and n * n * 4 > CPU_DENSE_LIMIT:
        pytest.skip(f"dense {n}x{n} kernel matrices ({n * n * 4 / 2**30:.1f} GiB each, ~8 of them with "
                    f"autograd) exceed this shared CPU machine's memory; run on a GPU")
    x, y = _data(N, M, d)
    fn = _fn(_impl(impl), x, y, mode)
    slow = DEVICE == "cpu" and n * n >= 2**26
    if not slow or impl == "compile":
        fn()  # warm-up: compilation, autotuning, allocator
    benchmark.group = f"mmd {label} {mode}"
    benchmark.extra_info.update(op="mmd", shape=f"N={N} M={M} d={d}", mode=mode, impl=impl,
                                device=machine, dtype="float32",
                                setting=f"biased, {K} kernels, kernel_mul {MUL}")
    if slow:
        # one timed call that also measures the peak memory (the CPU run takes tens of seconds)
        res = {}
        benchmark.pedantic(lambda: res.update(peak=peak_memory(fn, DEVICE)), rounds=1, warmup_rounds=0)
        peak = res["peak"]
    else:
        peak = peak_memory(fn, DEVICE)
        benchmark(fn)
    benchmark.extra_info["peak_mib"] = round(peak, 2)


@pytest.mark.parametrize("impl", ["fsrf-torch", "fsrf-triton"])
def test_mmd_memory_bound_20000(benchmark, peak_memory, machine, impl):
    """The spec's bound: N = M = 20000, d = 64, forward + backward in < 512 MiB of extra memory."""
    if impl == "fsrf-triton" and DEVICE != "cuda":
        pytest.skip("fsrf-triton is benchmarked on CUDA only (the CPU interpreter's timings mean nothing)")
    N = M = 20000
    d = 64
    x, y = _data(N, M, d)
    fn = _fn(_impl(impl), x, y, "fwd+bwd")
    if DEVICE == "cuda":
        fn()  # autotuning outside the measurement
    res = {}
    benchmark.group = "mmd memory N=M=20000 d=64 fwd+bwd"
    benchmark.pedantic(lambda: res.update(peak=peak_memory(fn, DEVICE)), rounds=1, warmup_rounds=0)
    benchmark.extra_info.update(op="mmd", shape=f"N={N} M={M} d={d}", mode="fwd+bwd", impl=impl,
                                peak_mib=round(res["peak"], 2), device=machine, dtype="float32",
                                setting=f"biased, {K} kernels, kernel_mul {MUL}")
    # one dense 40000×40000 fp32 matrix alone would be 5.96 GiB
    assert res["peak"] < 512, res["peak"]
