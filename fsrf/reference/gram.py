"""Batched normalised-Gram terms: the torch form of orthogonality and decorrelation, many at once.

``orthogonality_loss``, ``decorrelation_loss`` and ``factor_constraints`` all reduce to *terms* on
stacks of factors of one width: ``T`` terms of ``(N, d)`` matrices are computed by the same dozen
batched tensor ops whatever ``T`` is, and differentiated analytically. FSRF's 21 grouped terms on
64 × 128 factors are thus ~30 small kernels forward and backward instead of ~10 autograd nodes
per term, which on a CPU is what their cost is made of.

Per term, with 0/1 row weights ``w`` (all ones without a mask) and ``n = Σ w``:

* centring ``c = w ∘ (x − μ)``, ``μ = Σ w x / max(n, 1)`` (rows outside the mask are 0);
* orthogonality (MISA's DiffLoss): ``X̂ = c_x / (‖c_x‖_row + eps)`` and the same for ``y``,
  ``M = X̂ᵀ Ŷ``, ``L = Σ M² / (d_x d_y)``;
* decorrelation (Barlow-Twins off-diagonal): ``σ_j² = Σ_i c_ij² / max(n, 1) + eps``,
  ``Ẑ = c / σ``, ``C = ẐᵀẐ / max(n, 1)``, ``L = Σ_{j≠k} C_jk² / (d(d−1))`` (0 for d = 1);
* a term over fewer than two rows is 0 with zero gradient.

Backward (``U = ∂L/∂X̂``, ``s = 1/(r + eps)``, ``r = ‖c‖_row``): orthogonality
``∂L/∂c = s (U − [not detach_norm] t c / r)`` with ``t = s ⟨U, c⟩`` (the row-norm path, dropped
when the norm is detached); decorrelation ``∂L/∂c = (U − Ẑ q / n) / σ`` with ``U = 2 Ẑ G / n``,
``G = ∂L/∂C``, ``q_j = Σ_i U_ij Ẑ_ij``; then the centring ``∂L/∂x = w ∘ (g − Σ_i g_i / n)``.
These are the formulas of the Triton kernels (:mod:`fsrf.kernels._gram`); the tests check both
against float64 autograd of the definitions.

Computed in float32 for float16 / bfloat16 / float32 inputs and float64 for float64; the losses
come back in that dtype (callers cast). First-order gradients only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsrf.reference._amp import full_precision

__all__ = ["orthogonality_terms", "decorrelation_terms", "compute_dtype"]

_LOW = (torch.float16, torch.bfloat16)

#: Up to this many entries per side, the two sides of an orthogonality term are stacked.
STACK_ENTRIES = 1 << 18


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16 / bfloat16 are computed in float32, float32 and float64 as they are."""
    return torch.float32 if dtype in _LOW else dtype


# The functions below take stacks (T, N, d) or, for a single term, plain (N, d) matrices (2-D
# products are cheaper than batch-1 ones): rows are dim -2, columns dim -1.

def _centre(x: Tensor, w: Tensor | None):
    """(c, n): centred rows (zero outside the weights) and the mean's denominator."""
    if w is None:
        return x - x.mean(-2, keepdim=True), float(x.shape[-2])
    n = w.sum(-2, keepdim=True).clamp_min(1.0)
    return (x - (w * x).sum(-2, keepdim=True) / n) * w, n


def _uncentre(g: Tensor, w: Tensor | None, n) -> Tensor:
    """The gradient w.r.t. x from the gradient ``g`` w.r.t. the centred rows."""
    if w is None:
        return g - g.mean(-2, keepdim=True)
    return w * (g - g.sum(-2, keepdim=True) / n)


def _validity(w: Tensor | None, rows: int, like: Tensor):
    """1 where a term has at least two rows, else 0: a float, or a (T, 1, 1) tensor with masks."""
    if w is None:
        return 1.0 if rows >= 2 else 0.0
    return (w.sum(-2, keepdim=True) >= 2).to(like.dtype)


def _denominator(w: Tensor | None, x: Tensor):
    return float(x.shape[-2]) if w is None else w.sum(-2, keepdim=True).clamp_min(1.0)


def _orth_scale(w: Tensor | None, a: Tensor, b: Tensor):
    return _validity(w, a.shape[-2], a) / (a.shape[-1] * b.shape[-1])


def _decor_scale(w: Tensor | None, z: Tensor):
    d = z.shape[-1]
    return _validity(w, z.shape[-2], z) / (d * (d - 1)) if d > 1 else 0.0


