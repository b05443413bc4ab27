"""Pure-PyTorch reference of :func:`fsrf.ops.decorrelation_loss` (Barlow-Twins off-diagonal).

``Zs = (z − mean) / sqrt(var + eps)`` with the biased variance over the batch,
``C = Zsᵀ Zs / N`` and ``loss = Σ_{i≠j} C_ij² / (d(d−1))``. With a single column there is no
off-diagonal entry and the loss is defined as 0 (with zero gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["decorrelation_loss", "correlation"]

_LOW = (torch.float16, torch.bfloat16)


def correlation(z: Tensor, weight: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """``C = Zsᵀ Zs / n`` of the batch-standardised columns of ``z`` (over the rows with weight 1)."""
    if weight is None:
        n = z.new_tensor(float(z.shape[0]))
        c = z - z.mean(dim=0, keepdim=True)
    else:
        w = weight.to(z.dtype).unsqueeze(1)
        n = w.sum().clamp_min(1.0)
        c = (z - (w * z).sum(dim=0, keepdim=True) / n) * w
    var = c.pow(2).sum(dim=0, keepdim=True) / n
    zs = c / torch.sqrt(var + eps)
    return zs.transpose(0, 1) @ zs / n


def decorrelation_loss(z: Tensor, *, eps: float = 1e-5, weight: Tensor | None = None) -> Tensor:
    """``Σ_{i≠j} C_ij² / (d(d−1))``; see the module docstring. 0 for ``d = 1``.

    With ``weight`` (0/1 rows, (N,)) the loss equals the unweighted loss of the selected rows, and
    it is 0 when fewer than two rows are selected.
    """
    x = z.float() if z.dtype in _LOW else z
    d = x.shape[1]
    if d < 2:
        # no off-diagonal pair: an empty sum; multiply to keep the graph (zero gradient)
        return (x.sum() * 0.0).to(z.dtype)
    cm = correlation(x, weight, eps)
    off = cm - torch.diag_embed(torch.diagonal(cm))
    loss = off.pow(2).sum() / (d * (d - 1))
    if weight is not None:
        loss = torch.where(weight.sum() >= 2, loss, torch.zeros_like(loss))
    return loss.to(z.dtype)
