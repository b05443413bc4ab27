"""Benchmarks of fsrf.ops.masked_cross_attention against the eager reference and SDPA.

Shapes: "msa" — a multimodal-sentiment batch (B=32, H=8, Tq=Tk=50, Dh=32); "long" — long
sequences (B=4, H=8, Tq=Tk=1024, Dh=64). Masks: "padded" — each sample observes a random prefix
of 50-100 % of its keys and one sample misses the key modality entirely (the FSRF setting);
"none" — every key observed. SDPA gets the same mask as a boolean ``attn_mask``.

The public op's NaN/Inf input check (a host sync per input, see ``fsrf.set_check_finite``) is
switched off here so that the rows compare the attention computations; SDPA has no such check.

Run: ``pytest benchmarks/bench_masked_cross_attention.py --benchmark-only``.
"""

import ctypes
import ctypes.util

import pytest
import torch
import torch.nn.functional as F

import fsrf
from fsrf import _extension
from fsrf.ops import masked_cross_attention

SHAPES = {"msa": (32, 8, 50, 50, 32), "long": (4, 8, 1024, 1024, 64)}
ROUNDS = {"msa": 30, "long": 3}
IMPLS = ["fsrf-cpp", "fsrf-torch", "sdpa"]
OP = "masked_cross_attention"

_libc_name = ctypes.util.find_library("c")
_libc = ctypes.CDLL(_libc_name) if _libc_name else None


def _peak_mib(peak_memory, fn):
    # glibc keeps freed blocks resident, which hides a call's allocations from the RSS
    # high-water mark the peak_memory fixture reads on CPU; hand them back first.
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)
    return round(peak_memory(fn, "cpu"), 2)


@pytest.fixture(autouse=True)
def _no_finite_check():
    prev = fsrf.backend.check_finite_enabled()
    fsrf.set_check_finite(False)
    yield
    fsrf.set_check_finite(prev)


def make_inputs(shape, mask_kind, seed=0):
    B, H, Tq, Tk, Dh = shape
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, Dh, generator=gen).requires_grad_() for T in (Tq, Tk, Tk))
    grad = torch.randn(B, H, Tq, Dh, generator=gen)
    if mask_kind == "none":
        mask = None
    else:
        lengths = torch.randint(Tk // 2, Tk + 1, (B,), generator=gen)
        if B > 1:
            lengths[1] = 0  # a sample whose key modality is missing
        mask = torch.arange(Tk)[None, :] < lengths[:, None]
    return q, k, v, mask, grad


def make_call(impl, q, k, v, mask):
    if impl == "fsrf-cpp":
        return lambda: masked_cross_attention(q, k, v, mask, backend="cpp")
    if impl == "fsrf-torch":
        return lambda: masked_cross_attention(q, k, v, mask, backend="torch")
    attn_mask = None if mask is None else mask[:, None, None, :]
    return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


def make_run(impl, mode, shape, mask_kind):
    q, k, v, mask, grad = make_inputs(shape, mask_kind)
    call = make_call(impl, q, k, v, mask)
    if mode == "fwd":
        def run():
            with torch.no_grad():
                return call()
    else:
        def run():
            return torch.autograd.grad(call(), (q, k, v), grad)
    return run


@pytest.mark.parametrize("mask_kind", ["padded", "none"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("label", list(SHAPES))
@pytest.mark.parametrize("impl", IMPLS)
def test_masked_cross_attention(benchmark, peak_memory, machine, impl, label, mode, mask_kind):
    if impl == "fsrf-cpp" and not _extension.has_cpp():
        pytest.skip(f"fsrf._C not loaded: {_extension.extension_error()}")
    shape = SHAPES[label]
    run = make_run(impl, mode, shape, mask_kind)
    benchmark.group = f"{OP} {label} {mask_kind}-mask {mode}"
    benchmark.extra_info.update(op=OP, shape=f"B,H,Tq,Tk,Dh={shape}", mode=mode, impl=impl, mask=mask_kind,
                                dtype="float32", machine=machine, threads=torch.get_num_threads(),
                                check_finite=False)
    benchmark.pedantic(run, rounds=ROUNDS[label], warmup_rounds=1, iterations=1)
    benchmark.extra_info["peak_mib"] = _peak_mib(peak_memory, run)


@pytest.mark.parametrize("T", [1024, 2048, 4096])
def test_masked_cross_attention_memory_scaling(benchmark, peak_memory, machine, T):
    """Peak memory of the cpp forward+backward with Tq = Tk = T: linear in T (the eager
    reference's T x T matrices are quadratic). The assertion compares against T = 1024."""
    if not _extension.has_cpp():
        pytest.skip(f"fsrf._C not loaded: {_extension.extension_error()}")
    shape = (1, 8, T, T, 64)
    run = make_run("fsrf-cpp", "fwd+bwd", shape, "padded")
    benchmark.group = f"{OP} memory-scaling fwd+bwd"
    benchmark.extra_info.update(op=OP, shape=f"B,H,Tq,Tk,Dh={shape}", mode="fwd+bwd", impl="fsrf-cpp",
                                mask="padded", dtype="float32", machine=machine)
    benchmark.pedantic(run, rounds=2, warmup_rounds=1, iterations=1)
    peak = _peak_mib(peak_memory, run)
    benchmark.extra_info["peak_mib"] = peak
    base = _peak_mib(peak_memory, make_run("fsrf-cpp", "fwd+bwd", (1, 8, 1024, 1024, 64), "padded"))
    # Linear growth gives T/1024 (x4 at 4096), quadratic (T/1024)^2 (x16); allow 1.5x slack.
    assert peak <= 1.5 * (T / 1024) * max(base, 1.0), (T, peak, base)
