"""``decorrelation_loss``: Barlow-Twins-style off-diagonal correlation penalty, fused on GPU.

``Zs = (z − mean) / sqrt(var + eps)`` with the biased variance over the batch, ``C = Zsᵀ Zs / N``
and the loss ``Σ_{i≠j} C_ij² / (d(d−1))``: 0 for exactly decorrelated columns, at most
``(var/(var + eps))² ≈ 1`` (all columns identical up to scale and sign).

``d = 1`` has no off-diagonal entry: the loss is defined as 0 (the empty sum), with zero
gradient, on every backend — a factor of width 1 is then simply unconstrained.

Backends: ``torch`` (:mod:`fsrf.reference.decorrelation`) and ``triton``
(:mod:`fsrf.kernels.decorrelation`, custom op ``fsrf::decorrelation_loss``).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from fsrf import _checks
from fsrf.ops.orthogonality import _check_eps, _pick_backend
from fsrf.reference import decorrelation as _ref

__all__ = ["decorrelation_loss"]


@torch.library.custom_op("fsrf::decorrelation_loss", mutates_args=())
def _decor_op(z: Tensor, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Returns (loss, correlation matrix C fp32, stats fp32); the last two feed the backward."""
    from fsrf.kernels import decorrelation as _k

    return _k.forward(z, eps)


@_decor_op.register_fake
def _(z, eps):
    from fsrf.kernels._gram import sizes

    n, d = z.shape
    m_size, st_size = sizes((d,), [(1, 0, 0)], n)
    return (z.new_empty(()), z.new_empty((m_size,), dtype=torch.float32),
            z.new_empty((st_size,), dtype=torch.float32))


@torch.library.custom_op("fsrf::decorrelation_loss_backward", mutates_args=())
def _decor_bwd_op(grad: Tensor, z: Tensor, m: Tensor, stats: Tensor) -> Tensor:
    """Gradient w.r.t. ``z``."""
    from fsrf.kernels import decorrelation as _k

    return _k.backward(grad, z, m, stats)


@_decor_bwd_op.register_fake
def _(grad, z, m, stats):
    return torch.empty_like(z, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    z, _eps = inputs
    _, m, stats = output
    ctx.save_for_backward(z, m, stats)


def _backward(ctx, grad, _g_m, _g_stats):
    z, m, stats = ctx.saved_tensors
    return _decor_bwd_op(grad, z, m, stats), None


_decor_op.register_autograd(_backward, setup_context=_setup)


def decorrelation_loss(z: Tensor, *, eps: float = 1e-5, backend: str = "auto") -> Tensor:
    """Off-diagonal correlation penalty of the columns of ``z`` (N, d); a 0-dim tensor.

    Args:
        z: factor matrix, ``N ≥ 2`` rows, floating dtype (float16, bfloat16, float32, float64).
        eps: added to the per-column variance before the square root (> 0).
        backend: ``"auto"`` | ``"torch"`` | ``"triton"`` (see :mod:`fsrf.backend`).

    Returns:
        ``Σ_{i≠j} C_ij² / (d(d−1))`` in the dtype of ``z`` (fp32 accumulation); 0 when ``d = 1``.
    """
    _checks.check_tensor(z, "z", ndim=2, min_size={0: 2, 1: 1})
    eps = _check_eps(eps, "eps")
    _checks.check_finite(z, "z")
    chosen = _pick_backend("decorrelation_loss", backend, z, "z")
    if chosen == "triton":
        return _decor_op(z, eps)[0]
    return _ref.decorrelation_loss(z, eps=eps)