def _row_space(n: int, da: int, db: int) -> bool:
    """Whether the products are cheaper in row space. ``‖X̂ᵀŶ‖² = Σ (X̂X̂ᵀ) ∘ (ŶŶᵀ)``: two N×N
    Grams and two N×N-by-N×d products for the backward (2N²(d_a + d_b) multiply-adds) against one
    d_a×d_b Gram and two products (3 N d_a d_b); at FSRF's N = 64, d = 128 row space needs 2/3."""
    return 2 * n * (da + db) < 3 * da * db


class _Orth(torch.autograd.Function):
    @staticmethod
    @full_precision
    def forward(ctx, a: Tensor, b: Tensor, w: Tensor | None, detach_norm: bool, eps: float) -> Tensor:
        ca, _ = _centre(a, w)
        cb, _ = _centre(b, w)
        ra = torch.linalg.vector_norm(ca, dim=-1, keepdim=True)
        rb = torch.linalg.vector_norm(cb, dim=-1, keepdim=True)
        da, db = ra + eps, rb + eps  # X̂ = c / (‖c‖ + eps): s = 1 / da
        ah, bh = ca / da, cb / db
        rows = _row_space(a.shape[-2], a.shape[-1], b.shape[-1])
        if rows:
            ka, kb = ah @ ah.mT, bh @ bh.mT
            saved = (ka, kb)
        else:
            ka = kb = ah.mT @ bh
            saved = (ka, ka)
        if ka.dim() == 2:
            total = torch.dot(ka.reshape(-1), kb.reshape(-1)).reshape(1, 1)
        else:
            total = (ka * kb).sum((-2, -1), keepdim=True)
        # the row-norm path of the backward is taken only when the norm is not detached
        path = () if detach_norm else (ca, cb, ra, rb)
        ctx.save_for_backward(ah, bh, *saved, da, db, w, *path)
        ctx.detach_norm, ctx.rows = detach_norm, rows
        return (total * _orth_scale(w, a, b)).squeeze(-1).squeeze(-1)

    @staticmethod
    @full_precision
    def backward(ctx, grad: Tensor):
        ah, bh, p, q, da, db, w, *path = ctx.saved_tensors
        # sizes and scales from the saved weights (tensors stay out of ctx attributes, which
        # torch.compile traces less well)
        n = _denominator(w, ah)
        coef = grad.reshape(grad.shape + (1, 1)) * (2.0 * _orth_scale(w, ah, bh))
        if ctx.rows:  # p = X̂X̂ᵀ, q = ŶŶᵀ: ∂L/∂X̂ = 2κ ŶŶᵀ X̂
            ua, ub = q @ ah, p @ bh
        else:  # p = q = M = X̂ᵀŶ: ∂L/∂X̂ = 2κ Ŷ Mᵀ
            ua, ub = bh @ p.mT, ah @ p
        # U = 2κ·ua; ∂L/∂c = s U with s = 1/(‖c‖ + eps), the scalings folded into one factor
        sa, sb = coef / da, coef / db
        ga, gb = ua * sa, ub * sb
        if not ctx.detach_norm:
            ua, ub = ua * coef, ub * coef
            sa, sb = 1.0 / da, 1.0 / db
            ca, cb, ra, rb = path
            for g, u, c, s, r in ((ga, ua, ca, sa, ra), (gb, ub, cb, sb, rb)):
                # d‖c‖/dc = c/‖c‖, taken as 0 for an all-zero centred row (as torch's norm backward)
                inv_r = torch.where(r > 0, 1.0 / torch.where(r > 0, r, 1.0), 0.0)
                g -= s * (s * (u * c).sum(-1, keepdim=True)) * c * inv_r
        return _uncentre(ga, w, n), _uncentre(gb, w, n), None, None, None


