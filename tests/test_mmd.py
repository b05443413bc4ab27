"""mmd: torch and Triton (interpreter on CPU) backends against an independent float64 formula with
full kernel matrices, gradients included; special cases (MMD(x, x) = 0, identical points, data far
from the origin), the unbiased estimator, explicit bandwidths, the multi-tile kernel paths, low
precision, torch.compile, opcheck, linear memory of the torch backend, input validation, and a
compile check of the Triton kernels for sm_90 (no GPU needed)."""

import os

import pytest
import torch

import fsrf
from fsrf.ops import mmd
from fsrf.reference import mmd as ref_mmd

from _helpers import compile_for_sm90, mmd64, requires_cuda, value_and_grads, without_cuda

BACKENDS = ["torch", "triton"]


def make(N, M, d, dtype=torch.float32, shift=0.4, offset=0.0):
    x = torch.randn(N, d, dtype=torch.float64) + offset
    y = torch.randn(M, d, dtype=torch.float64) * 1.3 + shift + offset
    return x.to(dtype), y.to(dtype)


def check_against_ref(x, y, backend, rtol=1e-4, grad_rtol=1e-4, **kw):
    loss, gx, gy = value_and_grads(lambda a, b: mmd(a, b, backend=backend, **kw), x, y)
    rl, rgx, rgy = value_and_grads(lambda a, b: mmd64(a, b, **kw), x.double(), y.double())
    assert loss.shape == () and loss.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
    # MMD² is a difference of O(1) kernel means: absolute error relative to those means
    torch.testing.assert_close(loss.double(), rl, rtol=rtol, atol=rtol * 0.1)
    for g, r in ((gx, rgx), (gy, rgy)):
        assert g.shape == r.shape and g.dtype == x.dtype
        torch.testing.assert_close(g.double(), r, rtol=grad_rtol, atol=grad_rtol * r.abs().max().item())


