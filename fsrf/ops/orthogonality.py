"""``orthogonality_loss``: MISA's DiffLoss between two factor matrices, fused on GPU.

``O(A, B) = mean((ÂᵀB̂)²)`` over the ``d1 × d2`` entries, where ``Â`` is ``A`` with its columns
centred over the batch and each row divided by (its L2 norm + ``eps``). With ``detach_norm=True``
(MISA's choice, the default) the row norm is treated as a constant in the backward: the gradient
flows through the centring always and through the norm only when ``detach_norm=False``.

Backends: ``torch`` (:mod:`fsrf.reference.orthogonality`) and ``triton``: the one-term case of
:func:`fsrf.ops.factor_constraints` (custom op ``fsrf::factor_constraints``, kernels in
:mod:`fsrf.kernels.factor_constraints`), so ``torch.compile(fullgraph=True)`` keeps it in one
graph. ``auto`` picks Triton for CUDA tensors and the reference on CPU.
"""

from __future__ import annotations

from torch import Tensor

from fsrf.ops._common import check_flag, check_positive, resolve_low_precision
from fsrf.ops.factor_constraints import run_triton
from fsrf.reference import orthogonality as _ref
from fsrf.runtime import checks as _checks

__all__ = ["orthogonality_loss"]

OP = "orthogonality_loss"
IMPLEMENTED = ("torch", "triton")


def orthogonality_loss(a: Tensor, b: Tensor, *, detach_norm: bool = True, eps: float = 1e-6,
                       backend: str = "auto") -> Tensor:
    """MISA orthogonality (DiffLoss) between ``a`` (N, d1) and ``b`` (N, d2); a 0-dim tensor.

    Args:
        a, b: factor matrices with the same batch size ``N ≥ 2``, floating dtype (float16,
            bfloat16, float32 or float64; one dtype), on one device.
        detach_norm: treat the row norms as constants in the backward (MISA's behaviour).
        eps: added to each row norm before dividing (> 0).
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` (see :mod:`fsrf.runtime.backend`).

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
    check_flag(detach_norm, "detach_norm")
    eps = check_positive(eps, "eps", "it keeps the normalisation finite", kind="a float")
    _checks.check_finite(a, "a")
    _checks.check_finite(b, "b")
    if resolve_low_precision(OP, backend, a, IMPLEMENTED, "inputs") == "triton":
        return run_triton([a, b], [(0, 1)], [], None, detach_norm, eps, 1e-5)[0]
    return _ref.orthogonality_loss(a, b, detach_norm=detach_norm, eps=eps)
