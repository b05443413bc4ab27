"""Pure-PyTorch reference of :func:`fsrf.ops.decorrelation_loss` (Barlow-Twins off-diagonal).

``Zs = (z − mean) / sqrt(var + eps)`` with the biased variance over the batch,
``C = Zsᵀ Zs / N`` and ``loss = Σ_{i≠j} C_ij² / (d(d−1))``. With a single column there is no
off-diagonal entry and the loss is defined as 0 (with zero gradient).

Computed by :mod:`fsrf.reference.gram` (the batched terms with their analytic backward).
"""

from __future__ import annotations

from torch import Tensor

from fsrf.reference.gram import decorrelation_terms

__all__ = ["decorrelation_loss"]


def decorrelation_loss(z: Tensor, *, eps: float = 1e-5, weight: Tensor | None = None) -> Tensor:
    """``Σ_{i≠j} C_ij² / (d(d−1))``; see the module docstring. 0 for ``d = 1``.

    With ``weight`` (0/1 rows, (N,)) the loss equals the unweighted loss of the selected rows, and
    it is 0 when fewer than two rows are selected.
    """
    return decorrelation_terms(z, weight, eps=eps).to(z.dtype)
