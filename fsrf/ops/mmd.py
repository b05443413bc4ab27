"""Squared maximum mean discrepancy with a multi-bandwidth Gaussian kernel.

``fsrf.ops.mmd`` is FSRF's homogeneous-alignment and distribution-alignment loss (method §2,
§4). Backends: ``torch`` (:mod:`fsrf.reference.mmd`, row-chunked, never builds the N×M kernel
matrix) and ``triton`` (:mod:`fsrf.kernels.mmd`, tiled forward and backward kernels with O(N+M)
memory), the latter registered as the custom ops ``fsrf::mmd`` and ``fsrf::mmd_backward`` so
``torch.compile`` treats each as one opaque node.

Row masks (``x_mask``, ``y_mask``) select the samples in the op itself, the pooled bandwidth
included, so a caller with per-sample availability needs no boolean indexing (a data-dependent
shape and a graph break under ``torch.compile``) and no host sync.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from fsrf.ops._common import check_flag, check_int, check_positive, check_real
from fsrf.reference import mmd as _ref
from fsrf.runtime import backend as _backend
from fsrf.runtime.checks import check_bool_mask, check_finite, check_same, check_tensor, is_tracing

__all__ = ["mmd"]

OP = "mmd"
IMPLEMENTED = ("torch", "triton")


def _squaring(bandwidths: Optional[Tensor], kernel_mul: float) -> bool:
    # geometric ratio-2 bandwidths let the kernel get all exponentials from one (see kernels/mmd.py)
    return bandwidths is None and kernel_mul == 2.0


# --------------------------------------------------------------------------------------------
# custom ops (Triton backend)
# --------------------------------------------------------------------------------------------

@torch.library.custom_op("fsrf::mmd", mutates_args=())
def _mmd_op(x: Tensor, y: Tensor, bandwidths: Optional[Tensor], num_kernels: int,
            kernel_mul: float, unbiased: bool, x_mask: Optional[Tensor],
            y_mask: Optional[Tensor]) -> Tensor:
    """Tiled MMD² of 2-D ``x``, ``y``; ``bandwidths`` (K,) replaces the σ²-based ones when given;
    ``x_mask`` / ``y_mask`` (bool (N,) / (M,)) select rows."""
    from fsrf.kernels.mmd import mmd_forward

    inv_h, mean = _ref.inverse_bandwidths(x, y, num_kernels, kernel_mul, bandwidths, x_mask, y_mask)
    return mmd_forward(x, y, inv_h, mean, unbiased, _squaring(bandwidths, kernel_mul), x_mask=x_mask,
                       y_mask=y_mask)


@_mmd_op.register_fake
def _mmd_op_fake(x, y, bandwidths, num_kernels, kernel_mul, unbiased, x_mask, y_mask):
    return x.new_empty((), dtype=_ref.compute_dtype(x.dtype))


@torch.library.custom_op("fsrf::mmd_backward", mutates_args=())
def _mmd_backward_op(grad: Tensor, x: Tensor, y: Tensor, bandwidths: Optional[Tensor],
                     num_kernels: int, kernel_mul: float, unbiased: bool, x_mask: Optional[Tensor],
                     y_mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """``(dL/dx, dL/dy)`` of :func:`_mmd_op` for the 0-dim upstream gradient ``grad``.

    The pooled mean and bandwidths are recomputed (O((N+M)·d)) instead of saved.
    """
    from fsrf.kernels.mmd import mmd_backward

    inv_h, mean = _ref.inverse_bandwidths(x, y, num_kernels, kernel_mul, bandwidths, x_mask, y_mask)
    return mmd_backward(grad, x, y, inv_h, mean, unbiased, _squaring(bandwidths, kernel_mul), x_mask=x_mask,
                        y_mask=y_mask)


@_mmd_backward_op.register_fake
def _mmd_backward_op_fake(grad, x, y, bandwidths, num_kernels, kernel_mul, unbiased, x_mask, y_mask):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(y, memory_format=torch.contiguous_format))


def _mmd_setup_context(ctx, inputs, output):
    x, y, bandwidths, num_kernels, kernel_mul, unbiased, x_mask, y_mask = inputs
    ctx.save_for_backward(x, y, bandwidths, x_mask, y_mask)
    ctx.args = (num_kernels, kernel_mul, unbiased)


def _mmd_autograd_backward(ctx, grad):
    x, y, bandwidths, x_mask, y_mask = ctx.saved_tensors
    dx, dy = torch.ops.fsrf.mmd_backward(grad, x, y, bandwidths, *ctx.args, x_mask, y_mask)
    # the bandwidths are detached by definition and the masks are not differentiable
    return dx, dy, None, None, None, None, None, None


_mmd_op.register_autograd(_mmd_autograd_backward, setup_context=_mmd_setup_context)


# --------------------------------------------------------------------------------------------
# public op
# --------------------------------------------------------------------------------------------

def _validate_bandwidths(bandwidths, x: Tensor) -> Optional[Tensor]:
    """Check ``bandwidths`` and turn it into a (K,) tensor of the compute dtype on x's device.

    A Python list/tuple is checked on the host and built on the device by fills (no host→device
    copy, which would synchronise). A tensor is checked for shape/dtype/device; its values
    (finite, > 0) only when the NaN checks are on (one host sync, like :func:`check_finite`).
    """
    if bandwidths is None:
        return None
    acc = _ref.compute_dtype(x.dtype)
    if isinstance(bandwidths, Tensor):
        if not bandwidths.is_floating_point():
            raise TypeError(f"bandwidths must be a floating-point tensor; got dtype {bandwidths.dtype}")
        if bandwidths.dim() != 1 or bandwidths.numel() == 0:
            raise ValueError(f"bandwidths must be a non-empty 1-D tensor of squared bandwidths; got "
                             f"shape {tuple(bandwidths.shape)}")
        if bandwidths.device != x.device:
            raise ValueError(f"bandwidths is on {bandwidths.device} but x is on {x.device}")
        check_finite(bandwidths, "bandwidths")
        if _backend.check_finite_enabled() and not is_tracing() and not bool((bandwidths > 0).all()):
            raise ValueError(f"bandwidths must all be > 0; got {bandwidths.tolist()}")
        return bandwidths.detach().to(acc)
    if not isinstance(bandwidths, (list, tuple)):
        raise TypeError(f"bandwidths must be None, a list/tuple of floats or a 1-D tensor; got "
                        f"{type(bandwidths).__name__}")
    if len(bandwidths) == 0:
        raise ValueError("bandwidths must not be empty; pass None for the σ²-based default")
    values = [check_real(b, "bandwidths[%d]" % i) for i, b in enumerate(bandwidths)]
    for i, b in enumerate(values):
        if not (math.isfinite(b) and b > 0):
            raise ValueError(f"bandwidths[{i}] must be a finite number > 0; got {b}")
    return torch.stack([torch.full((), b, dtype=acc, device=x.device) for b in values])


def _validate(x, y, num_kernels, kernel_mul, unbiased, x_mask, y_mask) -> float:
    for t, name, mask in ((x, "x", x_mask), (y, "y", y_mask)):
        check_tensor(t, name, ndim=2, floating=True)
        # with a mask, fewer than 2 *selected* rows is a defined case (MMD² = 0)
        least = 1 if mask is not None else 2
        if t.shape[0] < least:
            raise ValueError(f"{name} must have at least {least} rows (samples)"
                             f"{'' if mask is None else ' (with ' + name + '_mask)'}; got shape {tuple(t.shape)}")
        if t.shape[1] < 1:
            raise ValueError(f"{name} must have at least 1 feature column; got shape {tuple(t.shape)}")
    if y.shape[1] != x.shape[1]:
        raise ValueError(f"y must have the feature dim d = {x.shape[1]} of x; got shape {tuple(y.shape)}")
    check_same({"x": x, "y": y})
    if x_mask is not None:
        check_bool_mask(x_mask, "x_mask", (x.shape[0],), x.device)
    if y_mask is not None:
        check_bool_mask(y_mask, "y_mask", (y.shape[0],), x.device)
    check_int(num_kernels, "num_kernels")
    kernel_mul = check_positive(kernel_mul, "kernel_mul")
    check_flag(unbiased, "unbiased")
    for t, name, mask in ((x, "x", x_mask), (y, "y", y_mask)):
        # only the selected rows take part, so only they must be finite
        check_finite(t if mask is None or not _backend.check_finite_enabled() or is_tracing()
                     else torch.where(mask[:, None], t, torch.zeros((), dtype=t.dtype, device=t.device)), name)
    return kernel_mul


def mmd(x: Tensor, y: Tensor, *, num_kernels: int = 5, kernel_mul: float = 2.0,
        bandwidths: Sequence[float] | Tensor | None = None, unbiased: bool = False,
        x_mask: Tensor | None = None, y_mask: Tensor | None = None, backend: str = "auto") -> Tensor:
    """Squared MMD between the samples ``x`` (N, d) and ``y`` (M, d), Gaussian multi-kernel.

    ``K(a, b) = Σ_k exp(−‖a − b‖² / h_k)`` with ``h_k = σ² · kernel_mul^(k − num_kernels // 2)``,
    where ``σ²`` is the mean squared distance between distinct points of the pooled sample
    ``[x; y]`` (closed form, O((N+M)·d), computed on centred data; detached; clamped to
    ``≥ max(1e-30, ε·mean‖u_i‖²)`` so identical points give 0 and zero gradients, not NaN or
    amplified rounding noise; see :mod:`fsrf.reference.mmd`). The estimate is
    ``mean K_xx + mean K_yy − 2 mean K_xy``; ``unbiased=True`` leaves the diagonals of
    ``K_xx`` and ``K_yy`` out (means over N(N−1) and M(M−1)) and can be negative.
    Neither backend materialises an N×M matrix: the torch one works on row chunks within a
    memory budget (small problems in one block), the triton one on tiles.

    Row masks: with ``x_mask`` and/or ``y_mask`` the MMD² is that of the selected rows, as if
    ``x[x_mask]`` and ``y[y_mask]`` had been passed, the pooled mean and σ² included; the other
    rows contribute nothing, get zero gradient and may hold any value (they are not checked for
    NaN/Inf either). Fewer than 2 selected rows on either side gives 0 with zero gradient. No
    host sync and no data-dependent shape: the op stays one node under ``torch.compile``.

    Args:
        x, y: 2-D floating tensors with the same d, dtype and device; N, M ≥ 2 (≥ 1 with a mask),
            N ≠ M allowed.
        num_kernels: number of bandwidths K ≥ 1 (the default 5 gives exponents −2..2).
        kernel_mul: ratio > 0 between consecutive bandwidths.
        bandwidths: explicit squared bandwidths ``h_k`` (all > 0) replacing the σ² rule, as a
            list/tuple of floats or a 1-D tensor on x's device (``num_kernels`` and
            ``kernel_mul`` are then ignored); no gradient flows into a tensor given here.
        unbiased: the unbiased U-statistic instead of the biased V-statistic.
        x_mask, y_mask: optional bool (N,) / (M,) tensors on x's device, True = the row is in
            the sample.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see :mod:`fsrf.runtime.backend`).

    Returns:
        A 0-dim tensor: float32 for float16 / bfloat16 / float32 inputs (fp32 accumulation),
        float64 for float64 inputs. Gradients come back in the inputs' dtype.

    Raises:
        TypeError: non-tensor / non-floating inputs, mismatched dtypes, non-bool masks, a non-int
            ``num_kernels``, non-real ``kernel_mul`` or bandwidth values, non-bool ``unbiased``.
        ValueError: not 2-D, fewer than 2 rows (1 with a mask), mismatched d or devices, masks
            of the wrong shape or device, ``num_kernels < 1``,
            ``kernel_mul <= 0``, empty or non-positive bandwidths, NaN/Inf in the inputs (see
            :func:`fsrf.set_check_finite`), an unavailable backend.
    """
    kernel_mul = _validate(x, y, num_kernels, kernel_mul, unbiased, x_mask, y_mask)
    bw = _validate_bandwidths(bandwidths, x)
    be = _backend.resolve(OP, backend, x.device, IMPLEMENTED)
    if be == "triton":
        return torch.ops.fsrf.mmd(x, y, bw, int(num_kernels), kernel_mul, unbiased, x_mask, y_mask)
    return _ref.mmd(x, y, num_kernels=int(num_kernels), kernel_mul=kernel_mul, bandwidths=bw,
                    unbiased=unbiased, x_mask=x_mask, y_mask=y_mask)
