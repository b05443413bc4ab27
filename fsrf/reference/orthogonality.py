"""Pure-PyTorch reference of :func:`fsrf.ops.orthogonality_loss` (MISA's DiffLoss).

``O(A, B) = mean((ÂᵀB̂)²)`` where ``Â`` is ``A`` with every column centred over the batch and
every row divided by (its L2 norm + ``eps``); the norm is detached when ``detach_norm`` (as in
MISA), so the gradient flows through the centring but not through the normalising factor.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["orthogonality_loss", "normalise_rows"]

_LOW = (torch.float16, torch.bfloat16)


def _upcast(x: Tensor) -> Tensor:
    # the kernels accumulate half-precision inputs in fp32; so does the reference
    return x.float() if x.dtype in _LOW else x


def normalise_rows(x: Tensor, weight: Tensor | None, detach_norm: bool, eps: float) -> Tensor:
    """Centre the columns of ``x`` over the (weighted) rows, then divide each row by its norm + eps.

    ``weight`` is an optional 0/1 row weight (N,): means are taken over the rows with weight 1 and
    the other rows are zeroed, so they contribute nothing and receive no gradient.
    """
    if weight is None:
        c = x - x.mean(dim=0, keepdim=True)
    else:
        w = weight.to(x.dtype).unsqueeze(1)
        mean = (w * x).sum(dim=0, keepdim=True) / w.sum().clamp_min(1.0)
        c = (x - mean) * w
    norm = torch.linalg.vector_norm(c, dim=1, keepdim=True)
    if detach_norm:
        norm = norm.detach()
    return c / (norm + eps)


def orthogonality_loss(a: Tensor, b: Tensor, *, detach_norm: bool = True, eps: float = 1e-6,
                       weight: Tensor | None = None) -> Tensor:
    """``mean((ÂᵀB̂)²)`` over the ``d1 × d2`` entries; see the module docstring.

    With ``weight`` (0/1 rows, (N,)) the loss equals the unweighted loss of the selected rows, and
    it is 0 when fewer than two rows are selected.
    """
    ah = normalise_rows(_upcast(a), weight, detach_norm, eps)
    bh = normalise_rows(_upcast(b), weight, detach_norm, eps)
    loss = (ah.transpose(0, 1) @ bh).pow(2).mean()
    if weight is not None:
        loss = torch.where(weight.sum() >= 2, loss, torch.zeros_like(loss))
    return loss.to(a.dtype)
