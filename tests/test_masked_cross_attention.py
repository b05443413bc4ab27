"""Tests of fsrf.ops.masked_cross_attention (cpp and torch backends on CPU; cuda when present).

Everything is checked against an independent float64 formula (``_helpers.attention64``): per
sample, gather the observed keys and run a plain softmax — no -inf masking, no online softmax.
"""

import importlib
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import fsrf
from fsrf.ops import masked_cross_attention as mca
from fsrf.reference.masked_cross_attention import masked_cross_attention as reference

from _helpers import attention64, requires_cpp, requires_cuda

# fsrf.ops re-exports the function under the module's name, so fetch the module itself.
mca_module = importlib.import_module("fsrf.ops.masked_cross_attention")

BACKENDS = [pytest.param("cpp", marks=requires_cpp), "torch"]


def make(B, H, Tq, Tk, Dh, dtype=torch.float32, mask="random", requires_grad=True, device="cpu"):
    q = torch.randn(B, H, Tq, Dh, dtype=dtype, device=device)
    k = torch.randn(B, H, Tk, Dh, dtype=dtype, device=device)
    v = torch.randn(B, H, Tk, Dh, dtype=dtype, device=device)
    if mask is None:
        m = None
    else:
        m = torch.rand(B, Tk, device=device) > 0.4
        if B > 1:
            m[0] = False  # a fully masked sample (whole modality missing)
        if B > 2:
            m[2] = True   # a fully observed one
    for t in (q, k, v):
        t.requires_grad_(requires_grad)
    return q, k, v, m


def grads(out, inputs, g):
    res = torch.autograd.grad(out, inputs, g, allow_unused=True)
    return [torch.zeros_like(x) if r is None else r for r, x in zip(res, inputs)]


