"""Benchmarks of fsrf.ops.kl_divergence (FSRF's symmetric, detached, T = 2 setting).

Rows per (shape, mode): ``eager`` (PyTorch written the obvious way: log_softmax + kl_div),
``compile`` (torch.compile of that), ``fsrf-torch`` (the reference backend) and ``fsrf-triton``
(the fused kernel; CUDA only). All rows of a run use one device: CUDA when present, else CPU.
Run with ``pytest benchmarks/bench_kl_divergence.py --benchmark-only``.
"""

import pytest
import torch
import torch.nn.functional as F

import fsrf

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
T = 2.0
SHAPES = {"fsrf 64x128": (64, 128), "large 4096x4096": (4096, 4096)}
IMPLS = ["eager", "compile", "fsrf-torch", "fsrf-triton"]


def eager_kl(s, t):
    """The obvious PyTorch: two log_softmax, two kl_div with detached targets, times T²."""
    ls = F.log_softmax(s / T, dim=-1)
    lt = F.log_softmax(t / T, dim=-1)
    fwd = F.kl_div(ls, lt.detach(), reduction="batchmean", log_target=True)
    rev = F.kl_div(lt, ls.detach(), reduction="batchmean", log_target=True)
    return (fwd + rev) * (T * T)


_compiled = None


def _impl(name):
    global _compiled
    if name == "eager":
        return eager_kl
    if name == "compile":
        if _compiled is None:
            _compiled = torch.compile(eager_kl)
        return _compiled
    backend = name.split("-", 1)[1]
    return lambda s, t: fsrf.ops.kl_divergence(s, t, temperature=T, symmetric=True,
                                               detach_target=True, backend=backend)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("label", list(SHAPES))
def test_kl_divergence(benchmark, peak_memory, machine, impl, mode, label):
    if impl == "fsrf-triton" and DEVICE != "cuda":
        pytest.skip("fsrf-triton is benchmarked on CUDA only (the CPU interpreter's timings mean nothing)")
    R, C = SHAPES[label]
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(R, C, generator=g) * 2).to(DEVICE)
    t = (s.cpu() + torch.randn(R, C, generator=g)).to(DEVICE)
    f = _impl(impl)
    if mode == "fwd+bwd":
        s.requires_grad_(True)
        t.requires_grad_(True)

        def fn():
            loss = f(s, t)
            torch.autograd.grad(loss, (s, t))
            _sync()
    else:
        def fn():
            with torch.no_grad():
                f(s, t)
            _sync()

    fn()  # warm-up: compilation, autotuning, allocator
    peak = peak_memory(fn, DEVICE)
    benchmark.group = f"kl_divergence {label} {mode}"
    benchmark.extra_info.update(op="kl_divergence", shape=f"{R}x{C}", mode=mode, impl=impl,
                                peak_mib=round(peak, 2), device=machine, dtype="float32",
                                setting="symmetric, detach_target, T=2")
    if DEVICE == "cpu" and R * C >= 2**22:
        benchmark.pedantic(fn, rounds=5, warmup_rounds=0)
    else:
        benchmark(fn)
