"""factor_constraints: the grouped orthogonality + decorrelation op, both backends, against an
independent float64 loop over the terms on boolean-selected rows; masks, the one-launch
guarantee of the Triton path, multi-tile kernels, torch.compile, opcheck and input validation."""

import os

import pytest
import torch

import fsrf
from fsrf.kernels import _gram
from fsrf.ops import decorrelation_loss, factor_constraints, orthogonality_loss

from _helpers import compile_for_sm90, requires_cuda, terms64

BACKENDS = ["torch", "triton"]
pytestmark = pytest.mark.usefixtures("one_thread")


def fsrf_plan(m):
    """FSRF's terms for m modalities with factors laid out [s_1, p_1, n_1, s_2, ...]."""
    pairs = [(3 * k + a, 3 * k + b) for k in range(m) for a, b in ((0, 1), (0, 2), (1, 2))]
    pairs += [(3 * k + 1, 3 * k2 + 1) for k in range(m) for k2 in range(k + 1, m)]
    decor = [3 * k + a for k in range(m) for a in (0, 1)]
    return pairs, decor


def make(n, widths, dtype=torch.float32):
    return [(torch.randn(n, w, dtype=torch.float64) * (1 + 0.3 * i) + 0.5 * i).to(dtype)
            for i, w in enumerate(widths)]


def run(fn, factors, weights):
    fs = [f.detach().clone().requires_grad_(True) for f in factors]
    out = fn(fs)
    grads = torch.autograd.grad((out * weights.to(out.dtype)).sum(), fs, allow_unused=True)
    grads = [torch.zeros_like(f) if g is None else g for f, g in zip(fs, grads)]
    return out.detach(), grads


def check(factors, pairs, decor, backend, masks=None, detach_norm=True, rtol=2e-4):
    t = len(pairs) + len(decor)
    weights = torch.linspace(0.5, 2.0, t, dtype=torch.float64)
    got, g_got = run(lambda fs: factor_constraints(fs, pairs, decor, masks=masks, detach_norm=detach_norm,
                                                   backend=backend), factors, weights)
    want, g_want = run(lambda fs: terms64(fs, pairs, decor, masks, detach_norm),
                       [f.double() for f in factors], weights)
    assert got.shape == (t,) and got.dtype == factors[0].dtype
    torch.testing.assert_close(got.double(), want, rtol=rtol, atol=1e-7)
    for g, w in zip(g_got, g_want):
        assert g.shape == w.shape
        torch.testing.assert_close(g.double(), w, rtol=rtol, atol=rtol * max(w.abs().max().item(), 1e-2))
    return got, g_got


