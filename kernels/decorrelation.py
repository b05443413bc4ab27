"""Triton backend of :func:`fsrf.ops.decorrelation_loss` (Barlow-Twins off-diagonal penalty).

A single decorrelation term of the grouped normalised-Gram kernels in :mod:`fsrf.kernels._gram`
(column means and standard deviations in the kernel prologue, standardisation applied while the
``ZᵀZ`` tiles are loaded, fp32 correlation matrix kept for the backward).
"""

from __future__ import annotations

import torch

from fsrf.kernels import _gram

__all__ = ["forward", "backward"]

_TERMS = _gram.term_list([], [0])


def _rows_contiguous(z: torch.Tensor) -> torch.Tensor:
    # the kernels need unit column stride; any row stride is fine, so no copy in the common case
    return z if z.stride(1) == 1 else z.contiguous()


def forward(z: torch.Tensor, eps: float):
    """Loss (0-dim, input dtype) plus (M, stats) for the backward."""
    x = _rows_contiguous(z)
    pl = _gram.plan((z.shape[1],), _TERMS, z.shape[0], z.device)
    # orth_eps is unused by a decorrelation term; any positive value keeps dead lanes finite
    loss, m, stats = _gram.forward(x, None, pl, 1.0, eps)
    return loss.reshape(()).to(z.dtype), m, stats


def backward(grad: torch.Tensor, z: torch.Tensor, m: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. ``z`` in its dtype."""
    x = _rows_contiguous(z)
    pl = _gram.plan((z.shape[1],), _TERMS, z.shape[0], z.device)
    return _gram.backward(grad.reshape(1), x, None, m, stats, pl, True, 1.0)
