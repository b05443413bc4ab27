"""Pure-PyTorch reference of masked cross-modal attention (the ``torch`` backend).

``out[b, h] = softmax(scale · q[b, h] @ k[b, h]ᵀ, keys with key_mask[b] == False removed) @ v[b, h]``.

A sample whose keys are all masked (a whole modality missing) has no key to attend to; its output
rows are 0 and every gradient reaching them is 0 (the FlashAttention convention), never NaN. A
plain ``softmax`` over an all ``-inf`` row is NaN and its backward spreads NaN into ``q`` and
``k``, so such samples are instead given a finite (uniform) score row and their output is
multiplied by 0: the product's backward sends exactly 0 to ``q``, ``k`` and ``v``.
"""

from __future__ import annotations

import torch

__all__ = ["masked_cross_attention", "masked_cross_attention_probs"]


def masked_cross_attention_probs(q: torch.Tensor, k: torch.Tensor, key_mask: torch.Tensor | None,
                                 scale: float, *, upcast: bool = True):
    """Attention weights ``(B, H, Tq, Tk)`` and the per-sample "has a key" factor ``(B, 1, 1, 1)``.

    The weights of a fully masked sample are uniform (finite) and must be multiplied by the
    returned factor (0 for such samples) before use; ``None`` when no mask is given. Computed in
    float32 for float16/bfloat16 inputs when ``upcast`` is true, else in the input dtype.
    """
    if upcast and q.dtype in (torch.float16, torch.bfloat16):
        q, k = q.float(), k.float()
    s = torch.matmul(q, k.transpose(-2, -1)) * scale
    keep = None
    if key_mask is not None:
        has_key = key_mask.any(dim=-1)                                    # (B,)
        # Fully masked samples keep all keys (finite scores) and are zeroed afterwards.
        eff = key_mask | ~has_key[:, None]
        s = s.masked_fill(~eff[:, None, None, :], float("-inf"))
        keep = has_key.to(s.dtype)[:, None, None, None]
    return torch.softmax(s, dim=-1), keep


def masked_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           key_mask: torch.Tensor | None = None, scale: float | None = None, *,
                           upcast: bool = True) -> torch.Tensor:
    """Reference masked attention; shapes as :func:`fsrf.ops.masked_cross_attention`.

    No input validation (the public op does it). ``upcast=False`` computes float16/bfloat16
    inputs in their own dtype; the tests use that as the "plain PyTorch in low precision"
    baseline of the FlashAttention tolerance rule.
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5
    p, keep = masked_cross_attention_probs(q, k, key_mask, scale, upcast=upcast)
    out = torch.matmul(p, v.to(p.dtype))
    if keep is not None:
        # Zeroing the output (Tq x Dh) rather than p (Tq x Tk) is cheaper and gives the same
        # zero gradients: d(out)/d(anything) of a fully masked sample is multiplied by 0.
        out = out * keep
    return out.to(q.dtype)