SHAPES = [(2, 3, 1), (2, 2, 7), (9, 4, 5), (33, 20, 37)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("kernel_mul", [2.0, 1.5])
@pytest.mark.parametrize("shape", SHAPES)
def test_value_and_gradients_match_float64(backend, unbiased, kernel_mul, shape):
    x, y = make(*shape)
    check_against_ref(x, y, backend, unbiased=unbiased, kernel_mul=kernel_mul)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_kernels", [1, 2, 6])
def test_num_kernels(backend, num_kernels):
    x, y = make(8, 5, 3)
    check_against_ref(x, y, backend, num_kernels=num_kernels, kernel_mul=3.0)
    check_against_ref(x, y, backend, num_kernels=num_kernels)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_explicit_bandwidths(backend, as_tensor):
    x, y = make(10, 7, 4)
    bw = [0.3, 2.0, 15.0]
    arg = torch.tensor(bw) if as_tensor else bw
    for unbiased in (False, True):
        loss, gx, gy = value_and_grads(lambda a, b: mmd(a, b, bandwidths=arg, unbiased=unbiased,
                                                        num_kernels=9, kernel_mul=7.0,  # ignored
                                                        backend=backend), x, y)
        rl, rgx, rgy = value_and_grads(lambda a, b: mmd64(a, b, bandwidths=bw, unbiased=unbiased),
                                       x.double(), y.double())
        torch.testing.assert_close(loss.double(), rl, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gx.double(), rgx, rtol=1e-4, atol=1e-4 * rgx.abs().max().item())
        torch.testing.assert_close(gy.double(), rgy, rtol=1e-4, atol=1e-4 * rgy.abs().max().item())
    # a tensor of bandwidths gets no gradient (detached by definition)
    if as_tensor:
        t = torch.tensor(bw, requires_grad=True)
        xg = x.clone().requires_grad_(True)
        mmd(xg, y, bandwidths=t, backend=backend).backward()
        assert t.grad is None and xg.grad is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_mmd_of_a_sample_with_itself_is_zero(backend):
    x, _ = make(13, 2, 6)
    loss, gx, gy = value_and_grads(lambda a, b: mmd(a, b, backend=backend), x, x)
    assert abs(loss.item()) < 1e-6
    assert gx.abs().max() < 1e-6 and gy.abs().max() < 1e-6
    # the unbiased estimate of identical samples is not 0 (it drops N of the N² self-pairs)
    ub = mmd(x, x, unbiased=True, backend=backend)
    torch.testing.assert_close(ub.double(), mmd64(x, x, unbiased=True), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [0.0, 0.7, 123.456])
def test_identical_points_are_guarded(backend, value):
    # all points equal: σ² = 0 (or, off the origin, the rounding residue of the mean) would give
    # 0/0 or noise amplified by 1/σ²; the floor makes the loss 0 and the gradients 0
    x = torch.full((4, 3), value)
    y = torch.full((5, 3), value)
    for unbiased in (False, True):
        loss, gx, gy = value_and_grads(lambda a, b: mmd(a, b, unbiased=unbiased, backend=backend), x, y)
        assert torch.isfinite(loss) and torch.isfinite(gx).all() and torch.isfinite(gy).all()
        assert abs(loss.item()) < 1e-6 and gx.abs().max() < 1e-6 and gy.abs().max() < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_scale_data_is_not_affected_by_the_floor(backend):
    # the relative floor binds only when the spread is ~1e-4 of the offset; data that is merely
    # small (centred at 0) keeps its own σ²
    x, y = make(9, 7, 4)
    check_against_ref(x * 1e-5, y * 1e-5, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_data_far_from_the_origin(backend):
    # the naive closed form 2nΣ‖u‖² − 2‖Σu‖² cancels catastrophically in fp32 here; centring does not
    x, y = make(20, 15, 8, offset=1000.0)
    check_against_ref(x, y, backend, rtol=1e-3, grad_rtol=1e-3)
    x0, y0 = make(20, 15, 8)
    torch.testing.assert_close(mmd(x0 + 1000.0, y0 + 1000.0, backend=backend), mmd(x0, y0, backend=backend),
                               rtol=1e-3, atol=1e-5)


def test_sigma2_closed_form():
    x, y = make(11, 6, 5, offset=300.0)
    mean, sigma2 = ref_mmd.pooled_mean_and_sigma2(x, y)
    u = torch.cat([x, y]).double()
    D = ((u[:, None] - u[None]) ** 2).sum(-1)
    torch.testing.assert_close(sigma2.double(), D.sum() / (17 * 16), rtol=1e-5, atol=0)
    torch.testing.assert_close(mean.double(), u.mean(0), rtol=1e-6, atol=0)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("squaring", [False, True])
def test_triton_multi_tile_paths(unbiased, squaring):
    # small forced tiles: several row/column tiles, tiles straddling the x/y boundary, a ragged
    # last tile, several d-chunks for distances and for gradient columns
    from fsrf.kernels.mmd import mmd_backward, mmd_forward

    x, y = make(21, 30, 40)
    kw = dict(kernel_mul=2.0) if squaring else dict(kernel_mul=1.7)
    inv_h, mean = ref_mmd.inverse_bandwidths(x, y, 5, kw["kernel_mul"])
    loss = mmd_forward(x, y, inv_h, mean, unbiased, squaring, block=16, block_d=16)
    gx, gy = mmd_backward(torch.tensor(1.7), x, y, inv_h, mean, unbiased, squaring, block=16, block_d=16,
                          block_do=16)
    rl, rgx, rgy = value_and_grads(lambda a, b: mmd64(a, b, unbiased=unbiased, **kw), x.double(), y.double())
    torch.testing.assert_close(loss.double(), rl, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx.double(), rgx, rtol=1e-4, atol=1e-4 * rgx.abs().max().item())
    torch.testing.assert_close(gy.double(), rgy, rtol=1e-4, atol=1e-4 * rgy.abs().max().item())


def test_torch_backend_chunks_match_one_chunk():
    # the chunked reference with tiny chunks (many ragged chunks) equals the float64 formula
    x, y = make(17, 12, 6)
    loss, gx, gy = value_and_grads(lambda a, b: ref_mmd.mmd(a, b, unbiased=True, chunk_bytes=700), x, y)
    rl, rgx, rgy = value_and_grads(lambda a, b: mmd64(a, b, unbiased=True), x.double(), y.double())
    assert ref_mmd.chunk_rows(17, 17, 4, 700) < 17
    torch.testing.assert_close(loss.double(), rl, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx.double(), rgx, rtol=1e-4, atol=1e-4 * rgx.abs().max().item())
    torch.testing.assert_close(gy.double(), rgy, rtol=1e-4, atol=1e-4 * rgy.abs().max().item())


# -- row masks ---------------------------------------------------------------------------------

def check_masked(x, y, mx, my, backend, rtol=1e-4, **kw):
    """ops.mmd with row masks against mmd64 of the selected rows; unselected rows get zero gradient."""
    loss, gx, gy = value_and_grads(lambda a, b: mmd(a, b, x_mask=mx, y_mask=my, backend=backend, **kw), x, y)
    sx = torch.ones(x.shape[0], dtype=torch.bool) if mx is None else mx
    sy = torch.ones(y.shape[0], dtype=torch.bool) if my is None else my
    rl, rgx, rgy = value_and_grads(lambda a, b: mmd64(a, b, **kw), x[sx].double(), y[sy].double())
    torch.testing.assert_close(loss.double(), rl, rtol=rtol, atol=rtol * 0.1)
    for g, r, sel in ((gx, rgx, sx), (gy, rgy, sy)):
        assert g.shape[0] == sel.shape[0] and g.dtype == x.dtype
        torch.testing.assert_close(g[sel].double(), r, rtol=rtol, atol=rtol * r.abs().max().item())
        assert g[~sel].abs().max().item() == 0 if (~sel).any() else True


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("kernel_mul", [2.0, 1.5])
@pytest.mark.parametrize("sides", ["both", "x", "y"])
def test_row_masks_match_float64_of_the_selected_rows(backend, unbiased, kernel_mul, sides):
    x, y = make(23, 17, 9)
    g = torch.Generator().manual_seed(3)
    mx = (torch.rand(23, generator=g) > 0.35) if sides in ("both", "x") else None
    my = (torch.rand(17, generator=g) > 0.35) if sides in ("both", "y") else None
    # unselected rows far away: they would dominate σ² and every kernel value if they took part
    x[~mx if mx is not None else torch.zeros(23, dtype=torch.bool)] += 50.0
    check_masked(x, y, mx, my, backend, unbiased=unbiased, kernel_mul=kernel_mul)


@pytest.mark.parametrize("unbiased", [False, True])
def test_row_masks_on_the_chunked_torch_path(monkeypatch, unbiased):
    # a tiny budget: several ragged chunks per kernel sum instead of the dense small-problem path
    monkeypatch.setattr(ref_mmd, "CHUNK_BUDGET_BYTES", 900)
    x, y = make(31, 26, 6)
    assert not ref_mmd.dense_fits(57, 4) and ref_mmd.chunk_rows(31, 31, 4) < 31
    g = torch.Generator().manual_seed(4)
    check_masked(x, y, torch.rand(31, generator=g) > 0.3, torch.rand(26, generator=g) > 0.5, "torch",
                 unbiased=unbiased)


@pytest.mark.parametrize("unbiased", [False, True])
def test_triton_multi_tile_paths_with_masks(unbiased):
    # forced small tiles with masks: selected and unselected rows in every tile
    from fsrf.kernels.mmd import mmd_backward, mmd_forward

    x, y = make(21, 30, 40)
    g = torch.Generator().manual_seed(5)
    mx, my = torch.rand(21, generator=g) > 0.4, torch.rand(30, generator=g) > 0.4
    inv_h, mean = ref_mmd.inverse_bandwidths(x, y, 5, 2.0, None, mx, my)
    loss = mmd_forward(x, y, inv_h, mean, unbiased, True, block=16, block_d=16, x_mask=mx, y_mask=my)
    gx, gy = mmd_backward(torch.tensor(1.7), x, y, inv_h, mean, unbiased, True, block=16, block_d=16,
                          block_do=16, x_mask=mx, y_mask=my)
    rl, rgx, rgy = value_and_grads(lambda a, b: mmd64(a, b, unbiased=unbiased), x[mx].double(), y[my].double())
    torch.testing.assert_close(loss.double(), rl, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx[mx].double(), rgx, rtol=1e-4, atol=1e-4 * rgx.abs().max().item())
    torch.testing.assert_close(gy[my].double(), rgy, rtol=1e-4, atol=1e-4 * rgy.abs().max().item())
    assert gx[~mx].abs().max() == 0 and gy[~my].abs().max() == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("unbiased", [False, True])
def test_fewer_than_two_selected_rows_give_zero_and_zero_gradient(backend, unbiased):
    x, y = make(6, 5, 3)
    one = torch.zeros(6, dtype=torch.bool)
    one[2] = True
    for mx, my in ((one, None), (None, torch.zeros(5, dtype=torch.bool)),
                   (torch.zeros(6, dtype=torch.bool), torch.zeros(5, dtype=torch.bool))):
        loss, gx, gy = value_and_grads(lambda a, b: mmd(a, b, x_mask=mx, y_mask=my, unbiased=unbiased,
                                                         backend=backend), x, y)
        assert loss.item() == 0.0 and gx.abs().max() == 0 and gy.abs().max() == 0
    # a masked side may have a single row at all
    loss = mmd(x[:1], y, x_mask=torch.ones(1, dtype=torch.bool), backend=backend)
    assert loss.item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_unselected_rows_may_hold_nan(backend):
    # they take no part: neither the finite check nor the value sees them
    x, y = make(8, 7, 4)
    mx = torch.ones(8, dtype=torch.bool)
    mx[3] = False
    bad = x.clone()
    bad[3] = float("nan")
    torch.testing.assert_close(mmd(bad, y, x_mask=mx, backend=backend), mmd(x[mx], y, backend=backend),
                               rtol=1e-5, atol=1e-6)
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="x contains non-finite values"):
        mmd(bad, y, x_mask=mx, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_row_masks_compile_fullgraph(backend):
    # one graph for any selection: the masks are data, not shapes
    x, y = make(9, 8, 3)
    g = torch.Generator().manual_seed(6)
    fn = lambda a, b, ma, mb: mmd(a, b, x_mask=ma, y_mask=mb, backend=backend)  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for _ in range(2):
        mx, my = torch.rand(9, generator=g) > 0.3, torch.rand(8, generator=g) > 0.3
        l1, gx1, gy1 = value_and_grads(lambda a, b: fn(a, b, mx, my), x, y)
        l2, gx2, gy2 = value_and_grads(lambda a, b: compiled(a, b, mx, my), x, y)
        torch.testing.assert_close(l1, l2)
        torch.testing.assert_close(gx1, gx2)
        torch.testing.assert_close(gy1, gy2)


def test_bad_masks():
    x, y = make(4, 3, 2)
    with pytest.raises(TypeError, match="x_mask must have dtype torch.bool"):
        mmd(x, y, x_mask=torch.ones(4))
    with pytest.raises(ValueError, match=r"y_mask must have shape \(3,\)"):
        mmd(x, y, y_mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="x_mask must be a bool torch.Tensor"):
        mmd(x, y, x_mask=[True] * 4)
    with pytest.raises(ValueError, match="x must have at least 1 rows"):
        mmd(x[:0], y, x_mask=torch.ones(0, dtype=torch.bool))


def test_dense_and_chunked_torch_paths_agree():
    # the small-problem dense path and the chunked one compute the same sums
    x, y = make(40, 33, 12)
    assert ref_mmd.dense_fits(73, 4)
    for unbiased in (False, True):
        for kernel_mul in (2.0, 1.5):
            dense = value_and_grads(lambda a, b: ref_mmd.mmd(a, b, unbiased=unbiased, kernel_mul=kernel_mul), x, y)
            chunked = value_and_grads(lambda a, b: ref_mmd.mmd(a, b, unbiased=unbiased, kernel_mul=kernel_mul,
                                                               chunk_bytes=2000), x, y)
            for d, c in zip(dense, chunked):
                torch.testing.assert_close(d, c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)])