SHAPES = [
    (2, 3, 5, 7, 8),        # tiny
    (3, 2, 17, 1, 5),       # Tk = 1, odd Dh
    (4, 2, 33, 70, 13),     # Tq != Tk, odd Dh, several vector widths
    (3, 1, 70, 300, 64),    # several query blocks (64) and key blocks (256)
    (2, 2, 9, 40, 1),       # Dh = 1
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mask", ["random", None])
def test_values_and_grads_match_float64(backend, dtype, shape, mask):
    q, k, v, m = make(*shape, dtype=dtype, mask=mask)
    g = torch.randn_like(q)
    out = mca(q, k, v, m, backend=backend)
    assert out.shape == q.shape and out.dtype == dtype
    got = grads(out, (q, k, v), g)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = attention64(q64, k64, v64, m)
    want = grads(ref, (q64, k64, v64), g.double())
    tol = dict(atol=1e-11, rtol=1e-9) if dtype == torch.float64 else dict(atol=2e-5, rtol=2e-4)
    torch.testing.assert_close(out.double(), ref, **tol)
    for name, a, b in zip("qkv", got, want):
        assert torch.isfinite(a).all(), f"d{name} has non-finite values"
        torch.testing.assert_close(a.double(), b, **tol, msg=lambda s: f"d{name}: {s}")
    if m is not None:
        dead = ~m.any(dim=1)
        assert dead.any()
        assert (out[dead] == 0).all(), "fully masked samples must give exactly 0"
        assert (got[0][dead] == 0).all(), "fully masked samples must give dq exactly 0"
        masked_keys = ~m[:, None, :, None].expand_as(k)
        assert (got[1][masked_keys] == 0).all() and (got[2][masked_keys] == 0).all(), "masked keys get dk = dv = 0"


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_float64(backend):
    q, k, v, m = make(3, 1, 3, 5, 3, dtype=torch.float64)  # sample 0 fully masked
    m[1, :3] = False
    assert torch.autograd.gradcheck(lambda a, b, c: mca(a, b, c, m, backend=backend), (q, k, v))
    q, k, v, _ = make(2, 1, 3, 1, 3, dtype=torch.float64, mask=None)
    assert torch.autograd.gradcheck(lambda a, b, c: mca(a, b, c, None, scale=0.7, backend=backend), (q, k, v))


@requires_cpp
@pytest.mark.parametrize("seed", range(4))
def test_cpp_and_torch_backends_agree_on_random_shapes(seed):
    gen = torch.Generator().manual_seed(seed)
    B, H, Tq, Tk, Dh = (int(torch.randint(lo, hi, (1,), generator=gen)) for lo, hi in
                        ((1, 5), (1, 4), (1, 90), (1, 400), (1, 70)))
    q, k, v, m = make(B, H, Tq, Tk, Dh)
    scale = float(torch.rand(1, generator=gen)) + 0.1
    g = torch.randn_like(q)
    a = mca(q, k, v, m, scale=scale, backend="cpp")
    b = mca(q, k, v, m, scale=scale, backend="torch")
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for x, y in zip(grads(a, (q, k, v), g), grads(b, (q, k, v), g)):
        torch.testing.assert_close(x, y, atol=2e-5, rtol=2e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_sdpa_on_rows_with_keys(backend):
    q, k, v, m = make(4, 3, 20, 45, 16, dtype=torch.float64)
    g = torch.randn_like(q)
    out = mca(q, k, v, m, backend=backend)
    sd = F.scaled_dot_product_attention(q, k, v, attn_mask=m[:, None, None, :])
    live = m.any(dim=1)
    torch.testing.assert_close(out[live], sd[live], atol=1e-12, rtol=1e-10)
    a, b = grads(out, (q, k, v), g), grads(sd, (q, k, v), g)
    torch.testing.assert_close(a[0][live], b[0][live], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(a[1][live], b[1][live], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(a[2][live], b[2][live], atol=1e-12, rtol=1e-10)


@requires_cpp
def test_lse_contract():
    """lse = log-sum-exp of the scaled observed scores (float32), +inf on fully masked rows."""
    q, k, v, m = make(3, 2, 6, 9, 4, dtype=torch.float64, requires_grad=False)
    out, lse = torch.ops.fsrf.masked_cross_attention_fwd(q, k, v, m, 0.4)
    assert lse.dtype == torch.float32 and lse.shape == (3, 2, 6)
    s = (q @ k.transpose(-1, -2) * 0.4).masked_fill(~m[:, None, None, :], -math.inf)
    want = torch.logsumexp(s, dim=-1)
    assert torch.isinf(lse[0]).all() and (lse[0] > 0).all()
    torch.testing.assert_close(lse[1:], want[1:].float())
    assert out.is_contiguous()


@requires_cpp
def test_nan_in_masked_keys_does_not_leak():
    # Masked keys are skipped, never multiplied by 0, so garbage there cannot poison the result
    # (unlike SDPA, pytorch/pytorch#101967). The public op's finite check would reject NaN, so
    # call the registered op directly.
    q, k, v, m = make(2, 2, 5, 8, 4, requires_grad=False)
    m[1] = torch.tensor([True, False] * 4)
    k2, v2 = k.clone(), v.clone()
    k2[~m[:, None, :, None].expand_as(k)] = float("nan")
    v2[~m[:, None, :, None].expand_as(v)] = float("inf")
    out, _ = torch.ops.fsrf.masked_cross_attention_fwd(q, k2, v2, m, 0.5)
    ref, _ = torch.ops.fsrf.masked_cross_attention_fwd(q, k, v, m, 0.5)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    q, k, v, m = make(2, 5, 3, 11, 8, requires_grad=False)
    # (B, T, H, Dh) storage viewed as (B, H, T, Dh), as MultiheadAttention-style projections give.
    qt, kt, vt = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    assert not qt.is_contiguous()
    torch.testing.assert_close(mca(qt, kt, vt, m, backend=backend), attention64(q, k, v, m).float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_queries(backend):
    q, k, v, m = make(2, 3, 0, 4, 8)
    out = mca(q, k, v, m, backend=backend)
    assert out.shape == (2, 3, 0, 8)
    dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v), allow_unused=True, materialize_grads=True)
    assert dq.shape == q.shape and (dk == 0).all() and (dv == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [-0.8, 0.0, 3.0])
def test_any_finite_scale(backend, scale):
    # Negative scales flip which key is the row maximum; 0 gives uniform weights.
    q, k, v, m = make(3, 2, 7, 300, 16, dtype=torch.float64)
    g = torch.randn_like(q)
    out = mca(q, k, v, m, scale=scale, backend=backend)
    q64, k64, v64 = (x.detach().requires_grad_() for x in (q, k, v))
    ref = attention64(q64, k64, v64, m, scale=scale)
    torch.testing.assert_close(out, ref, atol=1e-11, rtol=1e-9)
    for a, b in zip(grads(out, (q, k, v), g), grads(ref, (q64, k64, v64), g)):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    q, k, v, _ = make(0, 2, 3, 5, 4)
    out = mca(q, k, v, torch.ones(0, 5, dtype=torch.bool), backend=backend)
    assert out.shape == (0, 2, 3, 4)
    assert torch.autograd.grad(out.sum(), q)[0].shape == q.shape


@requires_cpp
def test_deterministic():
    q, k, v, m = make(3, 4, 70, 300, 32)
    g = torch.randn_like(q)
    a = mca(q, k, v, m, backend="cpp")
    b = mca(q, k, v, m, backend="cpp")
    assert torch.equal(a, b)
    for x, y in zip(grads(a, (q, k, v), g), grads(b, (q, k, v), g)):
        assert torch.equal(x, y)


def test_default_scale_is_inverse_sqrt_dh():
    q, k, v, m = make(2, 1, 4, 5, 9, dtype=torch.float64, requires_grad=False)
    torch.testing.assert_close(mca(q, k, v, m), attention64(q, k, v, m, scale=1 / 3))


# --------------------------------------------------------------------------------------------
# Low precision: FlashAttention's rule — our error against a high-precision reference may be at
# most 2x (forward) / 3x (gradients) the error of plain PyTorch run in the same dtype, plus a small
# absolute floor for cases where plain PyTorch happens to be nearly exact.
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 2, 40, 300, 32), (3, 2, 9, 17, 7)])
def test_low_precision_flash_rule(backend, dtype, shape):
    q, k, v, m = make(*shape, dtype=dtype)
    g = torch.randn_like(q)
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = attention64(q64, k64, v64, m)
    ref_g = grads(ref, (q64, k64, v64), g.double())
    pt = reference(q, k, v, m, upcast=False)  # plain PyTorch in the low-precision dtype
    pt_g = grads(pt, (q, k, v), g)
    out = mca(q, k, v, m, backend=backend)
    assert out.dtype == dtype
    out_g = grads(out, (q, k, v), g)
    floor = 1e-5

    def err(a, b):
        return (a.double() - b).abs().max().item()

    assert err(out, ref) <= 2 * err(pt, ref) + floor
    for name, a, p, r in zip("qkv", out_g, pt_g, ref_g):
        assert a.dtype == dtype
        assert err(a, r) <= 3 * err(p, r) + floor, f"d{name}: {err(a, r)} vs plain {err(p, r)}"


