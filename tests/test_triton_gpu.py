"""GPU tests of the compiled Triton kernels behind fsrf.ops (backend="triton" on CUDA tensors).

The CPU CI runs these kernels only through Triton's interpreter (tests/test_<op>.py); here they
are compiled for the GPU. Every value and gradient is compared with a float64 formula of
_helpers.py, written from the op's definition and evaluated on the same inputs (low-precision
inputs are rounded first, so the comparison measures the kernels' arithmetic, not the input
rounding).
All tests are marked ``gpu`` and skip without a CUDA device.

Tolerances (max |error| / max |reference| unless said otherwise): float32 2e-4 (the kernels use
fp32 accumulation and tf32x3 products for float32), float16 5e-3, bfloat16 2e-2 (outputs and
gradients are rounded to the input dtype: 2^-11 and 2^-8 relative per element).
"""

from __future__ import annotations

import os

import pytest
import torch

import fsrf
from fsrf.runtime import backend as fsrf_backend

from _helpers import CUDA_MARKS, HAS_CUDA, decor64, kl64, mmd64_terms, orth64, terms64

pytestmark = [*CUDA_MARKS]
if HAS_CUDA and not fsrf_backend.available("triton", "cuda"):
    pytestmark.append(pytest.mark.skip(reason="triton is not installed"))

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
RTOL = {torch.float32: 2e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}
DEV = "cuda"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def leaves(*xs):
    """Detached copies requiring grad, and their float64 twins (same values)."""
    low = [x.detach().clone().requires_grad_() for x in xs]
    high = [x.detach().double().requires_grad_() for x in xs]
    return low, high


def check(name, got, want, rtol, scale=None):
    """max |got - want| <= rtol * (scale or max |want|) + rtol / 100.

    The absolute floor covers degenerate cases whose exact value is ~0 (N = 2 rows, C = 1
    classes) while the kernels' rounding is relative to intermediate terms of size ~1.
    """
    got, want = got.detach().double(), want.detach().double()
    assert not torch.isnan(got).any(), f"{name}: NaN"
    scale = want.abs().max().item() if scale is None else float(scale)
    err = (got - want).abs().max().item()
    assert err <= rtol * scale + rtol / 100, f"{name}: max error {err:.3e} > {rtol:.1e} x {scale:.3e}"


def compare(fn_fsrf, fn_ref, low, high, rtol, grad_out=1.7, scale=None):
    """Values and gradients (upstream gradient grad_out, not 1) of fsrf vs the float64 formula."""
    got = fn_fsrf(*low)
    want = fn_ref(*high)
    check("value", got, want, rtol, scale)
    gl = torch.autograd.grad(got * grad_out, [x for x in low if x.requires_grad], allow_unused=True)
    gh = torch.autograd.grad(want * grad_out, [x for x in high if x.requires_grad], allow_unused=True)
    for i, (a, b) in enumerate(zip(gl, gh)):
        if b is None:
            assert a is None or torch.all(a == 0), f"grad {i}: expected none"
            continue
        assert a is not None, f"grad {i}: missing"
        assert a.dtype == low[i].dtype, f"grad {i}: dtype {a.dtype} != {low[i].dtype}"
        check(f"grad {i}", a, b, rtol)


def test_triton_runs_compiled_not_interpreted():
    assert os.environ.get("TRITON_INTERPRET", "0") != "1"
    assert fsrf_backend.resolve("orthogonality_loss", "auto", DEV, ("torch", "triton")) == "triton"


# --------------------------------------------------------------------------------------------
# orthogonality_loss
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,detach_norm", [((64, 128, 128), True), ((64, 128, 128), False), ((200, 33, 70), True),
                                               ((2, 5, 3), False), ((4096, 64, 32), True)])