def test_half_precision_against_fp32_reference(backend, dtype, tol):
    # stated tolerances: accumulation is fp32, so against the float64 value of the *rounded*
    # inputs the loss is fp32-accurate (1e-4 relative to the kernel means); gradients are stored in
    # the input dtype, so their error is its rounding (fp16 2e-3, bf16 1.6e-2 of the largest entry)
    x, y = make(12, 9, 10, dtype=dtype)
    loss, gx, gy = value_and_grads(lambda a, b: mmd(a, b, backend=backend), x, y)
    rl, rgx, rgy = value_and_grads(lambda a, b: mmd64(a, b), x.double(), y.double())
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), rl, rtol=1e-4, atol=1e-5)
    for g, r in ((gx, rgx), (gy, rgy)):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), r, rtol=tol, atol=tol * r.abs().max().item())
    # against the unrounded fp32 inputs: within the effect of rounding the inputs
    x32, y32 = x.float(), y.float()
    torch.testing.assert_close(loss, mmd(x32, y32, backend=backend), rtol=10 * tol, atol=tol * 0.1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    bx, by = make(12, 20, 9)
    x, y = bx[:, 2:7], by.T[3:8].T  # row stride 9; column stride 20 (transposed view)
    assert not x.is_contiguous() and not y.is_contiguous()
    lx = bx.clone().requires_grad_(True)
    ly = by.clone().requires_grad_(True)
    loss = mmd(lx[:, 2:7], ly.T[3:8].T, unbiased=True, backend=backend)
    loss.backward()
    rl, rgx, rgy = value_and_grads(lambda a, b: mmd64(a, b, unbiased=True), x.double(), y.double(), upstream=1.0)
    torch.testing.assert_close(loss.double(), rl, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lx.grad[:, 2:7].double(), rgx, rtol=1e-4, atol=1e-4 * rgx.abs().max().item())
    assert lx.grad[:, :2].abs().max() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_float64(backend):
    # explicit bandwidths: with the data-driven σ² (detached by definition) the op's gradient is
    # not the derivative of its value, so numerical differentiation needs fixed bandwidths
    x, y = make(4, 3, 2, dtype=torch.float64)
    x.requires_grad_(True)
    y.requires_grad_(True)
    for unbiased in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, b: mmd(a, b, bandwidths=[0.7, 4.0], unbiased=unbiased, backend=backend), (x, y))