class _CountingKernel:
    """Wraps a jitted kernel and counts its launches (kernel[grid](...) calls)."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def counted(*args, **kwargs):
            self.launches += 1
            return launch(*args, **kwargs)

        return counted


# --- values and gradients ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_fsrf_terms_three_modalities(backend, monkeypatch):
    pairs, decor = fsrf_plan(3)
    assert (len(pairs), len(decor)) == (12, 6)
    counters = {}
    if backend == "triton":
        # the grouped op's promise: ONE forward kernel launch for all 18 terms, two for the backward
        for name in ("_fwd_kernel", "_sum_kernel", "_bwd_kernel", "_reduce_kernel"):
            counters[name] = _CountingKernel(getattr(_gram, name))
            monkeypatch.setattr(_gram, name, counters[name])
    avail = [torch.rand(10) < 0.8 for _ in range(3)]          # per-modality availability, as FSRFLayer
    check(make(10, [16] * 9), pairs, decor, backend, masks=[avail[f // 3] for f in range(9)])
    if backend == "triton":
        launches = {k: c.launches for k, c in counters.items()}
        assert launches == {"_fwd_kernel": 1, "_sum_kernel": 0, "_bwd_kernel": 1, "_reduce_kernel": 1}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("detach_norm", [True, False])
def test_mixed_widths_with_masks(backend, detach_norm):
    n = 13
    factors = make(n, [5, 17, 33, 8])
    masks = [torch.rand(n) < 0.7, None, torch.rand(n) < 0.8, torch.rand(n) < 0.6]
    pairs = [(0, 1), (1, 2), (0, 2), (3, 1), (2, 2)]
    check(factors, pairs, [0, 1, 2, 3], backend, masks=masks, detach_norm=detach_norm)


@pytest.mark.parametrize("n", [6, 40], ids=["row-space", "column-space"])
@pytest.mark.parametrize("detach_norm", [True, False])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("batching", ["one batch", "per term", "batches of 4"])
def test_reference_row_and_column_space_products(n, detach_norm, masked, batching, monkeypatch):
    # the torch reference forms its products in row space (N×N Grams) when N is small against the
    # widths and in column space otherwise; it stacks small terms into batches and runs large
    # ones one by one, on the factors themselves (unstacked sides too): every combination against
    # the float64 loop, on FSRF's plan
    from fsrf.reference import factor_constraints as ref_fc
    from fsrf.reference import gram

    if batching == "per term":
        monkeypatch.setattr(ref_fc, "BATCH_ENTRIES", 1)
        monkeypatch.setattr(gram, "STACK_ENTRIES", 1)
    elif batching == "batches of 4":
        monkeypatch.setattr(ref_fc, "BATCH_ENTRIES", 4 * n * 48)
    widths = [24] * 9
    assert gram._row_space(n, 24, 24) == (n == 6)
    pairs, decor = fsrf_plan(3)
    masks = None
    if masked:
        g = torch.Generator().manual_seed(n)
        avail = [torch.rand(n, generator=g) < 0.7 for _ in range(3)]
        avail[2][:] = False
        avail[2][1] = True  # one observed row: that modality's terms are 0
        masks = [avail[f // 3] for f in range(9)]
    check(make(n, widths), pairs, decor, "torch", masks=masks, detach_norm=detach_norm)


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_term_equals_the_single_op_on_the_selected_rows(backend):
    n = 11
    factors = make(n, [6, 9, 4])
    masks = [torch.rand(n) < 0.75 for _ in factors]
    pairs, decor = [(0, 1), (1, 2)], [0, 2]
    got = factor_constraints(factors, pairs, decor, masks=masks, backend=backend)
    for k, (i, j) in enumerate(pairs):
        rows = masks[i] & masks[j]
        single = orthogonality_loss(factors[i][rows], factors[j][rows], backend=backend)
        torch.testing.assert_close(got[k], single, rtol=1e-5, atol=1e-7)
    for k, i in enumerate(decor, len(pairs)):
        single = decorrelation_loss(factors[i][masks[i]], backend=backend)
        torch.testing.assert_close(got[k], single, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_terms_with_fewer_than_two_rows_are_zero_without_nan(backend):
    n = 8
    factors = make(n, [5, 6, 7])
    one = torch.zeros(n, dtype=torch.bool)
    one[3] = True
    none = torch.zeros(n, dtype=torch.bool)
    masks = [one, torch.ones(n, dtype=torch.bool), none]
    pairs, decor = [(0, 1), (1, 2), (0, 2)], [0, 2, 1]
    got, grads = check(factors, pairs, decor, backend, masks=masks, detach_norm=False)
    assert got[:3].tolist() == [0.0, 0.0, 0.0] and got[3:5].tolist() == [0.0, 0.0]
    assert got[5] > 0
    # factors 0 and 2 take part only in empty terms: exactly zero gradient
    assert torch.count_nonzero(grads[0]) == 0 and torch.count_nonzero(grads[2]) == 0
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_true_masks_equal_no_masks(backend):
    n = 9
    factors = make(n, [7, 4, 10])
    pairs, decor = [(0, 1), (1, 2)], [2]
    w = torch.linspace(1.0, 2.0, 3)
    a, ga = run(lambda fs: factor_constraints(fs, pairs, decor, backend=backend), factors, w)
    masks = [torch.ones(n, dtype=torch.bool)] * 3
    b, gb = run(lambda fs: factor_constraints(fs, pairs, decor, masks=masks, backend=backend), factors, w)
    torch.testing.assert_close(a, b)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_of_one_and_empty_term_lists(backend):
    one = make(1, [3, 4])
    torch.testing.assert_close(factor_constraints(one, [(0, 1)], [0], backend=backend), torch.zeros(2))
    factors = make(5, [3, 4])
    out, grads = run(lambda fs: factor_constraints(fs, [], [], backend=backend), factors, torch.zeros(0))
    assert out.shape == (0,) and all(torch.count_nonzero(g) == 0 for g in grads)


@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision(backend, dtype, rtol):
    # float64 reference of the half-rounded inputs; the remaining error is the output rounding
    n = 12
    factors = make(n, [16, 9, 20], dtype=dtype)
    masks = [torch.rand(n) < 0.8, None, None]
    got, grads = check(factors, [(0, 1), (1, 2)], [0, 2], backend, masks=masks, rtol=rtol)
    assert all(g.dtype == dtype for g in grads)


def test_multi_tile_kernels(monkeypatch):
    # tiny blocks force several Gram tiles per term, several row steps and several column tiles
    monkeypatch.setattr(_gram, "_BLOCK_OVERRIDE", (16, 16))
    n = 17
    factors = make(n, [18, 20])
    masks = [torch.rand(n) < 0.8, torch.rand(n) < 0.9]
    check(factors, [(0, 1)], [1], "triton", masks=masks, detach_norm=False)


def test_split_forward_for_large_batches(monkeypatch):
    # on GPU, batches above 1024 rows use three forward launches over row blocks; force it here
    monkeypatch.setattr(_gram, "_SPLIT_OVERRIDE", 3)
    n = 40
    factors = make(n, [5, 12, 9])
    masks = [torch.rand(n) < 0.8, None, torch.rand(n) < 0.7]
    check(factors, [(0, 1), (2, 1), (0, 2)], [0, 1, 2], "triton", masks=masks, detach_norm=False)


def test_backward_column_sums_reduced_first_for_many_row_tiles(monkeypatch):
    # beyond _REDUCE_INLINE_TILES row tiles the per-tile column sums are summed once up front
    monkeypatch.setattr(_gram, "_REDUCE_INLINE_TILES", 0)
    check(make(9, [6, 7]), [(0, 1)], [1], "triton", masks=[torch.rand(9) < 0.8, None])


# --- torch.compile and opcheck ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend):
    n = 7
    factors = make(n, [5, 6, 4])
    masks = [torch.rand(n) < 0.8, None, torch.rand(n) < 0.9]

    def fn(fs):
        return factor_constraints(fs, [(0, 1), (1, 2)], [0], masks=masks, detach_norm=False, backend=backend)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    w = torch.tensor([1.0, 2.0, 0.5])
    got, want = run(compiled, factors, w), run(fn, factors, w)
    torch.testing.assert_close(got[0], want[0])
    for x, y in zip(got[1], want[1]):
        torch.testing.assert_close(x, y)


# the grouped case with masks, and the one-term calls that orthogonality_loss and
# decorrelation_loss make (the unmasked None-schema path also runs in the compile tests)
_OPCHECK_CASES = {
    "grouped, masked": ([4, 5, 3], [0, 2, 1, 1, 0, 0], True),
    "orthogonality_loss": ([4, 5], [0, 0, 1], False),
    "decorrelation_loss": ([5], [1, 0, 0], False),
}


@pytest.mark.parametrize("case", list(_OPCHECK_CASES))
def test_opcheck_custom_ops(case):
    widths, terms, masked = _OPCHECK_CASES[case]
    n = 6
    factors = [f.requires_grad_(True) for f in make(n, widths)]
    masks = (torch.rand(len(widths), n) < 0.8) if masked else None
    args = (factors, terms, masks, False, 1e-6, 1e-5)
    torch.library.opcheck(torch.ops.fsrf.factor_constraints.default, args)
    _, packed, m, stats = (t.detach() for t in torch.ops.fsrf.factor_constraints(*args))
    torch.library.opcheck(torch.ops.fsrf.factor_constraints_backward.default,
                          (torch.rand(len(terms) // 3), packed, m, stats, masks, widths, terms, True, 1e-6))


# --- bad inputs ------------------------------------------------------------------------------------------
def _bad_cases():
    a, b = make(6, [3, 4])
    nan = b.clone()
    nan[1, 1] = float("nan")
    ok = torch.ones(6, dtype=torch.bool)
    return [
        ((a, [(0, 1)], []), {}, TypeError, "factors must be a list"),
        (([], [], []), {}, ValueError, "factors must hold at least one"),
        (([a, b[0]], [(0, 1)], []), {}, ValueError, r"factors\[1\] must have 2 dimensions"),
        (([a, b[:5]], [(0, 1)], []), {}, ValueError, r"factors\[1\] must have the batch size"),
        (([a[:0], b[:0]], [(0, 1)], []), {}, ValueError, r"factors\[0\] must have size >= 1 in dim 0"),
        (([a, b.long()], [(0, 1)], []), {}, TypeError, r"factors\[1\] must be a floating-point tensor"),
        (([a, b.double()], [(0, 1)], []), {}, TypeError, r"factors\[1\] has dtype torch.float64"),
        (([a, nan], [(0, 1)], []), {}, ValueError, r"factors\[1\] contains non-finite values"),
        (([a, b], [(0, 2)], []), {}, ValueError, r"pairs\[0\]\[1\] must be a factor index in \[0, 2\)"),
        (([a, b], [(0,)], []), {}, ValueError, r"pairs\[0\] must be an \(i, j\) pair"),
        (([a, b], [(0, 1.0)], []), {}, TypeError, r"pairs\[0\]\[1\] must be an int"),
        (([a, b], (0, 1), []), {}, ValueError, r"pairs\[0\] must be an \(i, j\) pair"),
        (([a, b], [], [-1]), {}, ValueError, r"decorrelate\[0\] must be a factor index"),
        (([a, b], [], 0), {}, TypeError, "decorrelate must be a list"),
        (([a, b], [(0, 1)], []), {"masks": [ok]}, ValueError, "masks must have one entry per factor"),
        (([a, b], [(0, 1)], []), {"masks": ok}, TypeError, "masks must be None or a list"),
        (([a, b], [(0, 1)], []), {"masks": [ok, ok.float()]}, TypeError, r"masks\[1\] must have dtype torch.bool"),
        (([a, b], [(0, 1)], []), {"masks": [ok[:5], ok]}, ValueError, r"masks\[0\] must have shape \(6,\)"),
        (([a, b], [(0, 1)], []), {"orth_eps": 0}, ValueError, "orth_eps must be a finite number > 0"),
        (([a, b], [(0, 1)], []), {"decor_eps": float("nan")}, ValueError, "decor_eps must be a finite number"),
        (([a, b], [(0, 1)], []), {"detach_norm": "yes"}, TypeError, "detach_norm must be a bool"),
        (([a.double(), b.double()], [(0, 1)], []), {"backend": "triton"}, TypeError, "supports float16"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_inputs_raise_clear_errors(case):
    args, kwargs, exc, match = _bad_cases()[case]
    with pytest.raises(exc, match=match):
        factor_constraints(*args, **kwargs)


def test_float64_runs_on_the_reference():
    factors = make(7, [3, 5], dtype=torch.float64)
    got = factor_constraints(factors, [(0, 1)], [1])
    torch.testing.assert_close(got, terms64(factors, [(0, 1)], [1]))


# --- offline sm_90 compile check --------------------------------------------------------------------
_SM90_KERNELS = """
    import torch
    from fsrf.kernels import _gram as G

    bk = G._blocks(64, 128, torch.device("cuda"))   # the block sizes an H100 run uses for d = 128
    P = dict(mask_ptr="*u8", term_ptr="*i32", side_ptr="*i32", m_ptr="*fp32", stats_ptr="*fp32",
             part_ptr="*fp32", vsum_ptr="*fp32", scr_ptr="*fp32", mpart_ptr="*fp32", gout_ptr="*fp32",
             slab_ptr="*fp32", psum_ptr="*fp32", fac_ptr="*i32", fsides_ptr="*i32", orth_eps="fp32",
             decor_eps="fp32")
    def build(kern, dt, nw, **consts):
        sig = {}
        for name in kern.arg_names:
            if name in consts:
                sig[name] = "constexpr"
            elif name in ("x_ptr", "out_ptr"):
                sig[name] = "*" + dt
            else:
                sig[name] = P.get(name, "i32")
        k = compile_sm90(kern, sig, consts, num_warps=nw)
        assert k.asm["cubin"] and k.metadata.shared <= 232448, (kern.fn.__name__, k.metadata.shared)
    f = dict(BN=bk.bn_fwd, BD=bk.bd_fwd)
    b = dict(BN=bk.bn_bwd, BD=bk.bd_bwd)
    build(G._fwd_kernel, "fp32", bk.warps_fwd, HAS_MASK=True, DOT_PREC="ieee", **f)
    build(G._sum_kernel, "fp32", 4, HAS_MASK=True, **f)
    build(G._gram_split_kernel, "bf16", bk.warps_fwd, HAS_MASK=False, DOT_PREC="tf32", **f)
    build(G._finalize_kernel, "fp32", bk.warps_fwd, BD=bk.bd_fwd)
    build(G._bwd_kernel, "fp32", bk.warps_bwd, HAS_MASK=True, DETACH=False, DOT_PREC="ieee", **b)
    build(G._bwd_kernel, "fp16", bk.warps_bwd, HAS_MASK=False, DETACH=True, DOT_PREC="tf32", **b)
    build(G._reduce_kernel, "bf16", 4, HAS_MASK=True, **b)
