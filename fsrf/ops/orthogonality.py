"""``orthogonality_loss``: MISA's DiffLoss between two factor matrices, fused on GPU.

``O(A, B) = mean((ÂᵀB̂)²)`` over the ``d1 × d2`` entries, where ``Â`` is ``A`` with its columns
centred over the batch and each row divided by (its L2 norm + ``eps``). With ``detach_norm=True``
(MISA's choice, the default) the row norm is treated as a constant in the backward: the gradient
flows through the centring always and through the norm only when ``detach_norm=False``.

Backends: ``torch`` (:mod:`fsrf.reference.orthogonality`) and ``triton``
(:mod:`fsrf.kernels.orthogonality`, registered as the custom op ``fsrf::orthogonality_loss`` with
a fake implementation and an autograd formula, so ``torch.compile(fullgraph=True)`` keeps it in
one graph). ``auto`` picks Triton for CUDA tensors and the reference on CPU.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from fsrf import backend as _backend
from fsrf import _checks
from fsrf.reference import orthogonality as _ref

__all__ = ["orthogonality_loss"]

_IMPLEMENTED = ("torch", "triton")
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ---------------------------------------------------------------------------------------------
# shared validation helpers of the three normalised-Gram ops (orthogonality, decorrelation,
# factor_constraints)
# ---------------------------------------------------------------------------------------------
def _check_flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__}")
    return value


def _check_eps(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float; got {type(value).__name__}")
    value = float(value)
    if not (value > 0.0 and value < float("inf")):
        raise ValueError(f"{name} must be a finite number > 0 (it keeps the normalisation finite); "
                         f"got {value}")
    return value


def _pick_backend(op: str, requested: str, x: Tensor, name: str) -> str:
    """Resolve the backend; float64 stays on the reference (the kernels accumulate in fp32)."""
    if requested == "auto" and x.dtype not in _TRITON_DTYPES:
        return _backend.resolve(op, requested, x.device, ("torch",))
    chosen = _backend.resolve(op, requested, x.device, _IMPLEMENTED)
    if chosen == "triton" and x.dtype not in _TRITON_DTYPES:
        raise TypeError(f"{op}: backend 'triton' supports float16, bfloat16 and float32 {name}; "
                        f"got {x.dtype} (use backend='torch' for it)")
    return chosen


# ---------------------------------------------------------------------------------------------
# custom op (Triton path)
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("fsrf::orthogonality_loss", mutates_args=())
def _orth_op(a: Tensor, b: Tensor, detach_norm: bool, eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns (loss, packed [a|b], Gram M fp32, stats fp32); the last three feed the backward."""
    from fsrf.kernels import orthogonality as _k

    return _k.forward(a, b, eps)


@_orth_op.register_fake
def _(a, b, detach_norm, eps):
    from fsrf.kernels._gram import sizes

    n, d1, d2 = a.shape[0], a.shape[1], b.shape[1]
    m_size, st_size = sizes((d1, d2), [(0, 0, 1)], n)
    return (a.new_empty(()), a.new_empty((n, d1 + d2)), a.new_empty((m_size,), dtype=torch.float32),
            a.new_empty((st_size,), dtype=torch.float32))


@torch.library.custom_op("fsrf::orthogonality_loss_backward", mutates_args=())
def _orth_bwd_op(grad: Tensor, packed: Tensor, m: Tensor, stats: Tensor, d1: int, detach_norm: bool,
                 eps: float) -> Tensor:
    """Gradient w.r.t. the packed ``[a | b]`` (N, d1 + d2)."""
    from fsrf.kernels import orthogonality as _k

    return _k.backward(grad, packed, m, stats, d1, detach_norm, eps)


@_orth_bwd_op.register_fake
def _(grad, packed, m, stats, d1, detach_norm, eps):
    return torch.empty_like(packed)


def _setup(ctx, inputs, output):
    a, b, detach_norm, eps = inputs
    _, packed, m, stats = output
    ctx.save_for_backward(packed, m, stats)
    ctx.d1, ctx.detach_norm, ctx.eps = a.shape[1], detach_norm, eps


def _backward(ctx, grad, _g_packed, _g_m, _g_stats):
    packed, m, stats = ctx.saved_tensors
    gp = _orth_bwd_op(grad, packed, m, stats, ctx.d1, ctx.detach_norm, ctx.eps)
    return gp[:, : ctx.d1], gp[:, ctx.d1:], None, None


_orth_op.register_autograd(_backward, setup_context=_setup)


# ---------------------------------------------------------------------------------------------
# public op
# ---------------------------------------------------------------------------------------------
def orthogonality_loss(a: Tensor, b: Tensor, *, detach_norm: bool = True, eps: float = 1e-6,
                       backend: str = "auto") -> Tensor:
    """MISA orthogonality (DiffLoss) between ``a`` (N, d1) and ``b`` (N, d2); a 0-dim tensor.

    Args:
        a, b: factor matrices with the same batch size ``N ≥ 2``, floating dtype (float16,
            bfloat16, float32 or float64; one dtype), on one device.
        detach_norm: treat the row norms as constants in the backward (MISA's behaviour).
        eps: added to each row norm before dividing (> 0).
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` (see :mod:`fsrf.backend`).

    Returns:
        ``mean((ÂᵀB̂)²)`` in the dtype of the inputs (accumulated in fp32 for half inputs).
        0 when the centred columns of ``a`` and ``b`` are orthogonal under the row normalisation;
        at most about ``N² / (d1 d2)`` (both factors rank one along the same row pattern).
    """
    _checks.check_tensor(a, "a", ndim=2, min_size={0: 2, 1: 1})
    _checks.check_tensor(b, "b", ndim=2, min_size={0: 2, 1: 1})
    if b.shape[0] != a.shape[0]:
        raise ValueError(f"b must have the batch size of a ({a.shape[0]} rows); got shape {tuple(b.shape)}")
    _checks.check_same({"a": a, "b": b})
    _check_flag(detach_norm, "detach_norm")
    eps = _check_eps(eps, "eps")
    _checks.check_finite(a, "a")
    _checks.check_finite(b, "b")
    chosen = _pick_backend("orthogonality_loss", backend, a, "inputs")
    if chosen == "triton":
        return _orth_op(a, b, detach_norm, eps)[0]
    return _ref.orthogonality_loss(a, b, detach_norm=detach_norm, eps=eps)
