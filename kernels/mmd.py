"""Triton kernels of :func:`fsrf.ops.mmd`: tiled multi-bandwidth Gaussian MMD², forward and backward.

The launcher builds the pooled set ``U = [x; y]`` (``n = N + M`` rows), centred by its mean
``ū`` and in the accumulation dtype, plus its squared row norms: one O(n·d) pass whose copy is the
only input the kernels read. (Reading x and y in place would need two masked pointer tiles per
operand, which ran the tile kernels out of registers.) With pair weights ``w_ij`` = ``w_xx``
(both rows in x), ``w_yy`` (both in y), ``w_xy`` (mixed), computed in the kernel from N and M,

    MMD² = Σ_{i,j} w_ij K(u_i, u_j),   K(a, b) = Σ_k exp(−‖a − b‖² · ih_k),  ih_k = 1/h_k

(biased: ``w_xx = 1/N²``, ``w_yy = 1/M²``, ``w_xy = −1/(NM)``; unbiased: ``1/(N(N−1))``,
``1/(M(M−1))`` and the diagonal pairs left out).

* Forward: a 2-D grid over square ``BLOCK×BLOCK`` tiles ``(ti, tj)`` of the n×n pair matrix;
  only ``tj ≥ ti`` tiles work (the matrix is symmetric, off-diagonal tiles count twice). Each
  writes one partial sum into a ``T×T`` buffer (T = ⌈n/BLOCK⌉, no n×n buffer), reduced by a
  deterministic ``sum`` afterwards (no atomics).
* Backward: ``dL/du_i = 4 g Σ_j G_ij (u_i − u_j)`` with ``G_ij = w_ij K'(d²_ij)``,
  ``K'(s) = −Σ_k ih_k exp(−s·ih_k)``. A grid over (row tile, output-column block) loops over all
  column tiles, recomputing d² and accumulating ``Σ_j G_ij`` and ``G @ U_j`` (``tl.dot``); the
  result goes straight to ``dx`` / ``dy``. Memory O((N+M)·d).
* Distances: ``d² = ‖a‖² + ‖b‖² − 2 a·b`` with the cross term from ``tl.dot`` on the *centred*
  data (so the cancellation is relative to the spread of the data, not its offset from 0),
  clamped at 0, and exactly 0 on the diagonal. ``tl.dot`` precision: ``tf32x3`` for float32
  inputs (≈ fp32 accuracy on tensor cores), ``tf32`` for float16 / bfloat16 inputs (the error is
  below the inputs' own rounding), ``ieee`` for float64.
* With the default geometric bandwidths and ``kernel_mul = 2`` (``SQUARING``), the
  ``num_kernels`` exponentials come from one ``exp`` at the widest bandwidth by repeated
  squaring, ``exp(−s/h)² = exp(−s/(h/2))`` (relative error grows ~2^k·ε, negligible for k ≤ 6).
  The special-function rate (~3.9 T exp/s on an H100) is, with the distance GEMM, what bounds
  this kernel on a GPU, so K exps per pair would matter.

* Row masks (``x_mask``, ``y_mask``): the launcher zeroes unselected rows in the pooled copy
  and passes per-row 0/1 weights ``RW`` plus the estimator's three coefficients ``COEF``
  (computed on the device from the selected counts, 0 when a side has fewer than 2 rows), so
  ``w_ij = COEF[block] · RW_i · RW_j``: unselected rows add nothing and get zero gradient, and
  nothing is read back to the host (``HAS_W`` selects this variant at compile time).

Accumulation is in float32 (float64 for float64 inputs) whatever the input dtype, the upcast
happening when the centred copy is made; gradients are stored in the input dtype. Launches run
on the inputs' device (:func:`fsrf.kernels._launch.on_device`).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import _launch

__all__ = ["mmd_forward", "mmd_backward"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "") == "1"


@triton.jit
def _load_rows(U, rows, cols, n, d, su):
    """Rows ``rows``, columns ``cols`` of the centred pooled copy; zeros outside it."""
    mask = (rows < n)[:, None] & (cols < d)[None, :]
    return tl.load(U + rows.to(tl.int64)[:, None] * su + cols[None, :], mask=mask, other=0.0)


@triton.jit
def _sq_dists(U, SQ, rows_i, rows_j, n, d, su, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr,
              ACC: tl.constexpr, DOT_PREC: tl.constexpr):
    """‖u_i − u_j‖² of a BLOCK×BLOCK tile, ≥ 0, exactly 0 where i == j."""
    dot = tl.zeros((BLOCK, BLOCK), ACC)
    for k0 in range(0, d, BLOCK_D):
        cols = k0 + tl.arange(0, BLOCK_D)
        a = _load_rows(U, rows_i, cols, n, d, su)
        b = _load_rows(U, rows_j, cols, n, d, su)
        dot = tl.dot(a, tl.trans(b), dot, input_precision=DOT_PREC)
    sq_i = tl.load(SQ + rows_i, mask=rows_i < n, other=0.0)
    sq_j = tl.load(SQ + rows_j, mask=rows_j < n, other=0.0)
    d2 = tl.maximum(sq_i[:, None] + sq_j[None, :] - 2.0 * dot, 0.0)
    return tl.where(rows_i[:, None] == rows_j[None, :], 0.0, d2)


@triton.jit
def _pair_weights(rows_i, rows_j, N, n, RW, COEF, UNBIASED: tl.constexpr, NO_DIAG: tl.constexpr,
                  HAS_W: tl.constexpr, ACC: tl.constexpr):
    """w_ij of the tile (0 outside U, on the diagonal when ``NO_DIAG`` and, with ``HAS_W``, on
    unselected rows)."""
    if HAS_W:
        # from the selected counts, computed on the device by the launcher
        w_xx = tl.load(COEF)
        w_yy = tl.load(COEF + 1)
        w_xy = tl.load(COEF + 2)
    else:
        # from the integer sizes, in the accumulation dtype (float scalar arguments would be fp32)
        nx = N.to(ACC)
        ny = (n - N).to(ACC)
        if UNBIASED:
            w_xx = 1.0 / (nx * (nx - 1.0))
            w_yy = 1.0 / (ny * (ny - 1.0))
        else:
            w_xx = 1.0 / (nx * nx)
            w_yy = 1.0 / (ny * ny)
        w_xy = -1.0 / (nx * ny)
    xi = rows_i < N
    xj = rows_j < N
    w = tl.where(xi[:, None] & xj[None, :], w_xx,
                 tl.where((rows_i >= N)[:, None] & (rows_j >= N)[None, :], w_yy, w_xy))
    keep = (rows_i < n)[:, None] & (rows_j < n)[None, :]
    if NO_DIAG:
        keep = keep & (rows_i[:, None] != rows_j[None, :])
    w = tl.where(keep, w, 0.0)
    if HAS_W:
        rw_i = tl.load(RW + rows_i, mask=rows_i < n, other=0.0)
        rw_j = tl.load(RW + rows_j, mask=rows_j < n, other=0.0)
        w = w * rw_i[:, None] * rw_j[None, :]
    return w


@triton.jit
def _kernel_and_slope(d2, INVH, NUM_K: tl.constexpr, SQUARING: tl.constexpr,
                      WANT_SLOPE: tl.constexpr):
    """K(d²) = Σ_k e_k and, if wanted, −K'(d²) = Σ_k ih_k e_k, with e_k = exp(−d²·ih_k)."""
    if SQUARING:
        # INVH is ascending in bandwidth with ratio 2: ih_{k} = 2·ih_{k+1}; start at the widest
        ih = tl.load(INVH + NUM_K - 1)
        e = tl.exp(-d2 * ih)
        kval = e
        slope = e * ih
        for _ in tl.static_range(NUM_K - 1):
            e = e * e
            ih = ih * 2.0
            kval += e
            if WANT_SLOPE:
                slope += e * ih
    else:
        kval = tl.zeros_like(d2)
        slope = tl.zeros_like(d2)
        for k in tl.static_range(NUM_K):
            ih = tl.load(INVH + k)
            e = tl.exp(-d2 * ih)
            kval += e
            if WANT_SLOPE:
                slope += e * ih
    return kval, slope


