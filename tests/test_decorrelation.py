"""decorrelation_loss (Barlow-Twins off-diagonal penalty): torch and Triton backends against an
independent float64 formula, gradients included, special values (decorrelated columns, identical
columns, d = 1), low precision, torch.compile and input validation (opcheck of the shared custom op: test_factor_constraints.py)."""

import pytest
import torch

import fsrf
from fsrf.ops import decorrelation_loss

from _helpers import decor64, requires_cuda, value_and_grads

BACKENDS = ["torch", "triton"]
pytestmark = pytest.mark.usefixtures("one_thread")


def make(n, d, dtype=torch.float32, device="cpu"):
    z = torch.randn(n, d, dtype=torch.float64)
    z = z + 0.6 * z[:, :1]                         # some genuine correlation
    z = z * torch.linspace(0.5, 3.0, d, dtype=torch.float64) + torch.linspace(-4, 4, d, dtype=torch.float64)
    return z.to(device=device, dtype=dtype)


def value_and_grad(fn, z, upstream=1.3):
    """(value, gradient) of ``fn`` at a leaf copy of ``z``, for this file's upstream gradient."""
    return value_and_grads(fn, z, upstream=upstream)


def assert_close_to_ref(z, backend, rtol=2e-4):
    loss, g = value_and_grad(lambda x: decorrelation_loss(x, backend=backend), z)
    rloss, rg = value_and_grad(decor64, z.double())
    assert loss.shape == () and loss.dtype == z.dtype and g.dtype == z.dtype
    torch.testing.assert_close(loss.double().cpu(), rloss.cpu(), rtol=rtol, atol=1e-7)
    atol = rtol * max(rg.abs().max().item(), 1e-2)
    torch.testing.assert_close(g.double().cpu(), rg.cpu(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(2, 3), (7, 5), (33, 40), (50, 17)])
def test_value_and_gradient_match_float64(backend, shape):
    assert_close_to_ref(make(*shape), backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exactly_decorrelated_columns_give_zero(backend):
    # Sylvester–Hadamard columns (minus the constant one) are centred and mutually orthogonal;
    # per-column scales and offsets leave the correlation matrix the identity
    h = torch.ones(1, 1)
    for _ in range(3):
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    z = h[:, 1:] * torch.linspace(0.5, 4.0, 7) + torch.arange(7.0)
    if backend == "torch":
        # float64 on the reference: a float32 CPU GEMM need not be exact even on these small
        # integers (seen: 2e-6 off-diagonal on one machine), and the claim is about the loss,
        # not about one BLAS's float32 rounding; the Triton kernels take float32 only
        z = z.double()
    loss, g = value_and_grad(lambda x: decorrelation_loss(x, backend=backend), z)
    assert loss.abs().item() < 1e-12
    assert g.abs().max().item() < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_identical_columns_give_the_maximum(backend):
    # |C_ij| ≤ 1 (Cauchy–Schwarz), with equality for columns equal up to scale and sign;
    # with eps the maximum is (var/(var+eps))², here 1 − O(1e-5)
    x = torch.randn(12, dtype=torch.float64)
    z = torch.outer(x, torch.tensor([1.0, -2.0, 0.5, 3.0, -1.5], dtype=torch.float64)) + 7.0
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.5], dtype=torch.float64) ** 2 * x.var(unbiased=False)
    r = c / (c + 1e-5)
    top = (torch.outer(r, r).sqrt().pow(2).sum() - r.pow(2).sum()) / 20
    loss = decorrelation_loss(z.float(), backend=backend)
    torch.testing.assert_close(loss.double(), top, rtol=1e-4, atol=0)
    assert top > 0.999
    assert decorrelation_loss(make(12, 5), backend=backend) < 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_column_is_zero_with_zero_gradient(backend):
    loss, g = value_and_grad(lambda x: decorrelation_loss(x, backend=backend), make(9, 1))
    assert loss.item() == 0.0
    assert torch.count_nonzero(g) == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,rtol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_half_precision_matches_fp32_reference(backend, dtype, rtol):
    # the float64 reference runs on the half-rounded inputs; what remains is the output rounding
    z = make(24, 20, dtype=dtype)
    loss, g = value_and_grad(lambda x: decorrelation_loss(x, backend=backend), z, upstream=1.0)
    rloss, rg = value_and_grad(decor64, z.double(), upstream=1.0)
    assert loss.dtype == dtype and g.dtype == dtype
    torch.testing.assert_close(loss.double(), rloss, rtol=rtol, atol=0)
    torch.testing.assert_close(g.double(), rg, rtol=rtol, atol=rtol * rg.abs().max().item())


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_input(backend):
    assert_close_to_ref(make(11, 14)[:, ::2], backend)   # column stride 2
    assert_close_to_ref(make(6, 11).T, backend)          # column-major


def test_gradcheck_float64_reference_backend():
    z = make(6, 4, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: decorrelation_loss(x, backend="torch"), (z,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph(backend):
    def fn(x):
        return decorrelation_loss(x, eps=1e-4, backend=backend) + 1.0

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    z = make(10, 6)
    for got, want in zip(value_and_grad(compiled, z), value_and_grad(fn, z)):
        torch.testing.assert_close(got, want)


def _bad_cases():
    z = make(6, 3)
    nan = z.clone()
    nan[0, 0] = float("inf")
    return [
        ((z[0],), {}, ValueError, "z must have 2 dimensions"),
        ((z[:1],), {}, ValueError, "z must have size >= 2 in dim 0"),
        ((z[:, :0],), {}, ValueError, "z must have size >= 1 in dim 1"),
        ((z.int(),), {}, TypeError, "z must be a floating-point tensor"),
        (([[1.0, 2.0]],), {}, TypeError, "z must be a torch.Tensor"),
        ((nan,), {}, ValueError, "z contains non-finite values"),
        ((z,), {"eps": -1.0}, ValueError, "eps must be a finite number > 0"),
        ((z,), {"eps": None}, TypeError, "eps must be a float"),
        ((z.double(),), {"backend": "triton"}, TypeError, "supports float16, bfloat16 and float32"),
        ((z,), {"backend": "cpp"}, ValueError, "backend 'cpp' is not implemented"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_inputs_raise_clear_errors(case):
    args, kwargs, exc, match = _bad_cases()[case]
    with pytest.raises(exc, match=match):
        decorrelation_loss(*args, **kwargs)


@requires_cuda
@pytest.mark.parametrize("shape", [(64, 128), (300, 200)])
def test_cuda_triton_matches_float64(shape):
    z = make(*shape, device="cuda")
    assert_close_to_ref(z, "triton", rtol=1e-3)
    fsrf.set_backend(None)
    torch.testing.assert_close(decorrelation_loss(z).double().cpu(), decor64(z).cpu(), rtol=1e-3, atol=0)