# --------------------------------------------------------------------------------------------
# Registration: opcheck, torch.compile
# --------------------------------------------------------------------------------------------

def _opcheck_samples():
    out = []
    for dtype, mask, rg in ((torch.float32, "random", False), (torch.float32, "random", True),
                            (torch.float64, None, True), (torch.bfloat16, "random", True)):
        q, k, v, m = make(3, 2, 5, 7, 8, dtype=dtype, mask=mask, requires_grad=rg)
        out.append((q, k, v, m, 0.35))
    q, k, v, m = make(2, 3, 4, 6, 8, requires_grad=True)
    out.append((q.transpose(2, 3).contiguous().transpose(2, 3), k, v, m, 0.5))  # non-contiguous q
    return out


@requires_cpp
def test_opcheck_forward():
    for args in _opcheck_samples():
        opcheck(torch.ops.fsrf.masked_cross_attention_fwd.default, args)


@requires_cpp
def test_opcheck_backward():
    for q, k, v, m, scale in _opcheck_samples():
        q, k, v = q.detach(), k.detach(), v.detach()
        out, lse = torch.ops.fsrf.masked_cross_attention_fwd(q, k, v, m, scale)
        opcheck(torch.ops.fsrf.masked_cross_attention_bwd.default,
                (torch.randn_like(out), q, k, v, m, out, lse, scale))


