"""kl_divergence: torch and Triton (interpreter on CPU) backends against an independent float64
formula, gradients included (all symmetric / detach_target combinations), special values, the
multi-chunk kernel path, low precision, torch.compile, opcheck, input validation, and a compile
check of the Triton kernels for sm_90 (no GPU needed)."""

import pytest
import torch

import fsrf
from fsrf.ops import kl_divergence

from _helpers import compile_for_sm90, kl64, requires_cuda, without_cuda
from _helpers import value_and_grads as _value_and_grads

BACKENDS = ["torch", "triton"]


def make(shape, dtype=torch.float32, scale=2.0):
    s = torch.randn(shape, dtype=torch.float64) * scale
    t = s + torch.randn(shape, dtype=torch.float64) * scale  # related but different
    return s.to(dtype), t.to(dtype)


def value_and_grads(fn, s, t, upstream=1.7):
    """(value, grad s, grad t); a detached teacher gets no gradient at all, counted as zero."""
    return _value_and_grads(fn, s, t, upstream=upstream, allow_unused=True)


def check_against_ref(s, t, backend, T, symmetric, detach, rtol=1e-5, grad_rtol=1e-5):
    loss, gs, gt = value_and_grads(
        lambda a, b: kl_divergence(a, b, temperature=T, symmetric=symmetric, detach_target=detach,
                                   backend=backend), s, t)
    rl, rgs, rgt = value_and_grads(lambda a, b: kl64(a, b, T, symmetric, detach), s.double(), t.double())
    assert loss.shape == () and loss.dtype == (torch.float64 if s.dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(loss.double(), rl, rtol=rtol, atol=1e-7)
    for g, r in ((gs, rgs), (gt, rgt)):
        assert g.shape == r.shape and g.dtype == s.dtype
        torch.testing.assert_close(g.double(), r, rtol=grad_rtol, atol=grad_rtol * max(r.abs().max().item(), 1e-3))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("symmetric,detach", [(False, True), (False, False), (True, True), (True, False)])
@pytest.mark.parametrize("shape,T", [((2, 3), 1.0), ((5, 37), 2.0), ((3, 4, 129), 0.5)])
def test_value_and_gradients_match_float64(backend, symmetric, detach, shape, T):
    s, t = make(shape)
    check_against_ref(s, t, backend, T, symmetric, detach)


@pytest.mark.parametrize("symmetric,detach", [(False, True), (True, False)])
def test_triton_multi_chunk_row_path(symmetric, detach):
    # C larger than the kernel's largest block: online max/sum over several chunks
    from fsrf.kernels.kl_divergence import MAX_BLOCK

    s, t = make((2, MAX_BLOCK + 811))
    check_against_ref(s, t, "triton", 1.5, symmetric, detach)


@pytest.mark.parametrize("C", [37, 100])
@pytest.mark.parametrize("detach", [True, False])
def test_triton_small_block_chunks(C, detach):
    # the launcher with a forced small block: chunk loop with a ragged last chunk
    from fsrf.kernels.kl_divergence import kl_divergence_forward

    s, t = make((4, C))
    loss, ds, dt = kl_divergence_forward(s, t, 2.0, True, detach, True, True, block=16)
    s64, t64 = s.double().requires_grad_(), t.double().requires_grad_()
    r = kl64(s64, t64, 2.0, True, detach)
    rs, rt = torch.autograd.grad(r, (s64, t64))
    torch.testing.assert_close(loss.double(), r.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ds.double(), rs, rtol=1e-5, atol=1e-5 * rs.abs().max().item())
    torch.testing.assert_close(dt.double(), rt, rtol=1e-5, atol=1e-5 * rt.abs().max().item())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("symmetric", [False, True])
def test_identical_distributions_give_zero(backend, symmetric):
    s, _ = make((6, 33))
    # a per-row shift does not change the softmax: still the same distributions
    t = s + torch.randn(6, 1)
    loss, gs, gt = value_and_grads(
        lambda a, b: kl_divergence(a, b, temperature=2.0, symmetric=symmetric, detach_target=False,
                                   backend=backend), s, t)
    assert abs(loss.item()) < 1e-6
    assert gs.abs().max() < 1e-6 and gt.abs().max() < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_detach_target_gradient_semantics(backend):
    s, t = make((5, 11))
    T = 2.0

    def grads(symmetric, detach):
        a = s.clone().requires_grad_(True)
        b = t.clone().requires_grad_(True)
        kl_divergence(a, b, temperature=T, symmetric=symmetric, detach_target=detach, backend=backend).backward()
        return a.grad, b.grad

    # one direction, detached: the teacher is only a target and gets no gradient at all
    gs, gt = grads(False, True)
    assert gt is None
    ps, pt = torch.softmax(s.double() / T, 1), torch.softmax(t.double() / T, 1)
    # d/ds of T²·KL(p_t‖p_s) averaged over R rows = T (p_s − p_t) / R
    torch.testing.assert_close(gs.double(), T * (ps - pt) / 5, rtol=1e-5, atol=1e-7)

    # symmetric, detached: each input gets gradient only as the prediction of one direction
    gs, gt = grads(True, True)
    torch.testing.assert_close(gs.double(), T * (ps - pt) / 5, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gt.double(), T * (pt - ps) / 5, rtol=1e-5, atol=1e-7)

    # not detached: the target side contributes too, so the gradients differ from the above
    gs2, gt2 = grads(True, False)
    assert (gs2 - gs).abs().max() > 1e-3 * gs.abs().max()
    assert (gt2 - gt).abs().max() > 1e-3 * gt.abs().max()
    # and the value does not depend on detach_target
    v1 = kl_divergence(s, t, temperature=T, symmetric=True, detach_target=True, backend=backend)
    v2 = kl_divergence(s, t, temperature=T, symmetric=True, detach_target=False, backend=backend)
    torch.testing.assert_close(v1, v2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("T", [0.25, 3.0])
def test_temperature_is_logit_scaling_times_T_squared(backend, T):
    s, t = make((4, 9))
    for sym in (False, True):
        got = kl_divergence(s, t, temperature=T, symmetric=sym, backend=backend)
        want = kl_divergence(s / T, t / T, temperature=1.0, symmetric=sym, backend=backend) * T * T
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_against_fp32_reference(backend, dtype, tol):
    # stated tolerances: the loss is computed in fp32, so against the float64 value of the
    # rounded inputs it is fp32-accurate (1e-5); the gradients are stored in the input dtype, so
    # their error is its rounding, ~1 ulp of the largest entry (fp16 2e-3, bf16 1.6e-2)
    s, t = make((6, 45), dtype=dtype)
    loss, gs, gt = value_and_grads(
        lambda a, b: kl_divergence(a, b, temperature=2.0, symmetric=True, detach_target=False,
                                   backend=backend), s, t)
    rl, rgs, rgt = value_and_grads(lambda a, b: kl64(a, b, 2.0, True, False), s.double(), t.double())
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), rl, rtol=1e-5, atol=1e-6)
    for g, r in ((gs, rgs), (gt, rgt)):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), r, rtol=tol, atol=tol * r.abs().max().item())
    # and against the unrounded fp32 inputs, within the inputs' own rounding effect
    s32, t32 = s.float(), t.float()
    l32 = kl_divergence(s32, t32, temperature=2.0, symmetric=True, detach_target=False, backend=backend)
    torch.testing.assert_close(loss, l32, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("view", ["row_strided", "transposed"])
def test_non_contiguous_inputs(backend, view):
    def views(bs, bt):
        if view == "row_strided":  # row stride 40, unit column stride
            return bs[:, 3:34], bt[:, 2:33]
        return bs.T[:9], bt.T[5:14]  # column stride 40

    base_s, base_t = make((7, 40))
    outs = []
    for dtype, fn in ((torch.float32, lambda a, b: kl_divergence(a, b, temperature=1.3, symmetric=True,
                                                                 detach_target=False, backend=backend)),
                      (torch.float64, lambda a, b: kl64(a, b, 1.3, True, False))):
        bs = base_s.detach().to(dtype).requires_grad_(True)
        bt = base_t.detach().to(dtype).requires_grad_(True)
        s, t = views(bs, bt)
        assert not s.is_contiguous()
        loss = fn(s, t)
        loss.backward()
        outs.append((loss.detach().double(), bs.grad.double(), bt.grad.double()))
    (l, gs, gt), (rl, rgs, rgt) = outs
    torch.testing.assert_close(l, rl, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gs, rgs, rtol=1e-5, atol=1e-5 * rgs.abs().max().item())
    torch.testing.assert_close(gt, rgt, rtol=1e-5, atol=1e-5 * rgt.abs().max().item())


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_float64(backend):
    # detach_target=False only: with detached targets the op's gradient is by design not the
    # derivative of its value (the detach semantics are tested above)
    s, t = make((2, 5), dtype=torch.float64)
    s.requires_grad_(True)
    t.requires_grad_(True)
    for sym, det in ((True, False), (False, False)):
        assert torch.autograd.gradcheck(
            lambda a, b: kl_divergence(a, b, temperature=2.0, symmetric=sym, detach_target=det,
                                       backend=backend), (s, t))


def test_auto_backend_on_cpu_is_torch_and_matches():
    s, t = make((4, 10))
    assert fsrf.runtime.backend.resolve("kl_divergence", "auto", "cpu", ("torch", "triton")) == "torch"
    torch.testing.assert_close(kl_divergence(s, t, symmetric=True),
                               kl_divergence(s, t, symmetric=True, backend="triton"), rtol=1e-6, atol=1e-7)


def test_no_gradient_requested():
    s, t = make((3, 8))
    out = kl_divergence(s, t, backend="triton")
    assert not out.requires_grad
    with torch.no_grad():
        out2 = kl_divergence(s.requires_grad_(), t, backend="triton")
    assert not out2.requires_grad
    torch.testing.assert_close(out, out2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend):
    s, t = make((5, 19))
    fn = lambda a, b: kl_divergence(a, b, temperature=2.0, symmetric=True, backend=backend)  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager" if backend == "torch" else "inductor")
    l1, gs1, gt1 = value_and_grads(fn, s, t)
    l2, gs2, gt2 = value_and_grads(compiled, s, t)
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(gs1, gs2)
    torch.testing.assert_close(gt1, gt2)


@pytest.mark.parametrize("flags", [(False, True, True, False), (True, False, True, True),
                                   (True, True, True, True), (False, False, True, True)])
def test_opcheck(flags):
    sym, det, need_s, need_t = flags
    s, t = make((3, 21))
    s.requires_grad_(True)
    t.requires_grad_(True)
    torch.library.opcheck(torch.ops.fsrf.kl_divergence.default, (s, t, 2.0, sym, det, need_s, need_t))


# -- bad input -------------------------------------------------------------------------------

def _good():
    return make((3, 5))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs(backend):
    s, t = _good()
    kw = dict(backend=backend)
    with pytest.raises(TypeError, match="student_logits must be a torch.Tensor"):
        kl_divergence(s.tolist(), t, **kw)
    with pytest.raises(ValueError, match="student_logits must have at least 2 dimensions"):
        kl_divergence(s[0], t[0], **kw)
    with pytest.raises(ValueError, match="teacher_logits must have at least 2 dimensions"):
        kl_divergence(s, t[0], **kw)
    with pytest.raises(ValueError, match="student_logits must hold at least one row"):
        kl_divergence(s[:0], t[:0], **kw)
    with pytest.raises(ValueError, match="teacher_logits must have the shape of student_logits"):
        kl_divergence(s, t[:, :4], **kw)
    with pytest.raises(TypeError, match="student_logits must be a floating-point tensor"):
        kl_divergence(s.long(), t, **kw)
    with pytest.raises(TypeError, match="teacher_logits has dtype torch.float64"):
        kl_divergence(s, t.double(), **kw)
    bad = s.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="student_logits contains non-finite values"):
        kl_divergence(bad, t, **kw)
    bad = t.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="teacher_logits contains non-finite values"):
        kl_divergence(s, bad, **kw)
    for T in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            kl_divergence(s, t, temperature=T, **kw)
    with pytest.raises(TypeError, match="temperature must be a real number"):
        kl_divergence(s, t, temperature="2", **kw)
    with pytest.raises(TypeError, match="temperature must be a real number"):
        kl_divergence(s, t, temperature=True, **kw)
    with pytest.raises(TypeError, match="symmetric must be a bool"):
        kl_divergence(s, t, symmetric=1, **kw)
    with pytest.raises(TypeError, match="detach_target must be a bool"):
        kl_divergence(s, t, detach_target="yes", **kw)


