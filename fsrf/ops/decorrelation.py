"""``decorrelation_loss``: Barlow-Twins-style off-diagonal correlation penalty, fused on GPU.

``Zs = (z − mean) / sqrt(var + eps)`` with the biased variance over the batch, ``C = Zsᵀ Zs / N``
and the loss ``Σ_{i≠j} C_ij² / (d(d−1))``: 0 for exactly decorrelated columns, at most
``(var/(var + eps))² ≈ 1`` (all columns identical up to scale and sign).

``d = 1`` has no off-diagonal entry: the loss is defined as 0 (the empty sum), with zero
gradient, on every backend — a factor of width 1 is then simply unconstrained.

Backends: ``torch`` (:mod:`fsrf.reference.decorrelation`) and ``triton``: the one-term case of
:func:`fsrf.ops.factor_constraints` (custom op ``fsrf::factor_constraints``).
"""

from __future__ import annotations

from torch import Tensor

from fsrf.ops._common import check_positive, resolve_low_precision
from fsrf.ops.factor_constraints import run_triton
from fsrf.reference import decorrelation as _ref
from fsrf.runtime import checks as _checks

__all__ = ["decorrelation_loss"]

OP = "decorrelation_loss"
IMPLEMENTED = ("torch", "triton")


def decorrelation_loss(z: Tensor, *, eps: float = 1e-5, backend: str = "auto") -> Tensor:
    """Off-diagonal correlation penalty of the columns of ``z`` (N, d); a 0-dim tensor.

    Args:
        z: factor matrix, ``N ≥ 2`` rows, floating dtype (float16, bfloat16, float32, float64).
        eps: added to the per-column variance before the square root (> 0).
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` (see :mod:`fsrf.runtime.backend`).

    Returns:
        ``Σ_{i≠j} C_ij² / (d(d−1))`` in the dtype of ``z`` (fp32 accumulation); 0 when ``d = 1``.
    """
    _checks.check_tensor(z, "z", ndim=2, min_size={0: 2, 1: 1})
    eps = check_positive(eps, "eps", "it keeps the normalisation finite", kind="a float")
    _checks.check_finite(z, "z")
    if resolve_low_precision(OP, backend, z, IMPLEMENTED, "z") == "triton":
        return run_triton([z], [], [0], None, True, 1e-6, eps)[0]
    return _ref.decorrelation_loss(z, eps=eps)