@triton.jit
def _mmd_fwd_kernel(U, SQ, INVH, PART, RW, COEF, N, n, d, su,
                    NUM_K: tl.constexpr, SQUARING: tl.constexpr, UNBIASED: tl.constexpr,
                    HAS_W: tl.constexpr, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr,
                    DOT_PREC: tl.constexpr):
    ti = tl.program_id(0)
    tj = tl.program_id(1)
    if tj >= ti:  # lower-triangle tiles mirror upper ones; their partials stay 0
        rows_i = ti * BLOCK + tl.arange(0, BLOCK)
        rows_j = tj * BLOCK + tl.arange(0, BLOCK)
        d2 = _sq_dists(U, SQ, rows_i, rows_j, n, d, su, BLOCK, BLOCK_D, ACC, DOT_PREC)
        kval, _ = _kernel_and_slope(d2, INVH, NUM_K, SQUARING, False)
        w = _pair_weights(rows_i, rows_j, N, n, RW, COEF, UNBIASED, UNBIASED, HAS_W, ACC)
        part = tl.sum(tl.sum(w * kval, axis=1), axis=0)
        part = part * tl.where(tj > ti, 2.0, 1.0)
        tl.store(PART + ti * tl.num_programs(1) + tj, part)


@triton.jit
def _mmd_bwd_kernel(U, SQ, INVH, GOUT, DX, DY, RW, COEF, N, n, d, su, sdx, sdy,
                    NUM_K: tl.constexpr, SQUARING: tl.constexpr, UNBIASED: tl.constexpr,
                    HAS_W: tl.constexpr, BLOCK: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr, ACC: tl.constexpr,
                    DOT_PREC: tl.constexpr):
    ti = tl.program_id(0)
    dc = tl.program_id(1)
    rows_i = ti * BLOCK + tl.arange(0, BLOCK)
    cols_o = dc * BLOCK_DO + tl.arange(0, BLOCK_DO)
    acc = tl.zeros((BLOCK, BLOCK_DO), ACC)
    gsum = tl.zeros((BLOCK,), ACC)
    for j0 in range(0, n, BLOCK):
        rows_j = j0 + tl.arange(0, BLOCK)
        d2 = _sq_dists(U, SQ, rows_i, rows_j, n, d, su, BLOCK, BLOCK_D, ACC, DOT_PREC)
        _, slope = _kernel_and_slope(d2, INVH, NUM_K, SQUARING, True)
        # the diagonal pair has u_i − u_i = 0: no gradient whatever the estimator
        g = _pair_weights(rows_i, rows_j, N, n, RW, COEF, UNBIASED, True, HAS_W, ACC) * slope  # = −G_ij
        gsum += tl.sum(g, axis=1)
        b = _load_rows(U, rows_j, cols_o, n, d, su)
        acc = tl.dot(g, b, acc, input_precision=DOT_PREC)
    a = _load_rows(U, rows_i, cols_o, n, d, su)
    go = tl.load(GOUT).to(ACC)
    # dL/du_i = 4 g Σ_j G_ij (u_i − u_j) = −4 g (u_i Σ_j g_ij − Σ_j g_ij u_j) with g = −G
    grad = (acc - a * gsum[:, None]) * (4.0 * go)
    rows64 = rows_i.to(tl.int64)
    cmask = cols_o < d
    tl.store(DX + rows64[:, None] * sdx + cols_o[None, :], grad.to(DX.dtype.element_ty),
             mask=(rows_i < N)[:, None] & cmask[None, :])
    tl.store(DY + (rows64 - N)[:, None] * sdy + cols_o[None, :], grad.to(DY.dtype.element_ty),
             mask=((rows_i >= N) & (rows_i < n))[:, None] & cmask[None, :])