def test_auto_backend_on_cpu_is_torch_and_matches():
    x, y = make(6, 5, 4)
    assert fsrf.runtime.backend.resolve("mmd", "auto", "cpu", ("torch", "triton")) == "torch"
    torch.testing.assert_close(mmd(x, y), mmd(x, y, backend="triton"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend):
    x, y = make(7, 5, 3)
    fn = lambda a, b: mmd(a, b, unbiased=True, backend=backend)  # noqa: E731
    # aot_eager for the torch backend: it checks tracing of forward and backward (what fullgraph
    # is about) without minutes of Inductor code generation for the unrolled chunk loop on 2 cores
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager" if backend == "torch" else "inductor")
    l1, gx1, gy1 = value_and_grads(fn, x, y)
    l2, gx2, gy2 = value_and_grads(compiled, x, y)
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(gx1, gx2)
    torch.testing.assert_close(gy1, gy2)


def test_opcheck():
    x, y = make(5, 4, 3)
    x.requires_grad_(True)
    y.requires_grad_(True)
    mx, my = torch.tensor([True, False, True, True, True]), torch.tensor([True, True, False, True])
    torch.library.opcheck(torch.ops.fsrf.mmd.default, (x, y, None, 5, 2.0, False, None, None))
    torch.library.opcheck(torch.ops.fsrf.mmd.default, (x, y, torch.tensor([0.5, 2.0]), 5, 2.0, True, None, None))
    torch.library.opcheck(torch.ops.fsrf.mmd.default, (x, y, None, 5, 2.0, True, mx, my))
    torch.library.opcheck(torch.ops.fsrf.mmd.default, (x, y, None, 5, 2.0, False, None, my))
    torch.library.opcheck(torch.ops.fsrf.mmd_backward.default,
                          (torch.tensor(1.3), x.detach(), y.detach(), None, 3, 1.5, True, None, None))
    torch.library.opcheck(torch.ops.fsrf.mmd_backward.default,
                          (torch.tensor(1.3), x.detach(), y.detach(), None, 5, 2.0, False, mx, None))


# -- memory of the torch backend --------------------------------------------------------------

def _peak_extra_mib(fn):
    """Resident-set high-water mark added by ``fn()`` (Linux; large tensors are mmap-backed)."""
    def read(key):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        return 0

    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = read("VmRSS:")
    fn()
    return (read("VmHWM:") - base) / 2**20


def test_torch_backend_chunks_stay_within_the_budget(monkeypatch, one_thread):
    # every pairwise block the torch backend builds (forward and backward) fits the chunk budget,
    # whatever N: its temporaries are O(budget), the rest O((N + M)·d)
    budget = 64 * 1024
    monkeypatch.setattr(ref_mmd, "CHUNK_BUDGET_BYTES", budget)
    seen = []
    orig = ref_mmd._sq_dists

    def spy(*args):
        out = orig(*args)
        seen.append(out.numel())
        return out

    monkeypatch.setattr(ref_mmd, "_sq_dists", spy)
    for n in (100, 400):
        x, y = make(n, n // 2 + 1, 8)
        x.requires_grad_(True)
        y.requires_grad_(True)
        seen.clear()
        mmd(x, y, backend="torch").backward()
        assert len(seen) > 6  # several chunks per term
        # _TEMPS_PER_ENTRY chunk-sized fp32 temporaries must fit the budget
        assert max(seen) * 4 * ref_mmd._TEMPS_PER_ENTRY <= budget, (n, max(seen))


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to measure memory")
def test_torch_backend_peak_memory_is_far_below_one_dense_matrix(monkeypatch, one_thread):
    # One dense N×N fp32 matrix is 137 MiB at N = 6000 (a dense implementation holds several);
    # with a 16 MiB chunk budget the whole forward + backward must stay well below that. The
    # resident-set measure has ~15 MiB of allocator noise and is a lower bound (freed heap is
    # reused), so a warm-up call first takes the one-off allocations of the thread pools and BLAS
    # out of it. (The 20000-point case of the spec, < 512 MiB, is measured in bench_mmd.py.)
    monkeypatch.setattr(ref_mmd, "CHUNK_BUDGET_BYTES", 16 * 2**20)
    x, y = make(500, 500, 32)
    mmd(x.requires_grad_(True), y.requires_grad_(True), backend="torch").backward()
    n = 6000
    x, y = make(n, n, 32)
    x.requires_grad_(True)
    y.requires_grad_(True)
    peak = _peak_extra_mib(lambda: mmd(x, y, backend="torch").backward())
    dense = n * n * 4 / 2**20
    # inputs' grads + centred copies + their grads are ~6 × n × 32 × 4 B (4.4 MiB)
    assert peak < 0.3 * dense, (peak, dense)


def test_chunk_rows_follows_the_budget():
    assert ref_mmd.chunk_rows(40000, 40000, 4, 64 * 2**20) == 64 * 2**20 // (4 * 4 * 40000)
    assert ref_mmd.chunk_rows(10, 10, 4, 2**30) == 10
    assert ref_mmd.chunk_rows(10, 10**9, 8, 1) == 1


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs(backend):
    x, y = make(4, 3, 2)
    kw = dict(backend=backend)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        mmd(x.tolist(), y, **kw)
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        mmd(x[0], y, **kw)
    with pytest.raises(ValueError, match="y must have 2 dimensions"):
        mmd(x, y[None], **kw)
    with pytest.raises(ValueError, match="x must have at least 2 rows"):
        mmd(x[:1], y, **kw)
    with pytest.raises(ValueError, match="y must have at least 2 rows"):
        mmd(x, y[:1], **kw)
    with pytest.raises(ValueError, match="x must have at least 1 feature column"):
        mmd(x[:, :0], y[:, :0], **kw)
    with pytest.raises(ValueError, match="y must have the feature dim d = 2 of x"):
        mmd(x, torch.randn(3, 3), **kw)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        mmd(x.int(), y, **kw)
    with pytest.raises(TypeError, match="y has dtype torch.float64 but x has dtype torch.float32"):
        mmd(x, y.double(), **kw)
    bad = x.clone()
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains non-finite values"):
        mmd(bad, y, **kw)
    bad = y.clone()
    bad[0, 0] = float("-inf")
    with pytest.raises(ValueError, match="y contains non-finite values"):
        mmd(x, bad, **kw)
    for k in (0, -2):
        with pytest.raises(ValueError, match="num_kernels must be >= 1"):
            mmd(x, y, num_kernels=k, **kw)
    for k in (2.0, True, "5"):
        with pytest.raises(TypeError, match="num_kernels must be an int"):
            mmd(x, y, num_kernels=k, **kw)
    for m in (0.0, -2.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="kernel_mul must be a finite number > 0"):
            mmd(x, y, kernel_mul=m, **kw)
    with pytest.raises(TypeError, match="kernel_mul must be a real number"):
        mmd(x, y, kernel_mul="2", **kw)
    with pytest.raises(TypeError, match="unbiased must be a bool"):
        mmd(x, y, unbiased=1, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_bandwidths(backend):
    x, y = make(4, 3, 2)
    kw = dict(backend=backend)
    with pytest.raises(ValueError, match="bandwidths must not be empty"):
        mmd(x, y, bandwidths=[], **kw)
    for b in ([1.0, 0.0], [-1.0], [float("nan")], [float("inf")]):
        with pytest.raises(ValueError, match=r"bandwidths\[\d\] must be a finite number > 0"):
            mmd(x, y, bandwidths=b, **kw)
    with pytest.raises(TypeError, match=r"bandwidths\[1\] must be a real number"):
        mmd(x, y, bandwidths=[1.0, "2"], **kw)
    with pytest.raises(TypeError, match="bandwidths must be None, a list/tuple of floats or a 1-D tensor"):
        mmd(x, y, bandwidths=2.0, **kw)
    with pytest.raises(ValueError, match="bandwidths must be a non-empty 1-D tensor"):
        mmd(x, y, bandwidths=torch.ones(2, 2), **kw)
    with pytest.raises(ValueError, match="bandwidths must be a non-empty 1-D tensor"):
        mmd(x, y, bandwidths=torch.ones(0), **kw)
    with pytest.raises(TypeError, match="bandwidths must be a floating-point tensor"):
        mmd(x, y, bandwidths=torch.tensor([1, 2]), **kw)
    with pytest.raises(ValueError, match="bandwidths must all be > 0"):
        mmd(x, y, bandwidths=torch.tensor([1.0, -2.0]), **kw)
    with pytest.raises(ValueError, match="bandwidths contains non-finite values"):
        mmd(x, y, bandwidths=torch.tensor([1.0, float("nan")]), **kw)


def test_bad_backend():
    x, y = make(4, 3, 2)
    with pytest.raises(ValueError, match="backend must be one of"):
        mmd(x, y, backend="gpu")
    with pytest.raises(ValueError, match="backend 'cuda' is not implemented for this op"):
        mmd(x, y, backend="cuda")


# -- GPU / compiled kernels -------------------------------------------------------------------

_SM90_KERNELS = """
    from fsrf.kernels.mmd import _FWD_CONFIGS, _BWD_CONFIGS, _mmd_bwd_kernel, _mmd_fwd_kernel
    for dt, prec, sq in (("fp32", "tf32x3", True), ("fp64", "ieee", False)):
        acc = tl.float64 if dt == "fp64" else tl.float32
        a = "*" + dt
        base = dict(NUM_K=5, SQUARING=sq, UNBIASED=True, HAS_W=sq, ACC=acc, DOT_PREC=prec)
        cfg = _FWD_CONFIGS[0]
        ce = dict(base, **cfg.kwargs)
        sig = {"U": a, "SQ": a, "INVH": a, "PART": a, "RW": a, "COEF": a, "N": "i32", "n": "i32", "d": "i32",
               "su": "i32"}
        sig.update({k: "constexpr" for k in ce})
        compile_sm90(_mmd_fwd_kernel, sig, ce, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        cfg = _BWD_CONFIGS[0]
        ce = dict(base, **cfg.kwargs)
        out = "*bf16" if dt == "fp32" else a
        sig = {"U": a, "SQ": a, "INVH": a, "GOUT": a, "DX": out, "DY": out, "RW": a, "COEF": a, "N": "i32",
               "n": "i32", "d": "i32", "su": "i32", "sdx": "i32", "sdy": "i32"}
        sig.update({k: "constexpr" for k in ce})
        compile_sm90(_mmd_bwd_kernel, sig, ce, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
"""


@without_cuda
def test_kernels_compile_for_sm90():
    """The forward and backward kernels compile to sm_90 cubins for float32 and float64 inputs."""
    compile_for_sm90(_SM90_KERNELS)


@requires_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 1.6e-2)])
@pytest.mark.parametrize("shape", [(64, 64, 128), (333, 130, 37), (1000, 777, 300)])
def test_cuda_triton_matches_reference(dtype, tol, shape):
    x, y = make(*shape, dtype=dtype)
    x, y = x.cuda(), y.cuda()
    for unbiased in (False, True):
        loss, gx, gy = value_and_grads(lambda a, b: mmd(a, b, unbiased=unbiased, backend="triton"), x, y)
        rl, rgx, rgy = value_and_grads(lambda a, b: mmd(a, b, unbiased=unbiased, backend="torch"),
                                       x.double(), y.double())
        torch.testing.assert_close(loss.double(), rl, rtol=1e-4, atol=1e-5)
        for g, r in ((gx, rgx), (gy, rgy)):
            torch.testing.assert_close(g.double(), r, rtol=tol, atol=tol * r.abs().max().item())


@requires_cuda
def test_cuda_triton_memory_is_linear():
    x, y = make(8192, 8192, 256)
    x, y = x.cuda().requires_grad_(True), y.cuda().requires_grad_(True)
    mmd(x, y, backend="triton").backward()  # autotune outside the measurement
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    mmd(x, y, backend="triton").backward()
    torch.cuda.synchronize()
    extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    # O((N+M)·d): the centred copy, norms and gradients are ~50 MiB; one N×M fp32 matrix is 256 MiB
    assert extra < 128, extra
