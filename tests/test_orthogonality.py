"""orthogonality_loss (MISA DiffLoss): torch and Triton backends against an independent float64
formula, gradients included (both detach_norm semantics), special values, low precision,
torch.compile and input validation (opcheck of the shared custom op: test_factor_constraints.py)."""

import pytest
import torch

import fsrf
from fsrf.ops import orthogonality_loss

from _helpers import orth64, requires_cuda, value_and_grads

BACKENDS = ["torch", "triton"]
pytestmark = pytest.mark.usefixtures("one_thread")


def make(n, d1, d2, dtype=torch.float32, device="cpu"):
    # offsets and scales so that centring and row normalisation matter
    a = torch.randn(n, d1, dtype=torch.float64) * 1.5 + torch.linspace(-2, 3, d1, dtype=torch.float64)
    b = torch.randn(n, d2, dtype=torch.float64) * 0.7 - 1.0
    return a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)


def assert_close_to_ref(a, b, backend, detach_norm, rtol=2e-4, device="cpu"):
    loss, ga, gb = value_and_grads(
        lambda x, y: orthogonality_loss(x, y, detach_norm=detach_norm, backend=backend), a, b)
    rloss, rga, rgb = value_and_grads(lambda x, y: orth64(x, y, detach_norm), a.double(), b.double())
    assert loss.dtype == a.dtype and loss.shape == ()
    torch.testing.assert_close(loss.double().cpu(), rloss.cpu(), rtol=rtol, atol=1e-7)
    for g, r in ((ga, rga), (gb, rgb)):
        assert g.shape == r.shape and g.dtype == a.dtype
        # absolute floor: with N = 2 and a free norm the loss is scale-invariant and its exact
        # gradient is ~1e-8, below fp32 rounding of the O(1) terms that cancel to produce it
        atol = rtol * max(r.abs().max().item(), 1e-2)
        torch.testing.assert_close(g.double().cpu(), r.cpu(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("detach_norm", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 5), (7, 5, 3), (33, 17, 40)])
def test_value_and_gradients_match_float64(backend, detach_norm, shape):
    a, b = make(*shape)
    assert_close_to_ref(a, b, backend, detach_norm)


@pytest.mark.parametrize("backend", BACKENDS)
def test_detach_norm_changes_the_gradient_not_the_value(backend):
    a, b = make(12, 6, 9)
    l1, ga1, gb1 = value_and_grads(lambda x, y: orthogonality_loss(x, y, detach_norm=True, backend=backend), a, b)
    l2, ga2, gb2 = value_and_grads(lambda x, y: orthogonality_loss(x, y, detach_norm=False, backend=backend), a, b)
    torch.testing.assert_close(l1, l2)
    assert (ga1 - ga2).abs().max() > 1e-2 * ga1.abs().max()
    assert (gb1 - gb2).abs().max() > 1e-2 * gb1.abs().max()
    # and each one is the float64 autograd gradient of its own definition
    for det, ga in ((True, ga1), (False, ga2)):
        _, rga, _ = value_and_grads(lambda x, y: orth64(x, y, det), a.double(), b.double())
        torch.testing.assert_close(ga.double(), rga, rtol=2e-4, atol=2e-4 * rga.abs().max().item())