class _OrthSame(torch.autograd.Function):
    """:class:`_Orth` for two sides of the same shape, stacked as one (2, …, N, d) tensor: every
    step is one op for both sides (half the calls, which is what small terms cost)."""

    @staticmethod
    @full_precision
    def forward(ctx, a: Tensor, b: Tensor, w: Tensor | None, detach_norm: bool, eps: float) -> Tensor:
        c, _ = _centre(torch.stack((a, b)), w)
        r = torch.linalg.vector_norm(c, dim=-1, keepdim=True)
        den = r + eps  # X̂ = c / (‖c‖ + eps)
        h = c / den
        rows = _row_space(a.shape[-2], a.shape[-1], b.shape[-1])
        k = h @ h.mT if rows else h[0].mT @ h[1]  # (X̂X̂ᵀ, ŶŶᵀ) stacked, or M = X̂ᵀŶ
        ka, kb = (k[0], k[1]) if rows else (k, k)
        if ka.dim() == 2:
            total = torch.dot(ka.reshape(-1), kb.reshape(-1)).reshape(1, 1)
        else:
            total = (ka * kb).sum((-2, -1), keepdim=True)
        path = () if detach_norm else (c, r)
        ctx.save_for_backward(h, k, den, w, *path)
        ctx.detach_norm, ctx.rows = detach_norm, rows
        return (total * _orth_scale(w, a, b)).squeeze(-1).squeeze(-1)

    @staticmethod
    @full_precision
    def backward(ctx, grad: Tensor):
        h, k, den, w, *path = ctx.saved_tensors
        n = _denominator(w, h[0])
        coef = grad.reshape(grad.shape + (1, 1)) * (2.0 * _orth_scale(w, h[0], h[1]))
        if ctx.rows:  # ∂L/∂X̂ = 2κ ŶŶᵀ X̂ and ∂L/∂Ŷ = 2κ X̂X̂ᵀ Ŷ: the Grams swapped, one product
            u = k.flip(0) @ h
        else:  # ∂L/∂X̂ = 2κ Ŷ Mᵀ, ∂L/∂Ŷ = 2κ X̂ M
            u = torch.stack((h[1] @ k.mT, h[0] @ k))
        g = u * (coef / den)
        if not ctx.detach_norm:
            c, r = path
            inv_r = torch.where(r > 0, 1.0 / torch.where(r > 0, r, 1.0), 0.0)
            g -= (1.0 / den) * ((g * c).sum(-1, keepdim=True) * c * inv_r)
        gx = _uncentre(g, w, n)
        return gx[0], gx[1], None, None, None


class _Decor(torch.autograd.Function):
    @staticmethod
    @full_precision
    def forward(ctx, z: Tensor, w: Tensor | None, eps: float) -> Tensor:
        c, n = _centre(z, w)
        sig = (c.square().sum(-2, keepdim=True) / n + eps).sqrt_()
        zh = c / sig
        # diag C_jj = Σ_i Ẑ_ij² / n, and Σ_jk C_jk² = ‖ẐẐᵀ‖² / n² in row space when N < d
        diag = zh.square().sum(-2, keepdim=True) / n
        rows = z.shape[-2] < z.shape[-1]
        gram = zh @ zh.mT if rows else zh.mT @ zh
        total = gram.square().sum((-2, -1), keepdim=True) / (n * n)
        off = total - diag.square().sum(-1, keepdim=True)
        ctx.save_for_backward(zh, gram, diag, sig, w)
        ctx.rows = rows
        return (off * _decor_scale(w, z)).squeeze(-1).squeeze(-1)

    @staticmethod
    @full_precision
    def backward(ctx, grad: Tensor):
        zh, gram, diag, sig, w = ctx.saved_tensors
        n = _denominator(w, zh)
        kappa = grad.reshape(grad.shape + (1, 1)) * (4.0 * _decor_scale(w, zh))
        # U = ∂L/∂Ẑ = 4κ (Ẑ (C − diag C)) / n, with ẐC = ẐẐᵀẐ / n
        zc = gram @ zh if ctx.rows else zh @ gram
        u = (zc / (n * n) - zh * (diag / n)) * kappa
        q = (u * zh).sum(-2, keepdim=True)
        gz = (u - zh * (q / n)) / sig
        return _uncentre(gz, w, n), None, None


def _prepare(x: Tensor) -> Tensor:
    acc = compute_dtype(x.dtype)
    return x if x.dtype == acc else x.to(acc)


def orthogonality_terms(a: Tensor, b: Tensor, weight: Tensor | None = None, *, detach_norm: bool = True,
                        eps: float = 1e-6) -> Tensor:
    """Orthogonality losses of the stacked pairs ``a`` (T, N, d_a), ``b`` (T, N, d_b), shape (T,),
    or of one pair of (N, d) matrices, shape (); ``weight`` (T, N) / (N,) 0/1 rows (None: every
    row). In the compute dtype."""
    a, b = _prepare(a), _prepare(b)
    w = None if weight is None else weight.to(a.dtype).unsqueeze(-1)
    # the stacked form halves the calls, which is what small terms cost; for large ones it would
    # only add a stacked copy
    fn = _OrthSame if a.shape == b.shape and a.numel() <= STACK_ENTRIES else _Orth
    return fn.apply(a, b, w, detach_norm, float(eps))


def decorrelation_terms(z: Tensor, weight: Tensor | None = None, *, eps: float = 1e-5) -> Tensor:
    """Decorrelation losses of the stacked factors ``z`` (T, N, d), shape (T,), or of one (N, d)
    matrix, shape (); ``weight`` (T, N) / (N,) 0/1 rows (None: every row). In the compute dtype."""
    z = _prepare(z)
    w = None if weight is None else weight.to(z.dtype).unsqueeze(-1)
    return _Decor.apply(z, w, float(eps))