# GPU tile configurations, tried once per (d, dtypes) by triton.autotune. Register use checked
# offline with ptxas for sm_90 (fp32 inputs, tf32x3 dots): the forward configs do not spill, the
# backward ones hold a BLOCK×BLOCK_DO accumulator besides the distance tiles and spill 0–728
# bytes; not yet timed on a GPU, hence several candidates.
_FWD_CONFIGS = [
    triton.Config({"BLOCK": 64, "BLOCK_D": 32}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK": 64, "BLOCK_D": 64}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK": 128, "BLOCK_D": 32}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK": 64, "BLOCK_D": 32}, num_warps=4, num_stages=3),
]
_BWD_CONFIGS = [
    triton.Config({"BLOCK": 64, "BLOCK_D": 64, "BLOCK_DO": 128}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK": 64, "BLOCK_D": 32, "BLOCK_DO": 64}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK": 32, "BLOCK_D": 64, "BLOCK_DO": 128}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK": 64, "BLOCK_D": 64, "BLOCK_DO": 64}, num_warps=8, num_stages=2),
]
_MIN_FWD_BLOCK = min(c.kwargs["BLOCK"] for c in _FWD_CONFIGS)


def _prune_bwd(configs, named_args, **kwargs):
    # an output block wider than d only wastes registers
    cap = max(16, triton.next_power_of_2(named_args["d"]))
    kept = [c for c in configs if c.kwargs["BLOCK_DO"] <= cap]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_DO"])]