@requires_cpp
def test_lse_is_not_differentiable():
    q, k, v, m = make(2, 1, 3, 4, 4)
    _, lse = torch.ops.fsrf.masked_cross_attention_fwd(q, k, v, m, 0.5)
    assert not lse.requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    q, k, v, m = make(3, 2, 6, 10, 8)
    g = torch.randn_like(q)

    def f(a, b, c, mask):
        return mca(a, b, c, mask, backend=backend) * 2.0

    compiled = torch.compile(f, fullgraph=True)
    out = compiled(q, k, v, m)
    want = f(q, k, v, m)
    torch.testing.assert_close(out, want)
    for x, y in zip(grads(out, (q, k, v), g), grads(want, (q, k, v), g)):
        torch.testing.assert_close(x, y)


# --------------------------------------------------------------------------------------------
# Backend routing
# --------------------------------------------------------------------------------------------

def _spy_reference(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return reference(*args, **kwargs)

    monkeypatch.setattr(mca_module, "_reference", spy)
    return calls


def test_set_backend_torch_routes_to_reference(monkeypatch):
    calls = _spy_reference(monkeypatch)
    q, k, v, m = make(2, 1, 3, 4, 4)
    fsrf.set_backend("torch")
    mca(q, k, v, m)
    assert len(calls) == 1
    with fsrf.use_backend("torch"):
        mca(q, k, v, m)
    assert len(calls) == 2


@requires_cpp
def test_auto_uses_the_extension_on_cpu(monkeypatch):
    calls = _spy_reference(monkeypatch)
    q, k, v, m = make(2, 1, 3, 4, 4)
    mca(q, k, v, m)
    mca(q, k, v, m, backend="cpp")
    assert calls == []
    mca(q, k, v, m, backend="torch")
    assert len(calls) == 1


def test_env_var_routes_to_reference():
    code = textwrap.dedent("""
        import importlib, torch, fsrf
        mod = importlib.import_module("fsrf.ops.masked_cross_attention")
        calls = []
        ref = mod._reference
        mod._reference = lambda *a, **kw: (calls.append(1), ref(*a, **kw))[1]
        q = torch.randn(2, 1, 3, 4)
        mod.masked_cross_attention(q, q, q)
        print(fsrf.get_backend(), len(calls))
    """)
    env = dict(os.environ, FSRF_BACKEND="torch")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["torch", "1"]


def test_unavailable_backend_is_an_error():
    q, k, v, m = make(2, 1, 3, 4, 4)
    with pytest.raises(ValueError, match="'cuda' is not available for cpu"):
        mca(q, k, v, m, backend="cuda")
    with pytest.raises(ValueError, match="'triton' is not implemented"):
        mca(q, k, v, m, backend="triton")
    with pytest.raises(ValueError, match="backend must be one of"):
        mca(q, k, v, m, backend="gpu")


@requires_cuda
def test_cuda_backend_matches_float64():
    q, k, v, m = make(3, 2, 70, 300, 64, device="cuda")
    out = mca(q, k, v, m, backend="cuda")
    torch.testing.assert_close(out.double().cpu(), attention64(q.cpu(), k.cpu(), v.cpu(), m.cpu()), atol=2e-5, rtol=2e-4)


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------

def _ok(**over):
    q, k, v, m = make(2, 3, 4, 5, 8, requires_grad=False)
    args = dict(q=q, k=k, v=v, key_mask=m)
    args.update(over)
    return args


BAD = [
    (dict(q=[1.0]), TypeError, r"q must be a torch\.Tensor; got list"),
    (dict(k="k"), TypeError, r"k must be a torch\.Tensor; got str"),
    (dict(q=torch.randn(2, 3, 4)), ValueError, r"q must have 4 dimensions; got shape \(2, 3, 4\)"),
    (dict(v=torch.randn(2, 3, 5, 8, 1)), ValueError, r"v must have 4 dimensions; got shape \(2, 3, 5, 8, 1\)"),
    (dict(q=torch.ones(2, 3, 4, 8, dtype=torch.int64)), TypeError, r"q must be a floating-point tensor.*int64"),
    (dict(k=torch.randn(2, 3, 5, 8, dtype=torch.float64)), TypeError,
     r"k has dtype torch\.float64 but q has dtype torch\.float32"),
    (dict(k=torch.randn(3, 3, 5, 8)), ValueError, r"k must have shape \(B, H, Tk, Dh\) = \(2, 3, Tk, 8\).*got \(3, 3, 5, 8\)"),
    (dict(k=torch.randn(2, 2, 5, 8)), ValueError, r"k must have shape .*got \(2, 2, 5, 8\)"),
    (dict(k=torch.randn(2, 3, 5, 7)), ValueError, r"k must have shape .*got \(2, 3, 5, 7\)"),
    (dict(v=torch.randn(2, 3, 6, 8)), ValueError, r"v must have the shape of k \(2, 3, 5, 8\); got \(2, 3, 6, 8\)"),
    (dict(k=torch.randn(2, 3, 0, 8), v=torch.randn(2, 3, 0, 8), key_mask=None), ValueError,
     r"k must have at least one key \(Tk >= 1\)"),
    (dict(q=torch.randn(2, 3, 4, 0), k=torch.randn(2, 3, 5, 0), v=torch.randn(2, 3, 5, 0)), ValueError,
     r"head dimension Dh >= 1; got q shape \(2, 3, 4, 0\)"),
    (dict(key_mask=torch.ones(2, 5)), TypeError, r"key_mask must have dtype torch\.bool .*got torch\.float32"),
    (dict(key_mask=torch.ones(2, 4, dtype=torch.bool)), ValueError, r"key_mask must have shape \(2, 5\); got \(2, 4\)"),
    (dict(key_mask=torch.ones(2, 3, 5, dtype=torch.bool)), ValueError, r"key_mask must have shape \(2, 5\); got \(2, 3, 5\)"),
    (dict(key_mask=[[True] * 5] * 2), TypeError, r"key_mask must be a bool torch\.Tensor; got list"),
    (dict(key_mask=torch.ones(2, 5, dtype=torch.bool, device="meta")), ValueError, r"key_mask is on meta"),
    (dict(k=torch.randn(2, 3, 5, 8, device="meta")), ValueError, r"k is on meta but q is on cpu"),
]


@pytest.mark.parametrize("over,exc,match", BAD)
def test_bad_inputs(over, exc, match):
    args = _ok(**over)
    with pytest.raises(exc, match=match):
        mca(args["q"], args["k"], args["v"], args["key_mask"])


def test_bad_scale():
    a = _ok()
    with pytest.raises(TypeError, match="scale must be a float or None; got str"):
        mca(a["q"], a["k"], a["v"], scale="0.5")
    with pytest.raises(ValueError, match="scale must be finite; got nan"):
        mca(a["q"], a["k"], a["v"], scale=float("nan"))


def test_non_finite_input_is_reported():
    a = _ok()
    a["v"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"v contains non-finite values \(1 NaN, 0 Inf\)"):
        mca(a["q"], a["k"], a["v"], a["key_mask"])


@requires_cpp
def test_registered_op_checks_inputs():
    q, k, v, m = make(2, 3, 4, 5, 8, requires_grad=False)
    with pytest.raises(RuntimeError, match=r"key_mask must be \(B, Tk\)"):
        torch.ops.fsrf.masked_cross_attention_fwd(q, k, v, m[:, :4], 0.5)
    with pytest.raises(RuntimeError, match="q, k, v must share a dtype"):
        torch.ops.fsrf.masked_cross_attention_fwd(q, k.double(), v, m, 0.5)
    with pytest.raises(RuntimeError, match=r"lse must be float32 \(B, H, Tq\)"):
        torch.ops.fsrf.masked_cross_attention_bwd(q, q, k, v, m, q, q, 0.5)


# --------------------------------------------------------------------------------------------
# Memory: the fused kernel's footprint grows linearly in the sequence length
# --------------------------------------------------------------------------------------------

@requires_cpp
def test_memory_grows_linearly_in_sequence_length():
    # Peak resident memory of forward+backward, measured in a fresh process. glibc keeps freed
    # memory resident, which would hide a call's allocations, so the child returns it to the
    # system (malloc_trim) before each measurement and mmaps every large block. The quadratic
    # reference is measured too, as a check that the method sees allocations at all.
    code = textwrap.dedent("""
        import ctypes, torch, fsrf.ops
        torch.manual_seed(0)
        libc = ctypes.CDLL(None)

        def rss(key):
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024

        def peak(fn):
            libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            base = rss("VmRSS:")
            fn()
            return rss("VmHWM:") - base

        def case(T, backend):
            q, k, v = (torch.randn(1, 1, T, 32, requires_grad=True) for _ in range(3))
            m = torch.rand(1, T) > 0.3
            g = torch.randn(1, 1, T, 32)

            def run():
                out = fsrf.ops.masked_cross_attention(q, k, v, m, backend=backend)
                torch.autograd.grad(out, (q, k, v), g)

            run()
            return peak(run)

        print(*[case(T, "cpp") for T in (1024, 2048, 4096)], *[case(T, "torch") for T in (1024, 2048)])
    """)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    if r.returncode != 0 and ("clear_refs" in r.stderr or "malloc_trim" in r.stderr):
        pytest.skip("needs Linux /proc/self/clear_refs and glibc malloc_trim to measure peak memory")
    assert r.returncode == 0, r.stderr
    c1, c2, c4, t1, t2 = (int(x) for x in r.stdout.split())
    info = dict(cpp_1024=c1, cpp_2048=c2, cpp_4096=c4, ref_1024=t1, ref_2048=t2)
    # Positive control: the reference holds T x T matrices (4 MiB each at T = 1024), ~4x per doubling.
    assert t2 >= 2.5 * t1 and t1 >= 4 << 20, info
    # The fused kernel: outputs + gradients (~5 x T x 32 x 4 B) plus fixed-size tiles. Linear
    # growth is ~4x from T = 1024 to 4096 (quadratic would be 16x).
    assert c4 <= 6 * max(c1, 1 << 20), info
    assert c4 < t2, info  # at 4x the length, still below the reference at 2048


# --------------------------------------------------------------------------------------------
# The two copies of the CPU tile kernels (AVX2+FMA, and the baseline-ISA fallback)
# --------------------------------------------------------------------------------------------

def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@requires_cpp
def test_avx2_kernels_used_when_the_cpu_has_them():
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo to read the CPU's features from")
    isa = torch.ops.fsrf._masked_cross_attention_cpu_isa()
    if os.environ.get("FSRF_CPU_BASELINE") == "1":
        assert isa == "baseline"
    elif {"avx2", "fma"} <= flags and sys.platform.startswith("linux") and "x86" in os.uname().machine:
        assert isa == "avx2"
    else:
        assert isa == "baseline"


@requires_cpp
def test_baseline_isa_kernels_match_float64():
    code = textwrap.dedent("""
        import sys, torch
        sys.path.insert(0, sys.argv[1])
        from _helpers import attention64
        from test_masked_cross_attention import make, grads
        from fsrf.ops import masked_cross_attention as mca
        assert torch.ops.fsrf._masked_cross_attention_cpu_isa() == "baseline"
        torch.manual_seed(0)
        for shape in [(3, 2, 5, 7, 8), (2, 1, 70, 300, 13), (3, 2, 9, 17, 64)]:
            for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-11)):
                q, k, v, m = make(*shape, dtype=dtype)
                g = torch.randn_like(q)
                out = mca(q, k, v, m, backend="cpp")
                q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
                ref = attention64(q64, k64, v64, m)
                torch.testing.assert_close(out.double(), ref, atol=tol, rtol=10 * tol)
                for a, b in zip(grads(out, (q, k, v), g), grads(ref, (q64, k64, v64), g.double())):
                    torch.testing.assert_close(a.double(), b, atol=tol, rtol=10 * tol)
        print("ok")
    """)
    env = dict(os.environ, FSRF_CPU_BASELINE="1")
    env.pop("FSRF_BACKEND", None)
    r = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__))], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")
