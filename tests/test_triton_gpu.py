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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("nm_d", [(64, 64, 128), (700, 300, 40)])
def test_mmd_row_masks(dtype, unbiased, nm_d):
    # the selected rows only, bandwidth included, against the float64 formula on those rows
    n, m, d = nm_d
    g = torch.Generator(device="cpu").manual_seed(1)
    mx, my = (torch.rand(n, generator=g) > 0.3).to(DEV), (torch.rand(m, generator=g) > 0.4).to(DEV)
    x = torch.randn(n, d, device=DEV)
    x[~mx] += 40.0  # unselected rows far away: they would dominate if they took part
    x = x.to(dtype)
    y = (1.2 * torch.randn(m, d, device=DEV) + 0.3).to(dtype)
    low, high = leaves(x, y)
    got = fsrf.ops.mmd(*low, x_mask=mx, y_mask=my, unbiased=unbiased, backend="triton")
    sel = [high[0][mx], high[1][my]]
    exx, eyy, exy = mmd64_terms(*sel, unbiased=unbiased)
    check("value", got, exx + eyy - 2 * exy, RTOL[dtype], (exx.abs() + eyy.abs() + 2 * exy.abs()).detach())
    gl = torch.autograd.grad(got * 1.7, low)
    gh = torch.autograd.grad((exx + eyy - 2 * exy) * 1.7, high)
    for i, (a, b, mk) in enumerate(zip(gl, gh, (mx, my))):
        check(f"grad {i}", a[mk], b[mk], RTOL[dtype])
        assert a[~mk].abs().max() == 0
    one = torch.zeros(n, dtype=torch.bool, device=DEV)
    one[0] = True
    assert fsrf.ops.mmd(x, y, x_mask=one, backend="triton").item() == 0.0


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


# --------------------------------------------------------------------------------------------
# launches: the inputs' device, grids beyond 65535 row tiles
# --------------------------------------------------------------------------------------------

@pytest.mark.skipif(HAS_CUDA and torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_kernels_run_on_the_inputs_device_not_the_current_one():
    # inputs on cuda:1 while cuda:0 is current: every launcher must switch to cuda:1
    dev = "cuda:1"
    g = torch.Generator(device="cpu").manual_seed(2)
    x, y = torch.randn(300, 64, generator=g), torch.randn(200, 64, generator=g)
    s, t = torch.randn(64, 500, generator=g), torch.randn(64, 500, generator=g)
    fs = [torch.randn(64, 128, generator=g) for _ in range(4)]
    mask = torch.rand(300, generator=g) > 0.3

    def run(device):
        leaves_ = [v.to(device).requires_grad_() for v in (x, y, s, t, *fs)]
        xl, yl, sl, tl, *fl = leaves_
        loss = (fsrf.ops.mmd(xl, yl, backend="triton") + fsrf.ops.mmd(xl, yl, x_mask=mask.to(device), backend="triton")
                + fsrf.ops.kl_divergence(sl, tl, temperature=2.0, symmetric=True, backend="triton")
                + fsrf.ops.factor_constraints(fl, [(0, 1), (2, 3)], [0, 3], backend="triton").sum())
        grads = torch.autograd.grad(loss, leaves_, allow_unused=True)
        return [loss.detach().cpu()] + [gr.cpu() for gr in grads if gr is not None]

    with torch.cuda.device(0):
        got = run(dev)
    want = run("cuda:0")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gram_backward_beyond_65535_row_tiles():
    # 65536 tiles of 64 rows and one more: on grid axis 1 this launch would fail
    n = 65536 * 64 + 1
    a = torch.randn(n, 4, device=DEV)
    b = torch.randn(n, 4, device=DEV) + 0.1 * a
    low, high = leaves(a, b)
    got = fsrf.ops.orthogonality_loss(*low, backend="triton")
    want = fsrf.ops.orthogonality_loss(*high, backend="torch")
    check("value", got, want, RTOL[torch.float32])
    for i, (x, y) in enumerate(zip(torch.autograd.grad(got, low), torch.autograd.grad(want, high))):
        check(f"grad {i}", x, y, 1e-3)


# --------------------------------------------------------------------------------------------
# the whole FSRF training step, compiled
# --------------------------------------------------------------------------------------------

def test_fsrf_training_loss_compiles_fullgraph_on_cuda():
    import torch._inductor.config as inductor_config

    from fsrf import FSRFConfig, FSRFModel

    torch._dynamo.reset()
    dims = {"text": 48, "audio": 12, "vision": 10}
    model = FSRFModel(dims, FSRFConfig(d_model=32, num_heads=4, dropout=0.0)).to(DEV).train()
    g = torch.Generator(device="cpu").manual_seed(0)
    B, T = 16, 7
    inputs = {m: torch.randn(B, T, d, generator=g).to(DEV) for m, d in dims.items()}
    masks = {m: (torch.rand(B, T, generator=g) > 0.3).to(DEV) for m in dims}
    masks["audio"][:4] = False  # some samples without audio
    labels = torch.randn(B, generator=g).to(DEV)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(fn):
        torch.manual_seed(3)  # the same second view in both runs
        loss, _ = fn(inputs, masks, labels)
        return [loss.detach()] + list(torch.autograd.grad(loss, params, allow_unused=True))

    # inductor's own random numbers would draw another second view than eager
    with inductor_config.patch(fallback_random=True):
        got = step(torch.compile(model.training_loss, fullgraph=True))
    want = step(model.training_loss)
    for a, b in zip(got, want):
        if b is None:
            assert a is None or a.abs().max() == 0
        else:
            torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-4)