def test_bad_backend():
    s, t = _good()
    with pytest.raises(ValueError, match="backend must be one of"):
        kl_divergence(s, t, backend="nope")
    with pytest.raises(ValueError, match="backend 'cpp' is not implemented for this op"):
        kl_divergence(s, t, backend="cpp")


def test_nan_check_can_be_disabled():
    s, t = _good()
    s[0, 0] = float("nan")
    fsrf.set_check_finite(False)
    try:
        assert torch.isnan(kl_divergence(s, t))
    finally:
        fsrf.set_check_finite(True)


# -- GPU / compiled kernels -------------------------------------------------------------------

_SM90_KERNELS = """
    from fsrf.kernels.kl_divergence import _kl_fwd_kernel
    for dt, one, det in (("fp32", True, False), ("bf16", False, False), ("fp64", False, True)):
        acc = tl.float64 if dt == "fp64" else tl.float32
        a = "fp64" if dt == "fp64" else "fp32"
        sig = {"S": "*" + dt, "T": "*" + dt, "LOSS": "*" + a, "DS": "*" + dt, "DT": "*" + dt,
               "stride_s": "i64", "stride_t": "i64", "stride_ds": "i64", "stride_dt": "i64",
               "C": "i32", "temp": "fp32"}
        ce = dict(SYMMETRIC=True, DETACH=det, NEED_DS=True, NEED_DT=True, BLOCK=4096,
                  ONE_CHUNK=one, ACC=acc)
        sig.update({k: "constexpr" for k in ce})
        k = compile_sm90(_kl_fwd_kernel, sig, ce, num_warps=8)
        assert k.asm["cubin"], (dt, one, det)
"""


@without_cuda
def test_kernels_compile_for_sm90():
    """The forward kernel compiles to an sm_90 cubin for float32, bfloat16 and float64 inputs."""
    compile_for_sm90(_SM90_KERNELS)


@requires_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize("shape", [(64, 128), (257, 4097), (3, 9000)])
def test_cuda_triton_matches_reference(dtype, tol, shape):
    s, t = make(shape, dtype=dtype)
    s, t = s.cuda(), t.cuda()
    for sym, det in ((True, True), (True, False), (False, True)):
        loss, gs, gt = value_and_grads(
            lambda a, b: kl_divergence(a, b, temperature=2.0, symmetric=sym, detach_target=det,
                                       backend="triton"), s, t)
        rl, rgs, rgt = value_and_grads(lambda a, b: kl64(a, b, 2.0, sym, det), s.double(), t.double())
        torch.testing.assert_close(loss.double(), rl, rtol=1e-5, atol=1e-6)
        for g, r in ((gs, rgs), (gt, rgt)):
            torch.testing.assert_close(g.double(), r, rtol=tol, atol=tol * r.abs().max().item())