def test_orthogonality(dtype, shape, detach_norm):
    n, d1, d2 = shape
    a = torch.randn(n, d1, device=DEV).to(dtype)
    b = (torch.randn(n, d2, device=DEV) + 0.3 * a[:, :1].float()).to(dtype)
    low, high = leaves(a, b)
    compare(lambda x, y: fsrf.ops.orthogonality_loss(x, y, detach_norm=detach_norm, backend="triton"),
            lambda x, y: orth64(x, y, detach_norm=detach_norm), low, high, RTOL[dtype])


# --------------------------------------------------------------------------------------------
# decorrelation_loss
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(64, 128), (300, 33), (2, 7), (8192, 256)])
def test_decorrelation(dtype, shape):
    z = torch.randn(*shape, device=DEV)
    z[:, 1:] += 0.5 * z[:, :1]  # correlated columns: a loss well away from 0
    low, high = leaves(z.to(dtype))
    compare(lambda x: fsrf.ops.decorrelation_loss(x, backend="triton"), decor64, low, high, RTOL[dtype])


# --------------------------------------------------------------------------------------------
# kl_divergence
# --------------------------------------------------------------------------------------------

KL_FLAGS = [(1.0, False, True), (2.5, False, False), (0.7, True, True), (4.0, True, False)]
KL_CASES = ([((64, 1000),) + f for f in KL_FLAGS]
            + [(shape, 2.0, False, True) for shape in [(4096, 4096), (3, 5, 37), (7, 1)]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,temperature,symmetric,detach_target", KL_CASES)
def test_kl_divergence(dtype, shape, temperature, symmetric, detach_target):
    s = (2 * torch.randn(*shape, device=DEV)).to(dtype)
    t = (2 * torch.randn(*shape, device=DEV)).to(dtype)
    low, high = leaves(s, t)
    kw = dict(temperature=temperature, symmetric=symmetric, detach_target=detach_target)
    compare(lambda a, b: fsrf.ops.kl_divergence(a, b, backend="triton", **kw),
            lambda a, b: kl64(a, b, **kw), low, high, RTOL[dtype])


def test_kl_divergence_identical_inputs_is_zero():
    s = torch.randn(256, 333, device=DEV)
    val = fsrf.ops.kl_divergence(s, s.clone(), temperature=2.0, symmetric=True, backend="triton")
    assert abs(val.item()) < 1e-6


# --------------------------------------------------------------------------------------------
# mmd
# --------------------------------------------------------------------------------------------

MMD_KW = [dict(), dict(unbiased=True), dict(num_kernels=3, kernel_mul=3.0), dict(bandwidths=[0.5, 4.0, 40.0])]
MMD_CASES = [((300, 257, 40), kw) for kw in MMD_KW] + [(nmd, {}) for nmd in [(64, 64, 128), (2, 3, 5), (2048, 1500, 256)]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nm_d,kw", MMD_CASES)
def test_mmd(dtype, nm_d, kw):
    n, m, d = nm_d
    x = torch.randn(n, d, device=DEV).to(dtype)
    y = (1.2 * torch.randn(m, d, device=DEV) + 0.3).to(dtype)
    low, high = leaves(x, y)
    exx, eyy, exy = mmd64_terms(*high, **kw)
    # The estimate is a difference of three kernel means; its error is relative to their size.
    scale = (exx.abs() + eyy.abs() + 2 * exy.abs()).detach()
    got = fsrf.ops.mmd(*low, backend="triton", **kw)
    want = exx + eyy - 2 * exy
    check("value", got, want, RTOL[dtype], scale)
    gl = torch.autograd.grad(got * 1.7, low)
    gh = torch.autograd.grad(want * 1.7, high)
    for i, (a, b) in enumerate(zip(gl, gh)):
        assert a.dtype == dtype
        check(f"grad {i}", a, b, RTOL[dtype])


def test_mmd_same_sample_is_zero():
    x = torch.randn(777, 64, device=DEV)
    assert abs(fsrf.ops.mmd(x, x.clone(), backend="triton").item()) < 1e-5


def test_mmd_large_shape_memory_is_linear():
    x = torch.randn(8192, 256, device=DEV, requires_grad=True)
    y = torch.randn(8192, 256, device=DEV, requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = fsrf.ops.mmd(x, y, backend="triton")
    loss.backward()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    assert torch.isfinite(loss)
    assert peak < 64, f"peak extra memory {peak:.1f} MiB (an N x M fp32 matrix would be 256 MiB)"


# --------------------------------------------------------------------------------------------
# factor_constraints
# --------------------------------------------------------------------------------------------

def _factors(dtype, n=64, widths=(128, 128, 96, 128, 33, 128)):
    base = torch.randn(n, 1, device=DEV)
    return [(torch.randn(n, w, device=DEV) + 0.3 * base).to(dtype) for w in widths]


PAIRS = [(i, j) for i in range(6) for j in range(i + 1, 6)]  # 15 pairs, as FSRFLayer uses


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_masks", [False, True])
def test_factor_constraints(dtype, with_masks):
    factors = _factors(dtype)
    masks = None
    if with_masks:
        g = torch.Generator(device="cpu").manual_seed(3)
        masks = [(torch.rand(64, generator=g) < 0.7).to(DEV) for _ in factors]
        masks[1] = None
        masks[4] = torch.zeros(64, dtype=torch.bool, device=DEV)
        masks[4][5] = True  # a single observed row: its terms are 0
    decor = [0, 2, 4, 5]
    low, high = leaves(*factors)
    got = fsrf.ops.factor_constraints(low, PAIRS, decor, masks=masks, backend="triton")
    want = terms64(high, PAIRS, decor, masks=masks)
    assert got.shape == (len(PAIRS) + len(decor),)
    check("terms", got, want, RTOL[dtype])
    w = torch.linspace(0.5, 2.0, got.numel(), device=DEV)
    gl = torch.autograd.grad((got * w.to(got.dtype)).sum(), low)
    gh = torch.autograd.grad((want * w.double()).sum(), high)
    for i, (a, b) in enumerate(zip(gl, gh)):
        assert a.dtype == dtype
        check(f"grad factor {i}", a, b, RTOL[dtype])


# --------------------------------------------------------------------------------------------
# torch.compile(fullgraph=True) on the GPU
# --------------------------------------------------------------------------------------------

def _compile_case(name):
    if name == "orthogonality_loss":
        args = (torch.randn(64, 128, device=DEV), torch.randn(64, 96, device=DEV))
        return (lambda a, b: fsrf.ops.orthogonality_loss(a, b, backend="triton") * 2), args
    if name == "decorrelation_loss":
        return (lambda z: fsrf.ops.decorrelation_loss(z, backend="triton") * 2), (torch.randn(64, 128, device=DEV),)
    if name == "kl_divergence":
        args = (torch.randn(64, 500, device=DEV), torch.randn(64, 500, device=DEV))
        return (lambda s, t: fsrf.ops.kl_divergence(s, t, temperature=2.0, backend="triton") * 2), args
    if name == "mmd":
        args = (torch.randn(300, 64, device=DEV), torch.randn(200, 64, device=DEV))
        return (lambda x, y: fsrf.ops.mmd(x, y, backend="triton") * 2), args
    fs = tuple(torch.randn(64, 128, device=DEV) for _ in range(4))
    return (lambda *f: fsrf.ops.factor_constraints(list(f), [(0, 1), (2, 3), (1, 3)], [0, 3],
                                                   backend="triton").sum()), fs


@pytest.mark.parametrize("name", ["orthogonality_loss", "decorrelation_loss", "kl_divergence", "mmd",
                                  "factor_constraints"])
def test_torch_compile_fullgraph(name):
    torch._dynamo.reset()
    fn, args = _compile_case(name)
    a1 = [x.clone().requires_grad_() for x in args]
    a2 = [x.clone().requires_grad_() for x in args]
    got = torch.compile(fn, fullgraph=True)(*a1)
    want = fn(*a2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for x, y in zip(torch.autograd.grad(got, a1), torch.autograd.grad(want, a2)):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
