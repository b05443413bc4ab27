"""Pure-PyTorch reference of :func:`fsrf.ops.mmd` (also its ``torch`` backend).

Squared maximum mean discrepancy with a multi-bandwidth Gaussian kernel (FSRF method §2, §4)::

    U = [x; y]  (n = N + M rows), centred by its mean ū
    σ² = Σ_{i≠j} ‖u_i − u_j‖² / (n² − n) = 2 Σ_i ‖u_i − ū‖² / (n − 1)       (closed form, O(n·d))
    h_k = σ² · kernel_mul^(k − num_kernels // 2),  k = 0 .. num_kernels − 1  (or h = bandwidths)
    K(a, b) = Σ_k exp(−‖a − b‖² / h_k)
    MMD² = mean K_xx + mean K_yy − 2 mean K_xy          (biased: means over all entries)
         = ... with the diagonals of K_xx, K_yy left out (unbiased: means over N(N−1), M(M−1))

The bandwidths are detached (no gradient flows through σ²), as in the DAN-style implementations.
``Σ_{i,j}‖u_i − u_j‖² = 2n Σ‖u_i‖² − 2‖Σu_i‖²`` cancels catastrophically in float32 when the data
sit far from the origin; centring first gives ``2n Σ‖u_i − ū‖²`` whose terms are all ≥ 0.
σ² is clamped to ``≥ max(1e-30, ε · mean_i ‖u_i‖²)`` (ε: machine epsilon of the compute dtype,
1.2e-7 for float32). Identical points (σ² = 0) then give MMD² = 0 and zero gradients instead of
NaN (0/0). The relative part matters for identical rows that are *not* at the origin: their
centred values are the rounding residue of the mean, σ² is then pure rounding noise, and 1/σ²
would amplify that noise into O(1) gradients. It only binds when the spread of the data is below
about √(ε/2) ≈ 2.4e-4 of its distance from the origin, where fp32 distances are no longer
resolved anyway; the absolute 1e-30 keeps 1/h finite for data at exactly 0.

Row masks: ``x_mask`` (N,) / ``y_mask`` (M,) bool select the rows that take part (True = in the
sample). Everything above, the pooled ū and σ² included, is then over the selected rows only; the
other rows contribute nothing and get zero gradient (they are zeroed before any arithmetic, so
even non-finite values there stay out). The sizes N and M become the selected counts, device
tensors, so that no host sync happens; fewer than 2 selected rows on either side gives MMD² = 0
with zero gradient. Masks are data, not shapes: one traced graph serves every selection.

Small problems (``(N + M)² · _DENSE_TEMPS`` entries within the chunk budget, e.g. n ≤ 1024 in
float32 under the default budget) take a dense path: one GEMM for the pooled distances, the
kernel matrix and its weighted sums written as plain tensor ops (autograd backward). At FSRF's
batch sizes this avoids the per-chunk bookkeeping that dominated the chunked path's cost.

Memory: above that size the N×M kernel matrices are never built. The kernel sums run over row chunks (a block of
rows of one set against all rows of the other; for K_xx and K_yy only the upper triangle), sized
so that the chunk's buffers (allocated once per kernel sum and reused by every chunk) fit
:data:`CHUNK_BUDGET_BYTES`; the backward recomputes each chunk (an autograd.Function with an
analytic gradient), so the peak extra memory is O((N + M)·d) plus the chunk budget. Distances use ‖a‖² + ‖b‖² − 2a·b on the centred data (one
GEMM per chunk), clamped at 0 and exactly 0 on the diagonal. With the default ratio-2 bandwidths
the K exponentials come from one exp by repeated squaring (see ``_exps``).

Computed in float32 for float16 / bfloat16 / float32 inputs, float64 for float64 inputs; the
result is a 0-dim tensor of that dtype. First-order gradients only (no double backward).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from fsrf.reference._amp import full_precision

__all__ = ["mmd", "compute_dtype", "pooled_mean_and_sigma2", "inverse_bandwidths", "chunk_rows",
           "dense_fits", "SIGMA2_FLOOR", "CHUNK_BUDGET_BYTES"]

#: Absolute lower bound on the data-driven base bandwidth σ² (see the module docstring).
SIGMA2_FLOOR = 1e-30

#: Bytes the row-chunked kernel sums may use for their temporaries (per chunk).
CHUNK_BUDGET_BYTES = 64 * 2**20

# Chunk-sized buffers of one kernel sum: squared distances, the running kernel sum (or its
# derivative) and one exp.
_BUFFERS = 3
# What a chunk is budgeted for: those buffers plus one of headroom (the per-chunk products are
# O(chunk·d), and the allocator has slack).
_TEMPS_PER_ENTRY = _BUFFERS + 1
# n×n tensors the dense path keeps alive for its autograd backward (products, distances, the
# squaring chain of exponentials, the kernel matrix), with headroom.
_DENSE_TEMPS = 16


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype MMD is computed in: float64 stays float64, the rest use float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _selected(t: Tensor, mask: Tensor | None, acc: torch.dtype) -> Tensor:
    """``t`` in the compute dtype with the rows outside ``mask`` set to 0 (where, not a product,
    so that a non-finite value in an unselected row cannot leak in as 0·inf)."""
    t = t.to(acc)
    if mask is None:
        return t
    return torch.where(mask[:, None], t, torch.zeros((), dtype=acc, device=t.device))


def pooled_mean_and_sigma2(x: Tensor, y: Tensor, x_mask: Tensor | None = None,
                           y_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean ū of U = [x; y] and the mean pairwise squared distance σ² (i ≠ j), both detached.

    O((N+M)·d), no pairwise pass: Σ_{i,j}‖u_i − u_j‖² = 2n Σ_i ‖u_i − ū‖². σ² is clamped to
    ``max(SIGMA2_FLOOR, ε · mean_i ‖u_i‖²)`` (ε: machine epsilon of the compute dtype); see the
    module docstring. With row masks, over the selected rows only (n their count, a device
    tensor; fewer than 2 selected rows give a finite, meaningless value).
    """
    acc = compute_dtype(x.dtype)
    x, y = x.detach(), y.detach()
    if x_mask is None and y_mask is None:
        n = x.shape[0] + y.shape[0]
        mean = (x.sum(0, dtype=acc) + y.sum(0, dtype=acc)) / n
        ss = (x.to(acc) - mean).square().sum() + (y.to(acc) - mean).square().sum()
        sigma2 = 2.0 * ss / (n - 1)
        second_moment = mean.square().sum() + ss / n  # mean_i ‖u_i‖², without cancellation
    else:
        xs, ys = _selected(x, x_mask, acc), _selected(y, y_mask, acc)
        n = _count(x_mask, x.shape[0], acc, x.device) + _count(y_mask, y.shape[0], acc, x.device)
        mean = (xs.sum(0) + ys.sum(0)) / n.clamp_min(1.0)
        ss = _masked_ss(xs, x_mask, mean) + _masked_ss(ys, y_mask, mean)
        sigma2 = 2.0 * ss / (n - 1.0).clamp_min(1.0)
        second_moment = mean.square().sum() + ss / n.clamp_min(1.0)
    floor = (torch.finfo(acc).eps * second_moment).clamp_min(SIGMA2_FLOOR)
    return mean, torch.maximum(sigma2, floor)