"""


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FSRF_SM90_CHECK") != "1",
                    reason="opt-in (1-2 min on 2 cores): set FSRF_SM90_CHECK=1 to compile the Triton kernels for sm_90")
def test_kernels_compile_for_sm90():
    """Every kernel compiles to an sm_90 cubin at the GPU block sizes, and its shared memory fits an
    H100 SM."""
    compile_for_sm90(_SM90_KERNELS, timeout=900)


# --- GPU -------------------------------------------------------------------------------------------------
@requires_cuda
@pytest.mark.parametrize("detach_norm", [True, False])
def test_cuda_fsrf_shape(detach_norm):
    pairs, decor = fsrf_plan(3)
    n = 64
    factors = [f.cuda() for f in make(n, [128] * 9)]
    masks = [(torch.rand(n) < 0.8).cuda() for _ in factors]
    w = torch.linspace(0.5, 2.0, 18, dtype=torch.float64, device="cuda")
    got, g_got = run(lambda fs: factor_constraints(fs, pairs, decor, masks=masks, detach_norm=detach_norm,
                                                   backend="triton"), factors, w)
    want, g_want = run(lambda fs: terms64(fs, pairs, decor, masks, detach_norm),
                       [f.double() for f in factors], w)
    torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=1e-7)
    for g, r in zip(g_got, g_want):
        torch.testing.assert_close(g.double(), r, rtol=1e-3, atol=1e-3 * r.abs().max().item())
    fsrf.set_backend(None)
