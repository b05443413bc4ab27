"""Triton backend of :func:`fsrf.ops.orthogonality_loss` (MISA's DiffLoss).

A single orthogonality term of the grouped normalised-Gram kernels in :mod:`fsrf.kernels._gram`
(column means and row norms in the kernel prologue, centring and row scaling applied while the
``AᵀB`` tiles are loaded, fp32 Gram kept for the backward).
"""

from __future__ import annotations

import torch

from fsrf.kernels import _gram

__all__ = ["forward", "backward"]

_TERMS = _gram.term_list([(0, 1)], [])


def forward(a: torch.Tensor, b: torch.Tensor, eps: float):
    """Loss (0-dim, input dtype) plus (packed, M, stats) for the backward."""
    packed = torch.cat([a, b], dim=1).contiguous()
    pl = _gram.plan((a.shape[1], b.shape[1]), _TERMS, a.shape[0], a.device)
    loss, m, stats = _gram.forward(packed, None, pl, eps, 0.0)
    return loss.reshape(()).to(a.dtype), packed, m, stats


def backward(grad: torch.Tensor, packed: torch.Tensor, m: torch.Tensor, stats: torch.Tensor, d1: int,
             detach_norm: bool, eps: float) -> torch.Tensor:
    """Gradient w.r.t. ``cat([a, b], 1)``, (N, d1 + d2) in the input dtype."""
    pl = _gram.plan((d1, packed.shape[1] - d1), _TERMS, packed.shape[0], packed.device)
    return _gram.backward(grad.reshape(1), packed, None, m, stats, pl, detach_norm, eps)