def _count(mask: Tensor | None, rows: int, acc: torch.dtype, device) -> Tensor:
    """Selected rows as a 0-dim tensor of the compute dtype (all of them without a mask)."""
    if mask is None:
        return torch.full((), float(rows), dtype=acc, device=device)
    return mask.sum().to(acc)


def _masked_ss(t: Tensor, mask: Tensor | None, mean: Tensor) -> Tensor:
    """Σ over the selected rows of ‖t_i − ū‖² (``t`` already zero outside the selection)."""
    sq = (t - mean).square().sum(1)
    if mask is None:
        return sq.sum()
    return torch.where(mask, sq, torch.zeros((), dtype=sq.dtype, device=sq.device)).sum()


def inverse_bandwidths(x: Tensor, y: Tensor, num_kernels: int = 5, kernel_mul: float = 2.0,
                       bandwidths: Tensor | Sequence[float] | None = None, x_mask: Tensor | None = None,
                       y_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(1/h_k for each kernel, ū)`` as detached tensors of the compute dtype on x's device.

    With ``bandwidths`` given, ``h`` is that list (``num_kernels`` and ``kernel_mul`` are unused).
    ū and σ² are over the rows the masks select (all rows without masks).
    """
    acc = compute_dtype(x.dtype)
    mean, sigma2 = pooled_mean_and_sigma2(x, y, x_mask, y_mask)
    if bandwidths is None:
        expo = torch.arange(num_kernels, device=x.device, dtype=acc) - (num_kernels // 2)
        h = sigma2 * torch.pow(torch.full_like(expo, float(kernel_mul)), expo)
    elif isinstance(bandwidths, Tensor):
        h = bandwidths.detach().to(device=x.device, dtype=acc)
    else:
        h = torch.tensor([float(b) for b in bandwidths], device=x.device, dtype=acc)
    return 1.0 / h, mean


def dense_fits(n: int, itemsize: int, budget: int | None = None) -> bool:
    """Whether the dense path's n×n temporaries (n = N + M) fit ``budget`` bytes."""
    budget = CHUNK_BUDGET_BYTES if budget is None else budget
    return n * n * itemsize * _DENSE_TEMPS <= budget


def chunk_rows(rows: int, cols: int, itemsize: int, budget: int | None = None) -> int:
    """Rows per chunk so that ``_TEMPS_PER_ENTRY`` chunk×cols temporaries fit ``budget`` bytes."""
    budget = CHUNK_BUDGET_BYTES if budget is None else budget
    per_row = _TEMPS_PER_ENTRY * itemsize * max(cols, 1)
    return int(max(1, min(rows, budget // per_row)))


def _sq_dists(a: Tensor, a_sq: Tensor, b: Tensor, b_sq: Tensor, out: Tensor) -> Tensor:
    """‖a_i − b_j‖² of a row chunk ``a`` against the rows of ``b`` into ``out``, clamped at 0."""
    torch.mm(a, b.T, out=out)
    return out.mul_(-2.0).add_(a_sq[:, None]).add_(b_sq[None, :]).clamp_min_(0.0)


def _exps(d2: Tensor, inv_h: Tensor, squaring: bool, out: Tensor):
    """Yield ``(exp(−d²·ih_k), ih_k)`` for every bandwidth, each written into ``out``.

    With ``squaring`` the bandwidths double from one to the next (ih_k = 2·ih_{k+1}, the
    default ``kernel_mul = 2``), so ``exp(−d²·ih_k) = exp(−d²·ih_{k+1})²``: one exp and K − 1
    squarings instead of K exps, ~3x faster on CPU. Relative error grows ~2^k·ε, negligible.
    """
    ihs = inv_h.unbind(0)
    if squaring:
        e = torch.mul(d2, -ihs[-1], out=out).exp_()
        yield e, ihs[-1]
        for ih in reversed(ihs[:-1]):
            yield e.square_(), ih
    else:
        for ih in ihs:
            yield torch.mul(d2, -ih, out=out).exp_(), ih


class _Workspace:
    """The flat buffers that every chunk of one kernel sum reuses (as contiguous views of its
    shape), so the chunk temporaries are allocated once: a fixed peak, no allocator
    fragmentation from the shrinking triangle chunks, no page faults per chunk."""

    def __init__(self, like: Tensor, rows: int, cols: int):
        self.bufs = [like.new_empty(rows * cols) for _ in range(_BUFFERS)]

    def get(self, i: int, rows: int, cols: int) -> Tensor:
        return self.bufs[i][: rows * cols].view(rows, cols)


class _KernelSum(torch.autograd.Function):
    """S = Σ_{i,j} wa_i wb_j K(a_i, b_j) over row chunks of ``a``; analytic backward that
    recomputes chunks.

    ``same=True`` means ``b`` is ``a`` (an XX or YY term). Then only the upper triangle of the
    pair matrix is visited (chunk rows [s, e) against rows [s, n)): the diagonal block once,
    the block right of it twice; the diagonal is left out when ``exclude_diag``. The gradient is
    returned for ``a`` only and covers both ends of each pair. ``wa`` / ``wb`` are 0/1 row
    weights (None: all ones); with ``same`` both are ``wa``.
    """

    @staticmethod
    @full_precision
    def forward(ctx, a: Tensor, b: Tensor, inv_h: Tensor, same: bool, exclude_diag: bool,
                squaring: bool, rows: int, wa: Tensor | None, wb: Tensor | None) -> Tensor:
        a_sq, b_sq = a.square().sum(1), b.square().sum(1)
        ws = _Workspace(a, rows, b.shape[0])
        total = a.new_zeros(())
        for s in range(0, a.shape[0], rows):
            e = min(s + rows, a.shape[0])
            c0 = s if same else 0  # first column of this chunk's block
            shape = (e - s, b.shape[0] - c0)
            d2 = _sq_dists(a[s:e], a_sq[s:e], b[c0:], b_sq[c0:], ws.get(0, *shape))
            if same:  # exact zeros on the diagonal, so that MMD(x, x) = 0 is not spoilt by rounding
                d2.diagonal().zero_()
            k = ws.get(1, *shape).zero_()
            for ek, _ in _exps(d2, inv_h, squaring, ws.get(2, *shape)):
                k += ek
            _weigh(k, wa, wb, s, e, c0)
            if same:
                if exclude_diag:
                    k.diagonal().zero_()
                total = total + k[:, : e - s].sum() + 2.0 * k[:, e - s:].sum()
            else:
                total = total + k.sum()
        ctx.save_for_backward(a, b, inv_h, wa, wb)
        ctx.same, ctx.squaring, ctx.rows = same, squaring, rows
        return total

    @staticmethod
    @full_precision
    def backward(ctx, grad: Tensor):
        a, b, inv_h, wa, wb = ctx.saved_tensors
        same, rows = ctx.same, ctx.rows
        a_sq, b_sq = a.square().sum(1), b.square().sum(1)
        ws = _Workspace(a, rows, b.shape[0])
        ga = torch.zeros_like(a)
        gb = None if same else torch.zeros_like(b)
        for s in range(0, a.shape[0], rows):
            e = min(s + rows, a.shape[0])
            c0 = s if same else 0
            shape = (e - s, b.shape[0] - c0)
            d2 = _sq_dists(a[s:e], a_sq[s:e], b[c0:], b_sq[c0:], ws.get(0, *shape))
            # G = −dK/d(d²) = Σ_k ih_k exp(−d²·ih_k) ≥ 0
            g = ws.get(1, *shape).zero_()
            for ek, ih in _exps(d2, inv_h, ctx.squaring, ws.get(2, *shape)):
                g.addcmul_(ek, ih)
            _weigh(g, wa, wb, s, e, c0)
            if same:  # the diagonal pair has a − a = 0: no gradient, whatever the estimator
                g.diagonal().zero_()
            # d‖a_i − b_j‖²/da_i = 2(a_i − b_j): dS/da_i = −2 Σ_j G_ij (a_i − b_j) for a cross
            # sum, twice that for a self sum (a_i is at both ends of its pairs)
            scale = -4.0 if same else -2.0
            ga[s:e] += scale * (a[s:e] * g.sum(1, keepdim=True) - g @ b[c0:])
            if same:
                # pairs right of the diagonal block appear once: their column end gets its share
                off = g[:, e - s:]
                ga[e:] += scale * (a[e:] * off.sum(0)[:, None] - off.T @ a[s:e])
            else:
                gb += -2.0 * (b * g.sum(0)[:, None] - g.T @ a[s:e])
        if same:
            return ga * grad, None, None, None, None, None, None, None, None
        return ga * grad, gb * grad, None, None, None, None, None, None, None


def _weigh(k: Tensor, wa: Tensor | None, wb: Tensor | None, s: int, e: int, c0: int) -> None:
    """Multiply a chunk (rows [s, e) of a, columns [c0, …) of b) by its row and column weights."""
    if wa is not None:
        k.mul_(wa[s:e, None])
    if wb is not None:
        k.mul_(wb[None, c0:])


def _kernel_sum(a: Tensor, b: Tensor | None, inv_h: Tensor, exclude_diag: bool, squaring: bool,
                chunk_bytes: int | None, wa: Tensor | None = None, wb: Tensor | None = None) -> Tensor:
    same = b is None
    b_ = a if same else b
    rows = chunk_rows(a.shape[0], b_.shape[0], a.element_size(), chunk_bytes)
    # the same tensor in both slots would receive gradient twice; pass it once when same
    return _KernelSum.apply(a, a.detach() if same else b_, inv_h, same, exclude_diag, squaring, rows,
                            wa, wa if same else wb)


class _DenseSum(torch.autograd.Function):
    """L = Σ_{i,j} W_ij K(u_i, u_j) over all pairs of the pooled rows ``u`` (n, d), with the
    pair weights ``W = P C Pᵀ``: ``P`` (n, 2) holds each row's weight in x (column 0) and in y
    (column 1), ``coef`` = (c_xx, c_yy, c_xy) the estimator's coefficients. The whole n×n matrix
    at once, in place, and an analytic backward from the saved slope ``g = −dK/d(d²)``:
    ``dL/du_i = −4 Σ_j W_ij g_ij (u_i − u_j)``.
    """

    @staticmethod
    @full_precision
    def forward(ctx, u: Tensor, inv_h: Tensor, P: Tensor, coef: Tensor, exclude_diag: bool,
                squaring: bool) -> Tensor:
        sq = u.square().sum(1)
        d2 = torch.addmm(sq[None, :], u, u.T, alpha=-2.0).add_(sq[:, None]).clamp_min_(0.0)
        # exact zeros on the diagonal, so that MMD(x, x) = 0 is not spoilt by rounding
        d2.diagonal().zero_()
        k = torch.zeros_like(d2)
        # the slope only when a gradient will be asked for
        g = torch.zeros_like(d2) if ctx.needs_input_grad[0] else None
        for e, ih in _exps(d2, inv_h, squaring, torch.empty_like(d2)):
            k += e
            if g is not None:
                g.addcmul_(e, ih)
        if exclude_diag:
            k.diagonal().zero_()
        if g is not None:
            g.diagonal().zero_()  # the diagonal pair has u_i − u_i = 0: no gradient
        s = P.T @ (k @ P)  # (2, 2): the weighted kernel sums S_xx, S_xy / S_yx, S_yy
        ctx.save_for_backward(u, g, P, coef)
        return coef[0] * s[0, 0] + coef[1] * s[1, 1] + 2.0 * coef[2] * s[0, 1]

    @staticmethod
    @full_precision
    def backward(ctx, grad: Tensor):
        u, g, P, coef = ctx.saved_tensors
        q = torch.stack([coef[0] * P[:, 0] + coef[2] * P[:, 1], coef[2] * P[:, 0] + coef[1] * P[:, 1]], 1)
        gw = g * (P @ q.T)
        gu = (u * gw.sum(1, keepdim=True) - gw @ u) * (-4.0 * grad)
        return gu, None, None, None, None, None


def _coefficients(nx, ny, unbiased: bool):
    """(c_xx, c_yy, c_xy) with MMD² = c_xx S_xx + c_yy S_yy + 2 c_xy S_xy, from the sample sizes:
    Python ints (exact), or 0-dim tensors of selected counts, when fewer than 2 rows on either
    side make every coefficient 0 (so MMD² = 0 with zero gradient, no NaN)."""
    if isinstance(nx, int) and isinstance(ny, int):
        if unbiased:
            return 1.0 / (nx * (nx - 1)), 1.0 / (ny * (ny - 1)), -1.0 / (nx * ny)
        return 1.0 / (nx * nx), 1.0 / (ny * ny), -1.0 / (nx * ny)
    ref = nx if isinstance(nx, Tensor) else ny
    nx = nx if isinstance(nx, Tensor) else torch.full((), float(nx), dtype=ref.dtype, device=ref.device)
    ny = ny if isinstance(ny, Tensor) else torch.full((), float(ny), dtype=ref.dtype, device=ref.device)
    valid = ((nx >= 2) & (ny >= 2)).to(ref.dtype)
    # counts kept ≥ 2 so that the coefficients stay finite where they are then zeroed
    nx, ny = nx.clamp_min(2.0), ny.clamp_min(2.0)
    if unbiased:
        cxx, cyy = valid / (nx * (nx - 1.0)), valid / (ny * (ny - 1.0))
    else:
        cxx, cyy = valid / (nx * nx), valid / (ny * ny)
    return cxx, cyy, -valid / (nx * ny)


def _as_coef_tensor(coefs, like: Tensor) -> Tensor:
    if isinstance(coefs[0], Tensor):
        return torch.stack(list(coefs))
    # fills, not torch.tensor(list): no host-to-device copy
    return torch.stack([torch.full((), c, dtype=like.dtype, device=like.device) for c in coefs])


def _pooled_weights(N: int, M: int, wx: Tensor | None, wy: Tensor | None, like: Tensor) -> Tensor:
    """P (N + M, 2): each pooled row's weight as a member of x (column 0) and of y (column 1)."""
    P = like.new_zeros((N + M, 2))
    if wx is None:
        P[:N, 0] = 1.0
    else:
        P[:N, 0] = wx
    if wy is None:
        P[N:, 1] = 1.0
    else:
        P[N:, 1] = wy
    return P


def mmd(x: Tensor, y: Tensor, *, num_kernels: int = 5, kernel_mul: float = 2.0,
        bandwidths: Tensor | Sequence[float] | None = None, unbiased: bool = False,
        chunk_bytes: int | None = None, x_mask: Tensor | None = None,
        y_mask: Tensor | None = None) -> Tensor:
    """MMD² between the rows of ``x`` (N, d) and ``y`` (M, d); see the module docstring.

    ``x_mask`` / ``y_mask``: optional bool (N,) / (M,) row selections (fewer than 2 selected
    rows on either side: 0). ``chunk_bytes`` overrides :data:`CHUNK_BUDGET_BYTES` (which also
    decides the dense path). No input validation here; :func:`fsrf.ops.mmd` validates and
    dispatches.
    """
    acc = compute_dtype(x.dtype)
    N, M = x.shape[0], y.shape[0]
    inv_h, mean = inverse_bandwidths(x, y, num_kernels, kernel_mul, bandwidths, x_mask, y_mask)
    squaring = bandwidths is None and float(kernel_mul) == 2.0
    # centring (with a detached mean) keeps ‖a‖² + ‖b‖² − 2a·b accurate; gradients pass through
    xc, yc = _selected(x.to(acc) - mean, x_mask, acc), _selected(y.to(acc) - mean, y_mask, acc)
    wx = None if x_mask is None else x_mask.to(acc)
    wy = None if y_mask is None else y_mask.to(acc)
    nx = N if wx is None else wx.sum()
    ny = M if wy is None else wy.sum()
    coefs = _coefficients(nx, ny, unbiased)
    if dense_fits(N + M, xc.element_size(), chunk_bytes):
        P = _pooled_weights(N, M, wx, wy, xc)
        return _DenseSum.apply(torch.cat([xc, yc]), inv_h, P, _as_coef_tensor(coefs, xc), unbiased, squaring)
    s_xx = _kernel_sum(xc, None, inv_h, unbiased, squaring, chunk_bytes, wx)
    s_yy = _kernel_sum(yc, None, inv_h, unbiased, squaring, chunk_bytes, wy)
    s_xy = _kernel_sum(xc, yc, inv_h, False, squaring, chunk_bytes, wx, wy)
    return coefs[0] * s_xx + coefs[1] * s_yy + 2.0 * coefs[2] * s_xy
