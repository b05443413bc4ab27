"""Benchmarks of fsrf.ops.mmd (biased MMD², 5 Gaussian kernels, ratio 2, σ² from the data).

Rows per (shape, mode): ``eager`` (PyTorch written the obvious way, DAN style: torch.cdist of the
pooled sample, full n×n kernel matrices), ``compile`` (torch.compile of that), ``fsrf-torch``
(the row-chunked reference backend) and ``fsrf-triton`` (the tiled kernels; CUDA only). All rows
of a run use one device: CUDA when present, else CPU. A separate benchmark checks the spec's
memory bound for the torch backend (N = M = 20000, d = 64, forward + backward < 512 MiB).
The NaN/Inf input check (a host sync the peers do not pay) is switched off while timing.
Peers and shapes: ``_peers.py``. Run with ``pytest benchmarks/bench_mmd.py --benchmark-only``.
"""

import pytest
import torch

from _peers import (DEVICE, LOSS_IMPLS, MMD_KERNEL_MUL, MMD_KERNELS, MMD_MEMORY_BOUND_SHAPE, MMD_SHAPES, MODES,
                    make_step, no_finite_check, peer)

OP = "mmd"
SETTING = f"biased, {MMD_KERNELS} kernels, kernel_mul {MMD_KERNEL_MUL}"
# the dense baselines hold several n×n fp32 matrices (n = N + M); above this many bytes per
# matrix they are skipped on CPU, where the machine's RAM is shared (a GPU runs them)
CPU_DENSE_LIMIT = 2**28


def _step(impl, shape, mode):
    N, M, d = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, d, generator=g)
    y = torch.randn(M, d, generator=g) * 1.2 + 0.3
    x, y = x.to(DEVICE), y.to(DEVICE)
    if mode == "fwd+bwd":
        x.requires_grad_(True)
        y.requires_grad_(True)
    f = peer(OP, impl)
    return make_step(lambda: f(x, y), mode, (x, y))



@pytest.fixture(autouse=True)
def _no_finite_check():
    with no_finite_check():
        yield

@pytest.mark.parametrize("impl", LOSS_IMPLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label", list(MMD_SHAPES))
def test_mmd(benchmark, peak_memory, machine, impl, mode, label):
    N, M, d = MMD_SHAPES[label]
    n = N + M
    if impl in ("eager", "compile") and DEVICE == "cpu" and n * n * 4 > CPU_DENSE_LIMIT:
        pytest.skip(f"dense {n}x{n} kernel matrices ({n * n * 4 / 2**30:.1f} GiB each, ~8 of them with "
                    f"autograd) exceed this shared CPU machine's memory; run on a GPU")
    fn = _step(impl, (N, M, d), mode)
    slow = DEVICE == "cpu" and n * n >= 2**26
    if not slow or impl == "compile":
        fn()  # warm-up: compilation, autotuning, allocator
    benchmark.group = f"{OP} {label} {mode}"
    benchmark.extra_info.update(op=OP, shape=f"N={N} M={M} d={d}", mode=mode, impl=impl,
                                device=machine, dtype="float32", setting=SETTING)
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
    N, M, d = MMD_MEMORY_BOUND_SHAPE
    fn = _step(impl, MMD_MEMORY_BOUND_SHAPE, "fwd+bwd")
    if DEVICE == "cuda":
        fn()  # autotuning outside the measurement
    res = {}
    benchmark.group = "mmd memory N=M=20000 d=64 fwd+bwd"
    benchmark.pedantic(lambda: res.update(peak=peak_memory(fn, DEVICE)), rounds=1, warmup_rounds=0)
    benchmark.extra_info.update(op=OP, shape=f"N={N} M={M} d={d}", mode="fwd+bwd", impl=impl,
                                peak_mib=round(res["peak"], 2), device=machine, dtype="float32", setting=SETTING)
    # one dense 40000×40000 fp32 matrix alone would be 5.96 GiB
    assert res["peak"] < 512, res["peak"]