_mmd_fwd_tuned = triton.autotune(_FWD_CONFIGS, key=["d", "HAS_W"], reset_to_zero=["PART"])(_mmd_fwd_kernel)
_mmd_bwd_tuned = triton.autotune(_BWD_CONFIGS, key=["d", "HAS_W"],
                                 prune_configs_by={"early_config_prune": _prune_bwd})(_mmd_bwd_kernel)


def _interp_blocks(d: int, block: int | None, block_d: int | None, block_do: int | None):
    # interpreter cost is per program and per loop step: few, large blocks
    dpow = max(16, triton.next_power_of_2(d))
    return block or 64, block_d or min(dpow, 256), block_do or min(dpow, 256)


def _meta(x: torch.Tensor):
    if x.dtype == torch.float64:
        return torch.float64, tl.float64, "ieee"
    if x.dtype == torch.float32:
        return torch.float32, tl.float32, "tf32x3"
    return torch.float32, tl.float32, "tf32"


# Tile rows go on grid axis 0 (up to 2³¹ − 1 programs); the forward's second axis is capped at
# 65535 by CUDA, which bounds the pooled rows of one call.
_MAX_GRID_Y = 65535


def _pooled(x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor, acc: torch.dtype,
            sel: torch.Tensor | None):
    """The centred pooled copy U − ū in the accumulation dtype (unselected rows zero) and its
    squared row norms."""
    u = torch.cat([x, y]).to(acc)
    u -= mean
    if sel is not None:
        u = torch.where(sel[:, None], u, torch.zeros((), dtype=acc, device=u.device))
    return u, u.square().sum(1)


def _selection(x_mask, y_mask, N: int, M: int, unbiased: bool, acc: torch.dtype, device):
    """(sel (n,) bool, RW (n,) 0/1 weights, COEF (3,) = [w_xx, w_yy, w_xy]) for masked rows, all on
    the device; (None, None, None) without masks."""
    if x_mask is None and y_mask is None:
        return None, None, None
    xm = x_mask if x_mask is not None else torch.ones(N, dtype=torch.bool, device=device)
    ym = y_mask if y_mask is not None else torch.ones(M, dtype=torch.bool, device=device)
    sel = torch.cat([xm, ym])
    rw = sel.to(acc)
    nx, ny = rw[:N].sum(), rw[N:].sum()
    valid = ((nx >= 2) & (ny >= 2)).to(acc)
    # counts kept ≥ 2 so that the coefficients stay finite where valid zeroes them
    nx, ny = nx.clamp_min(2.0), ny.clamp_min(2.0)
    if unbiased:
        cxx, cyy = 1.0 / (nx * (nx - 1.0)), 1.0 / (ny * (ny - 1.0))
    else:
        cxx, cyy = 1.0 / (nx * nx), 1.0 / (ny * ny)
    coef = torch.stack([cxx, cyy, -1.0 / (nx * ny)]) * valid
    return sel, rw, coef


