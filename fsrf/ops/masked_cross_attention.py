"""Masked cross-modal attention: ``softmax(q kᵀ · scale, observed keys only) v``.

One modality's tokens (queries) attend to another's (keys/values) when some key tokens — or a
whole modality — are missing. Missing keys are given by a boolean ``key_mask`` (True = observed,
the convention of :func:`torch.nn.functional.scaled_dot_product_attention`'s boolean mask).

Backends:

* ``"cpp"``  — fused C++ CPU kernel in ``fsrf._C`` (online softmax over key tiles, memory linear
  in the sequence lengths, masked keys skipped, backward recomputed from the log-sum-exp);
* ``"cuda"`` — fused CUDA kernel in ``fsrf._C`` for CUDA tensors;
* ``"torch"`` — the pure-PyTorch reference :mod:`fsrf.reference.masked_cross_attention`.

Both compiled backends run through the dispatcher ops ``torch.ops.fsrf.masked_cross_attention_fwd``
and ``..._bwd`` (schemas in ``csrc/masked_cross_attention.cpp``); this module registers their
fake (meta) kernels for ``torch.compile`` and the autograd formula of the forward op.
"""

from __future__ import annotations

import math

import torch

from fsrf.reference.masked_cross_attention import masked_cross_attention as _reference
from fsrf.runtime import backend as _backend
from fsrf.runtime import extension as _extension
from fsrf.runtime.checks import check_bool_mask, check_finite, check_same, check_tensor

__all__ = ["masked_cross_attention"]

OP = "masked_cross_attention"
IMPLEMENTED = ("torch", "cpp", "cuda")
_CUDA_MAX_HEAD_DIM = 128


def masked_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           key_mask: torch.Tensor | None = None, *, scale: float | None = None,
                           backend: str = "auto") -> torch.Tensor:
    """Attention of queries ``q`` over the observed keys of ``k``/``v``.

    Args:
        q: ``(B, H, Tq, Dh)`` queries (float16, bfloat16, float32 or float64).
        k: ``(B, H, Tk, Dh)`` keys, same dtype and device as ``q``; ``Tk >= 1``, ``Dh >= 1``.
        v: ``(B, H, Tk, Dh)`` values, same shape as ``k``.
        key_mask: optional bool ``(B, Tk)``, True where the key is observed; ``None`` = all keys.
        scale: score scale (any finite float), default ``Dh ** -0.5``.
        backend: ``"auto"`` (fastest available for the device), ``"cpp"``, ``"cuda"`` or ``"torch"``.

    Returns:
        ``(B, H, Tq, Dh)`` in the dtype of ``q`` (contiguous on the compiled backends).
        Queries of a sample whose keys are all masked get output 0 and gradient 0 — never NaN
        (FlashAttention's convention). ``Tq = 0`` returns an empty tensor.

    Differentiable in ``q``, ``k``, ``v`` (first order). float16/bfloat16 inputs are accumulated
    in float32. Raises ``TypeError``/``ValueError`` naming the offending argument on bad input.
    """
    check_tensor(q, "q", ndim=4)
    check_tensor(k, "k", ndim=4)
    check_tensor(v, "v", ndim=4)
    check_same({"q": q, "k": k, "v": v})
    B, H, Tq, Dh = q.shape
    if k.shape[0] != B or k.shape[1] != H or k.shape[3] != Dh:
        raise ValueError(f"k must have shape (B, H, Tk, Dh) = ({B}, {H}, Tk, {Dh}) to match q {tuple(q.shape)}; "
                         f"got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v must have the shape of k {tuple(k.shape)}; got {tuple(v.shape)}")
    if Dh == 0:
        raise ValueError(f"q, k, v must have a head dimension Dh >= 1; got q shape {tuple(q.shape)}")
    Tk = k.shape[2]
    if Tk == 0:
        raise ValueError(f"k must have at least one key (Tk >= 1); got shape {tuple(k.shape)}. "
                         "Mask keys out with key_mask instead of passing none")
    if key_mask is not None:
        check_bool_mask(key_mask, "key_mask", (B, Tk), q.device)
    if scale is None:
        scale = Dh ** -0.5
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None; got {type(scale).__name__}")
    elif not math.isfinite(scale):
        raise ValueError(f"scale must be finite; got {scale}")
    scale = float(scale)
    check_finite(q, "q")
    check_finite(k, "k")
    check_finite(v, "v")

    chosen = _backend.resolve(OP, backend, q.device, IMPLEMENTED)
    if chosen == "cuda" and Dh > _CUDA_MAX_HEAD_DIM:
        if backend == "cuda":
            raise ValueError(f"backend 'cuda' supports head dims up to {_CUDA_MAX_HEAD_DIM}; got Dh = {Dh} "
                             f"(use backend='torch' or 'auto')")
        chosen = "torch"  # auto: the CUDA kernels keep one head row in registers up to 128
    if chosen == "torch":
        return _reference(q, k, v, key_mask, scale)
    out, _ = torch.ops.fsrf.masked_cross_attention_fwd(q, k, v, key_mask, scale)
    return out


# ------------------------------------------------------------------------------------------------
# Registration of the compiled ops with torch.library (fake kernels + autograd).
# ------------------------------------------------------------------------------------------------

def _fwd_fake(q, k, v, key_mask, scale):
    # The kernels return contiguous tensors whatever the input strides.
    out = q.new_empty(q.shape)
    lse = q.new_empty(q.shape[:3], dtype=torch.float32)
    return out, lse


def _bwd_fake(grad_out, q, k, v, key_mask, out, lse, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, key_mask, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, key_mask, out, lse)
    ctx.scale = scale
    # lse is an auxiliary output for the backward, not a differentiable result.
    ctx.mark_non_differentiable(lse)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, key_mask, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.fsrf.masked_cross_attention_bwd(grad_out, q, k, v, key_mask, out, lse, ctx.scale)
    return dq, dk, dv, None, None


def _register() -> bool:
    """Attach fake kernels and autograd to the compiled ops; False when fsrf._C is not loaded."""
    if _extension.extension() is None:
        return False
    torch.library.register_fake("fsrf::masked_cross_attention_fwd")(_fwd_fake)
    torch.library.register_fake("fsrf::masked_cross_attention_bwd")(_bwd_fake)
    torch.library.register_autograd("fsrf::masked_cross_attention_fwd", _backward, setup_context=_setup_context)
    return True


_REGISTERED = _register()