@pytest.mark.parametrize("backend", BACKENDS)
def test_orthogonal_inputs_give_zero(backend):
    # rows where a is non-constant and rows where b is non-constant are disjoint after centring,
    # so every product of a normalised a-row with a normalised b-row vanishes: ÂᵀB̂ = 0 exactly
    u, v = torch.randn(5), torch.randn(4)
    a = torch.stack([u, -u, torch.zeros(5), torch.zeros(5)]) + 3.0
    b = torch.stack([torch.zeros(4), torch.zeros(4), v, -v]) - 1.0
    loss, ga, gb = value_and_grads(lambda x, y: orthogonality_loss(x, y, backend=backend), a, b)
    assert loss.abs().item() < 1e-12
    assert torch.isfinite(ga).all() and torch.isfinite(gb).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_aligned_rank_one_inputs_give_the_maximum(backend):
    # ‖ÂᵀB̂‖_F ≤ ‖Â‖_F ‖B̂‖_F ≈ N, reached when both are rank one along the same row pattern
    n, d1, d2 = 10, 4, 6
    alpha = torch.randn(n, dtype=torch.float64)
    alpha = alpha - alpha.mean()
    a = torch.outer(alpha, torch.randn(d1, dtype=torch.float64)) + 2.0
    b = torch.outer(alpha, torch.randn(d2, dtype=torch.float64)) - 5.0
    top = n * n / (d1 * d2)
    loss = orthogonality_loss(a.float(), b.float(), backend=backend)
    torch.testing.assert_close(loss.double(), torch.tensor(top, dtype=torch.float64), rtol=1e-4, atol=0)
    ra, rb = make(n, d1, d2)
    assert orthogonality_loss(ra, rb, backend=backend) < 0.5 * top


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_half_precision_matches_fp32_reference(backend, dtype, rtol):
    # inputs are rounded to the half dtype first; the fp32-accumulated result may then differ
    # from the float64 value of those same inputs only by the final rounding to the half dtype
    # (≈ 5e-4 fp16, 4e-3 bf16 relative; tolerance leaves room for TF32 dot products on GPU)
    a, b = make(16, 12, 20, dtype=dtype)
    loss, ga, gb = value_and_grads(lambda x, y: orthogonality_loss(x, y, backend=backend), a, b, upstream=1.0)
    rloss, rga, rgb = value_and_grads(lambda x, y: orth64(x, y), a.double(), b.double(), upstream=1.0)
    assert loss.dtype == dtype and ga.dtype == dtype
    torch.testing.assert_close(loss.double(), rloss, rtol=rtol, atol=0)
    for g, r in ((ga, rga), (gb, rgb)):
        torch.testing.assert_close(g.double(), r, rtol=rtol, atol=rtol * r.abs().max().item())


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(backend):
    a = (torch.randn(7, 9) + 1.0).T          # (9, 7), column-major
    b = torch.randn(9, 10)[:, ::2]           # (9, 5), column stride 2
    assert_close_to_ref(a, b, backend, detach_norm=True)


def test_gradcheck_float64_reference_backend():
    # only detach_norm=False is the true derivative; the detached norm is, by design, a
    # different (MISA) gradient that finite differences cannot confirm
    a, b = make(5, 3, 4, dtype=torch.float64)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: orthogonality_loss(x, y, detach_norm=False, backend="torch"),
                                    (a, b))


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend):
    a, b = make(9, 5, 7)

    def fn(x, y):
        return orthogonality_loss(x, y, detach_norm=False, backend=backend) * 2.0

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got = value_and_grads(compiled, a, b)
    want = value_and_grads(fn, a, b)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_auto_and_explicit(backend):
    a, b = make(6, 3, 4, dtype=torch.float64)
    if backend == "triton":
        with pytest.raises(TypeError, match="float64"):
            orthogonality_loss(a, b, backend="triton")
    else:
        torch.testing.assert_close(orthogonality_loss(a, b), orth64(a, b))


def _bad_cases():
    a, b = make(6, 3, 4)
    nan = a.clone()
    nan[2, 1] = float("nan")
    return [
        ((a[0], b), {}, ValueError, "a must have 2 dimensions"),
        ((a, b.unsqueeze(0)), {}, ValueError, "b must have 2 dimensions"),
        ((a[:1], b[:1]), {}, ValueError, "a must have size >= 2 in dim 0"),
        ((a, b[:5]), {}, ValueError, "b must have the batch size of a"),
        ((a.long(), b), {}, TypeError, "a must be a floating-point tensor"),
        ((a, b.double()), {}, TypeError, "b has dtype torch.float64"),
        ((a.numpy(), b), {}, TypeError, "a must be a torch.Tensor"),
        ((nan, b), {}, ValueError, "a contains non-finite values"),
        ((a, b), {"eps": 0.0}, ValueError, "eps must be a finite number > 0"),
        ((a, b), {"eps": "1e-6"}, TypeError, "eps must be a float"),
        ((a, b), {"detach_norm": 1}, TypeError, "detach_norm must be a bool"),
        ((a, b), {"backend": "cuda"}, ValueError, "backend 'cuda' is not implemented"),
        ((a, b), {"backend": "fast"}, ValueError, "backend must be one of"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_inputs_raise_clear_errors(case):
    args, kwargs, exc, match = _bad_cases()[case]
    with pytest.raises(exc, match=match):
        orthogonality_loss(*args, **kwargs)


@requires_cuda
@pytest.mark.parametrize("detach_norm", [True, False])
@pytest.mark.parametrize("shape", [(64, 128, 128), (300, 200, 72)])
def test_cuda_triton_matches_float64(detach_norm, shape):
    a, b = make(*shape, device="cuda")
    assert_close_to_ref(a, b, "triton", detach_norm, rtol=1e-3)
    fsrf.set_backend(None)
    torch.testing.assert_close(orthogonality_loss(a, b).double().cpu(), orth64(a, b).cpu(), rtol=1e-3, atol=0)
