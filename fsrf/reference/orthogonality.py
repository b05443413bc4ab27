"""Pure-PyTorch reference of :func:`fsrf.ops.orthogonality_loss` (MISA's DiffLoss).

``O(A, B) = mean((ÂᵀB̂)²)`` where ``Â`` is ``A`` with every column centred over the batch and
every row divided by (its L2 norm + ``eps``); the norm is detached when ``detach_norm`` (as in
MISA), so the gradient flows through the centring but not through the normalising factor.

Computed by :mod:`fsrf.reference.gram` (the batched terms with their analytic backward), the one
implementation the grouped :func:`fsrf.reference.factor_constraints.factor_constraints` uses too.
"""

from __future__ import annotations

from torch import Tensor

from fsrf.reference.gram import orthogonality_terms

__all__ = ["orthogonality_loss"]


def orthogonality_loss(a: Tensor, b: Tensor, *, detach_norm: bool = True, eps: float = 1e-6,
                       weight: Tensor | None = None) -> Tensor:
    """``mean((ÂᵀB̂)²)`` over the ``d1 × d2`` entries; see the module docstring.

    With ``weight`` (0/1 rows, (N,)) the loss equals the unweighted loss of the selected rows, and
    it is 0 when fewer than two rows are selected. Half-precision inputs are accumulated in fp32;
    the result has the inputs' dtype.
    """
    return orthogonality_terms(a, b, weight, detach_norm=detach_norm, eps=eps).to(a.dtype)