def mmd_forward(x: torch.Tensor, y: torch.Tensor, inv_h: torch.Tensor, mean: torch.Tensor,
                unbiased: bool, squaring: bool, block: int | None = None,
                block_d: int | None = None, x_mask: torch.Tensor | None = None,
                y_mask: torch.Tensor | None = None) -> torch.Tensor:
    """MMD² of 2-D ``x`` (N, d), ``y`` (M, d) given ``1/h_k`` and the pooled mean (both in the
    accumulation dtype). Returns a 0-dim tensor in the accumulation dtype.

    ``x_mask`` / ``y_mask`` (bool (N,) / (M,)) select rows (``mean`` and ``inv_h`` must then be
    those of the selected rows). ``block``/``block_d`` fix the tile sizes (tests use them to
    reach multi-tile paths); without them a GPU autotunes and the interpreter uses large tiles.
    """
    N, d = x.shape
    n = N + y.shape[0]
    acc, ACC, prec = _meta(x)
    with _launch.on_device(x):
        sel, rw, coef = _selection(x_mask, y_mask, N, y.shape[0], unbiased, acc, x.device)
        u, sq = _pooled(x, y, mean, acc, sel)
        # without masks the weight pointers are unused (HAS_W is a compile-time switch)
        rw_arg, coef_arg = (rw, coef) if sel is not None else (sq, sq)
        common = dict(NUM_K=inv_h.shape[0], SQUARING=bool(squaring), UNBIASED=bool(unbiased),
                      HAS_W=sel is not None, ACC=ACC, DOT_PREC=prec)
        if _INTERPRET or block is not None or block_d is not None:
            BLOCK, BLOCK_D, _ = _interp_blocks(d, block, block_d, None)
            t = triton.cdiv(n, BLOCK)
            _check_grid(t, n)
            part = torch.zeros((t, t), device=x.device, dtype=acc)
            _mmd_fwd_kernel[(t, t)](u, sq, inv_h, part, rw_arg, coef_arg, N, n, d, u.stride(0), BLOCK=BLOCK,
                                    BLOCK_D=BLOCK_D, num_warps=8, **common)
        else:
            # sized for the smallest tile; a config with larger tiles writes a corner of it
            t = triton.cdiv(n, _MIN_FWD_BLOCK)
            _check_grid(t, n)
            part = torch.zeros((t, t), device=x.device, dtype=acc)
            grid = lambda meta: (triton.cdiv(n, meta["BLOCK"]), triton.cdiv(n, meta["BLOCK"]))  # noqa: E731
            _mmd_fwd_tuned[grid](u, sq, inv_h, part, rw_arg, coef_arg, N, n, d, u.stride(0), **common)
        return part.sum()


def _check_grid(tiles: int, n: int) -> None:
    if tiles > _MAX_GRID_Y:
        raise ValueError(f"mmd: N + M = {n} pooled rows need {tiles} row tiles, more than the {_MAX_GRID_Y} "
                         f"a CUDA grid axis holds; split the samples (an MMD of that size takes hours anyway)")


def mmd_backward(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, inv_h: torch.Tensor,
                 mean: torch.Tensor, unbiased: bool, squaring: bool, block: int | None = None,
                 block_d: int | None = None, block_do: int | None = None, x_mask: torch.Tensor | None = None,
                 y_mask: torch.Tensor | None = None):
    """``(dL/dx, dL/dy)`` in the inputs' dtype for upstream gradient ``grad`` (0-dim, on device);
    unselected rows (``x_mask`` / ``y_mask``) get 0."""
    N, d = x.shape
    n = N + y.shape[0]
    acc, ACC, prec = _meta(x)
    with _launch.on_device(x):
        sel, rw, coef = _selection(x_mask, y_mask, N, y.shape[0], unbiased, acc, x.device)
        u, sq = _pooled(x, y, mean, acc, sel)
        dx = torch.empty_like(x, memory_format=torch.contiguous_format)
        dy = torch.empty_like(y, memory_format=torch.contiguous_format)
        rw_arg, coef_arg = (rw, coef) if sel is not None else (sq, sq)
        args = (u, sq, inv_h, grad.reshape(()).to(acc), dx, dy, rw_arg, coef_arg, N, n, d, u.stride(0),
                dx.stride(0), dy.stride(0))
        common = dict(NUM_K=inv_h.shape[0], SQUARING=bool(squaring), UNBIASED=bool(unbiased),
                      HAS_W=sel is not None, ACC=ACC, DOT_PREC=prec)
        if _INTERPRET or block is not None or block_d is not None or block_do is not None:
            BLOCK, BLOCK_D, BLOCK_DO = _interp_blocks(d, block, block_d, block_do)
            grid = (triton.cdiv(n, BLOCK), triton.cdiv(d, BLOCK_DO))
            _mmd_bwd_kernel[grid](*args, BLOCK=BLOCK, BLOCK_D=BLOCK_D, BLOCK_DO=BLOCK_DO, num_warps=8,
                                  **common)
        else:
            grid = lambda meta: (triton.cdiv(n, meta["BLOCK"]), triton.cdiv(d, meta["BLOCK_DO"]))  # noqa: E731
            _mmd_bwd_tuned[grid](*args, **common)
        return dx, dy
