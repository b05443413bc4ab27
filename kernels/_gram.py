"""Grouped normalised-Gram kernels shared by ``orthogonality_loss``, ``decorrelation_loss`` and
``factor_constraints`` (forward and backward, Triton).

Every loss of these three ops is a *term* of one shape: a Gram matrix ``M = X̂ᵀ Ŷ`` of two
normalised views of factor columns, squared and summed with a scale.

* orthogonality term (kind 0, MISA's DiffLoss): ``X̂ = diag(w·s_x)(X − 1μ_xᵀ)``,
  ``Ŷ = diag(s_y)(Y − 1μ_yᵀ)`` with row scales ``s = 1/(‖centred row‖ + eps)``;
  ``loss = Σ M² / (d_x d_y)``.
* decorrelation term (kind 1, Barlow-Twins off-diagonal): ``X = Y = Z``,
  ``Ẑ = diag(w)(Z − 1μᵀ) diag(1/σ)``, ``C = ẐᵀẐ / n``; ``loss = Σ_{j≠k} C² / (d(d−1))``.

``w`` are 0/1 row weights (the term's row mask; all ones without masks), ``n = Σ w``; a term with
``n < 2`` is 0 with zero gradient.

Design (see ``fsrf/ops/factor_constraints.py`` for the public op):

* **Packing.** The factors are concatenated column-wise into one ``(N, Σd_i)`` buffer and every
  term addresses its factors by column offset from an int32 *term table*. One base pointer plus
  offsets handles factors of any widths in a single launch without a device-side pointer table
  (which would need a host→device upload of fresh ``data_ptr``s on every call, a stream sync in
  PyTorch); the packed copy is also the one tensor the backward needs, and the gradient comes
  back as one packed buffer whose column slices are the per-factor gradients. Tables depend only
  on the widths, the term list and ``N``, so they are built once per configuration and cached.
* **Forward, one launch.** Grid ``(terms, tile pairs)``: program ``(t, p)`` computes tile ``p``
  of term ``t``'s ``d_x × d_y`` Gram matrix. Its prologue is the "cheap pre-pass": weighted
  column means, then row norms (orthogonality) or column standard deviations (decorrelation),
  written as small vectors into the program's own stats record. The Gram loop then applies
  centring and scaling while loading each ``(BLOCK_N × BLOCK_D)`` tile, never materialising
  normalised copies, and accumulates in fp32 with ``tl.dot``. Each program stores its fp32 ``M``
  tile (kept for the backward) and the scaled sum of squares of its tile. Programs of one term
  recompute the same stats instead of synchronising (Triton has no grid barrier); at FSRF sizes
  (``d ≤ 128``) a term is a single tile so nothing is recomputed.
* **Forward for large N (GPU, N > 1024): three launches.** One program per term would serialise
  a long batch on one SM, and the means needed before the row norms are a batch-wide reduction
  that no single launch can wait for. So: (1) per (term, row block) row counts and column sums;
  (2) per (term, tile, row block) the means (from (1)), the row norms of the block's rows and the
  block's partial Gram tile, centring and row scaling applied on load; (3) per (term, tile) the
  sum of the partial Grams and the loss. Decorrelation needs no column pass before its Gram:
  ``σ_j² = M_jj / n + eps`` is the diagonal of the centred Gram, and ``C = M / (n σ_j σ_k)``.
* **Backward, two launches.** Kernel 1, grid ``(row tiles, sides)``: for one side of one term
  and ``BLOCK_N`` rows it forms ``U = ∂L/∂X̂`` from the saved ``M`` (``U = Ŷ Gᵀ``), back-propagates
  through the row / column normalisation (row-local given the saved stats; the decorrelation
  column-std term uses ``Σ_l U_lj Ẑ_lj = 2 (C G)_jj``, computable from ``C``), writes the fp32
  result into a per-side slab and the slab's column sums of the tile into a partial-sum buffer.
  Kernel 2, grid ``(row tiles, factors, column tiles)``: sums the slabs of each factor, applies
  the centring backward ``dx = dx̃ − w · colsum(dx̃)/n`` from the partial sums, and writes the
  gradient in the input dtype. No atomics, so the result is deterministic. (With more than 8
  row tiles the partial column sums are first added up by one torch reduction.) The row tiles,
  the one axis that grows with N, are grid axis 0: CUDA caps axes 1 and 2 at 65535 programs,
  which at 64-row tiles would stop at N = 4,194,240 (see :func:`backward_grids`).

Backward formulas (``U = ∂L/∂X̂``, ``c`` the centred rows, ``r = ‖c‖``, ``s = 1/(r + eps)``):
orthogonality ``∂L/∂c_i = w_i s_i (U_i − [not detach_norm] t_i c_i / r_i)`` with
``t_i = s_i ⟨U_i, c_i⟩`` — the second term is the path through the row norm, dropped when the
norm is detached (MISA); decorrelation ``∂L/∂c_ij = (U_ij − w_i Ẑ_ij q_j / n) / σ_j``; both then
go through the centring backward above. Checked against float64 autograd in the tests.

All arithmetic is fp32 (inputs are upcast right after ``tl.load``, which also keeps bf16 correct
under ``TRITON_INTERPRET=1``); fp32 inputs use IEEE fp32 dot products, fp16/bf16 inputs TF32.
Launches run on the inputs' device (:func:`fsrf.kernels._launch.on_device`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import _launch

KIND_ORTH = 0
KIND_DECOR = 1

# term table columns: kind, fx, fy, dx, dy, offx, offy, m_off, stats_off, vec_off (split path)
TCOLS = tl.constexpr(10)
# side table columns: term, role (0: the X side, 1: the Y side), slab column offset
SCOLS = tl.constexpr(3)
# factor table columns: column offset, width, first side, end of sides (CSR into the side list)
FCOLS = tl.constexpr(4)


# ----------------------------------------------------------------------------------------------
# device helpers
# ----------------------------------------------------------------------------------------------
@triton.jit
def _rows_sel(mask_ptr, fx, fy, rows, lim, N, HAS_MASK: tl.constexpr):
    """Rows that take part in a term: below ``lim`` (≤ N) and observed in both of its factors."""
    ok = rows < lim
    if HAS_MASK:
        mx = tl.load(mask_ptr + fx * N + rows, mask=ok, other=0)
        my = tl.load(mask_ptr + fy * N + rows, mask=ok, other=0)
        ok = ok & (mx != 0) & (my != 0)
    return ok


@triton.jit
def _load_centred(x_ptr, stride_x, rows, sel, cols, cok, off, mu):
    """fp32 tile ``x[rows, off + cols] − μ``, zero outside the selected rows / valid columns.

    Unselected rows are never read, so garbage in unobserved rows cannot leak into a term."""
    m = sel[:, None] & cok[None, :]
    ptrs = x_ptr + rows.to(tl.int64)[:, None] * stride_x + (off + cols)[None, :]
    x = tl.load(ptrs, mask=m, other=0.0).to(tl.float32)
    return tl.where(m, x - mu[None, :], 0.0)


@triton.jit
def _col_sums(x_ptr, stride_x, mask_ptr, fx, fy, r_lo, r_hi, N, off, d, out_ptr, scale,
              HAS_MASK: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    """``scale · Σ_rows x[rows, off:off+d]`` over the selected rows of ``[r_lo, r_hi)``."""
    for c0 in range(0, d, BD):
        cols = c0 + tl.arange(0, BD)
        cok = cols < d
        acc = tl.zeros([BD], dtype=tl.float32)
        for r0 in range(r_lo, r_hi, BN):
            rows = r0 + tl.arange(0, BN)
            sel = _rows_sel(mask_ptr, fx, fy, rows, r_hi, N, HAS_MASK)
            m = sel[:, None] & cok[None, :]
            ptrs = x_ptr + rows.to(tl.int64)[:, None] * stride_x + (off + cols)[None, :]
            acc += tl.sum(tl.load(ptrs, mask=m, other=0.0).to(tl.float32), axis=0)
        tl.store(out_ptr + cols, acc * scale, mask=cok)


@triton.jit
def _row_norms(x_ptr, stride_x, mask_ptr, fx, fy, N, off, d, mu_ptr, out_ptr,
               HAS_MASK: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    for r0 in range(0, N, BN):
        rows = r0 + tl.arange(0, BN)
        sel = _rows_sel(mask_ptr, fx, fy, rows, N, N, HAS_MASK)
        sq = tl.zeros([BN], dtype=tl.float32)
        for c0 in range(0, d, BD):
            cols = c0 + tl.arange(0, BD)
            cok = cols < d
            mu = tl.load(mu_ptr + cols, mask=cok, other=0.0)
            cx = _load_centred(x_ptr, stride_x, rows, sel, cols, cok, off, mu)
            sq += tl.sum(cx * cx, axis=1)
        tl.store(out_ptr + rows, tl.sqrt(sq), mask=rows < N)


@triton.jit
def _col_stds(x_ptr, stride_x, mask_ptr, fx, fy, N, off, d, mu_ptr, out_ptr, denom, eps,
              HAS_MASK: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    for c0 in range(0, d, BD):
        cols = c0 + tl.arange(0, BD)
        cok = cols < d
        mu = tl.load(mu_ptr + cols, mask=cok, other=0.0)
        acc = tl.zeros([BD], dtype=tl.float32)
        for r0 in range(0, N, BN):
            rows = r0 + tl.arange(0, BN)
            sel = _rows_sel(mask_ptr, fx, fy, rows, N, N, HAS_MASK)
            cx = _load_centred(x_ptr, stride_x, rows, sel, cols, cok, off, mu)
            acc += tl.sum(cx * cx, axis=0)
        # biased variance over the term's rows, as BatchNorm / Barlow Twins
        tl.store(out_ptr + cols, tl.sqrt(acc / denom + eps), mask=cok)


@triton.jit
def _term_scale(is_orth, dx, dy, n):
    """Loss scale of a term: 1/(d_x d_y) (orth), 1/(d(d−1)) (decor, 0 when d = 1); 0 when n < 2."""
    dxf = dx.to(tl.float32)
    dyf = dy.to(tl.float32)
    dec = tl.where(dx > 1, 1.0 / (dxf * tl.maximum(dxf - 1.0, 1.0)), 0.0)
    sc = tl.where(is_orth, 1.0 / (dxf * dyf), dec)
    return tl.where(n >= 2.0, sc, 0.0)


# ----------------------------------------------------------------------------------------------
# forward: one launch for all terms
# ----------------------------------------------------------------------------------------------
@triton.jit
def _fwd_kernel(x_ptr, stride_x, mask_ptr, term_ptr, m_ptr, stats_ptr, part_ptr,
                N, T, STATS_SIZE, orth_eps, decor_eps,
                HAS_MASK: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, DOT_PREC: tl.constexpr):
    t = tl.program_id(0)
    p = tl.program_id(1)
    tb = term_ptr + t * TCOLS
    kind = tl.load(tb + 0)
    fx = tl.load(tb + 1)
    fy = tl.load(tb + 2)
    dx = tl.load(tb + 3)
    dy = tl.load(tb + 4)
    offx = tl.load(tb + 5)
    offy = tl.load(tb + 6)
    moff = tl.load(tb + 7)
    soff = tl.load(tb + 8)
    is_orth = kind == 0
    ntk = tl.cdiv(dy, BD)
    if p < tl.cdiv(dx, BD) * ntk:
        # stats record of this program: [n, μ_x (dx), μ_y | σ (dy), r_x (N), r_y (N)]; a decor
        # record stops after σ (its r slots are never addressed: those loads are masked off)
        rec = stats_ptr + p.to(tl.int64) * STATS_SIZE + soff
        cnt = tl.zeros([BN], dtype=tl.float32)
        for r0 in range(0, N, BN):
            rows = r0 + tl.arange(0, BN)
            cnt += _rows_sel(mask_ptr, fx, fy, rows, N, N, HAS_MASK).to(tl.float32)
        n = tl.sum(cnt, axis=0)
        denom = tl.maximum(n, 1.0)
        tl.store(rec, n)
        _col_sums(x_ptr, stride_x, mask_ptr, fx, fy, 0, N, N, offx, dx, rec + 1, 1.0 / denom,
                  HAS_MASK, BN, BD)
        if is_orth:
            _col_sums(x_ptr, stride_x, mask_ptr, fx, fy, 0, N, N, offy, dy, rec + 1 + dx, 1.0 / denom,
                      HAS_MASK, BN, BD)
        # the vectors just stored are read back by other threads of this program
        tl.debug_barrier()
        if is_orth:
            _row_norms(x_ptr, stride_x, mask_ptr, fx, fy, N, offx, dx, rec + 1, rec + 1 + dx + dy,
                       HAS_MASK, BN, BD)
            _row_norms(x_ptr, stride_x, mask_ptr, fx, fy, N, offy, dy, rec + 1 + dx,
                       rec + 1 + dx + dy + N, HAS_MASK, BN, BD)
        else:
            _col_stds(x_ptr, stride_x, mask_ptr, fx, fy, N, offx, dx, rec + 1, rec + 1 + dx, denom,
                      decor_eps, HAS_MASK, BN, BD)
        tl.debug_barrier()

        jt = p // ntk
        kt = p % ntk
        cj = jt * BD + tl.arange(0, BD)
        jok = cj < dx
        ck = kt * BD + tl.arange(0, BD)
        kok = ck < dy
        mu_j = tl.load(rec + 1 + cj, mask=jok, other=0.0)
        # orth: μ_y lives after μ_x; decor: Y is X, so its means are μ_x
        mu_k = tl.load(rec + tl.where(is_orth, 1 + dx, 1) + ck, mask=kok, other=0.0)
        # σ only exists for decorrelation terms; masked loads keep unused slots out of the math
        sg_j = tl.load(rec + 1 + dx + cj, mask=jok & ((cj * 0 + kind) == 1), other=1.0)
        sg_k = tl.load(rec + 1 + dx + ck, mask=kok & ((ck * 0 + kind) == 1), other=1.0)
        cs_j = tl.where(is_orth, 1.0, 1.0 / sg_j)
        cs_k = tl.where(is_orth, 1.0, 1.0 / sg_k)
        acc = tl.zeros([BD, BD], dtype=tl.float32)
        for r0 in range(0, N, BN):
            rows = r0 + tl.arange(0, BN)
            sel = _rows_sel(mask_ptr, fx, fy, rows, N, N, HAS_MASK)
            xa = _load_centred(x_ptr, stride_x, rows, sel, cj, jok, offx, mu_j)
            yb = _load_centred(x_ptr, stride_x, rows, sel, ck, kok, offy, mu_k)
            # row norms only exist for orthogonality terms
            rx = tl.load(rec + 1 + dx + dy + rows, mask=sel & ((rows * 0 + kind) == 0), other=0.0)
            ry = tl.load(rec + 1 + dx + dy + N + rows, mask=sel & ((rows * 0 + kind) == 0), other=0.0)
            rsx = tl.where(is_orth, 1.0 / (rx + orth_eps), 1.0)
            rsy = tl.where(is_orth, 1.0 / (ry + orth_eps), 1.0)
            xa = xa * rsx[:, None] * cs_j[None, :]
            yb = yb * rsy[:, None] * cs_k[None, :]
            acc += tl.dot(tl.trans(xa), yb, input_precision=DOT_PREC)
        mst = tl.where(is_orth, acc, acc / denom)
        mm = jok[:, None] & kok[None, :]
        tl.store(m_ptr + moff + cj[:, None] * dy + ck[None, :], mst, mask=mm)
        keep = mm & (is_orth | (cj[:, None] != ck[None, :]))
        tot = tl.sum(tl.sum(tl.where(keep, mst * mst, 0.0), axis=1), axis=0)
        tl.store(part_ptr + p * T + t, tot * _term_scale(is_orth, dx, dy, n))
    else:
        tl.store(part_ptr + p * T + t, 0.0)


# ----------------------------------------------------------------------------------------------
# forward, split path for large N: (1) per row block column sums, (2) per (tile, row block) partial
# Gram with centring / row norms applied on load, (3) per tile: sum of the partial Grams, loss
# ----------------------------------------------------------------------------------------------
@triton.jit
def _sum_kernel(x_ptr, stride_x, mask_ptr, term_ptr, vsum_ptr, N, RB, VSIZE,
                HAS_MASK: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    t = tl.program_id(0)
    s = tl.program_id(1)
    tb = term_ptr + t * TCOLS
    kind = tl.load(tb + 0)
    fx = tl.load(tb + 1)
    fy = tl.load(tb + 2)
    dx = tl.load(tb + 3)
    dy = tl.load(tb + 4)
    offx = tl.load(tb + 5)
    offy = tl.load(tb + 6)
    voff = tl.load(tb + 9)
    r_lo = s * RB
    r_hi = tl.minimum(r_lo + RB, N)
    # per-block vector: [row count, Σ x (dx), Σ y (dy, orthogonality only)]
    out = vsum_ptr + s.to(tl.int64) * VSIZE + voff
    cnt = tl.zeros([BN], dtype=tl.float32)
    for r0 in range(r_lo, r_hi, BN):
        rows = r0 + tl.arange(0, BN)
        cnt += _rows_sel(mask_ptr, fx, fy, rows, r_hi, N, HAS_MASK).to(tl.float32)
    tl.store(out, tl.sum(cnt, axis=0))
    _col_sums(x_ptr, stride_x, mask_ptr, fx, fy, r_lo, r_hi, N, offx, dx, out + 1, 1.0, HAS_MASK, BN, BD)
    if kind == 0:
        _col_sums(x_ptr, stride_x, mask_ptr, fx, fy, r_lo, r_hi, N, offy, dy, out + 1 + dx, 1.0,
                  HAS_MASK, BN, BD)


@triton.jit
def _gram_split_kernel(x_ptr, stride_x, mask_ptr, term_ptr, vsum_ptr, scr_ptr, mpart_ptr, stats_ptr,
                       N, S, RB, VSIZE, M_SIZE, orth_eps,
                       HAS_MASK: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
                       DOT_PREC: tl.constexpr):
    t = tl.program_id(0)
    p = tl.program_id(1)
    s = tl.program_id(2)
    tb = term_ptr + t * TCOLS
    kind = tl.load(tb + 0)
    fx = tl.load(tb + 1)
    fy = tl.load(tb + 2)
    dx = tl.load(tb + 3)
    dy = tl.load(tb + 4)
    offx = tl.load(tb + 5)
    offy = tl.load(tb + 6)
    moff = tl.load(tb + 7)
    soff = tl.load(tb + 8)
    voff = tl.load(tb + 9)
    is_orth = kind == 0
    ntk = tl.cdiv(dy, BD)
    if p < tl.cdiv(dx, BD) * ntk:
        # program (t, 0, 0) writes the saved stats; every program keeps its own means in scratch
        keep = (p == 0) & (s == 0)
        scr = scr_ptr + (p * S + s).to(tl.int64) * VSIZE + voff
        n = 0.0
        for q in range(0, S):
            n += tl.load(vsum_ptr + q * VSIZE + voff)
        denom = tl.maximum(n, 1.0)
        if keep:
            tl.store(stats_ptr + soff, n)
        nv = 1 + dx + tl.where(is_orth, dy, 0)
        for c0 in range(1, nv, BD):
            idx = c0 + tl.arange(0, BD)
            ok = idx < nv
            acc1 = tl.zeros([BD], dtype=tl.float32)
            for q in range(0, S):
                acc1 += tl.load(vsum_ptr + q * VSIZE + voff + idx, mask=ok, other=0.0)
            tl.store(scr + idx, acc1 / denom, mask=ok)
            if keep:
                tl.store(stats_ptr + soff + idx, acc1 / denom, mask=ok)
        tl.debug_barrier()

        jt = p // ntk
        kt = p % ntk
        cj = jt * BD + tl.arange(0, BD)
        jok = cj < dx
        ck = kt * BD + tl.arange(0, BD)
        kok = ck < dy
        mu_j = tl.load(scr + 1 + cj, mask=jok, other=0.0)
        mu_k = tl.load(scr + tl.where(is_orth, 1 + dx, 1) + ck, mask=kok, other=0.0)
        r_lo = s * RB
        r_hi = tl.minimum(r_lo + RB, N)
        acc = tl.zeros([BD, BD], dtype=tl.float32)
        for r0 in range(r_lo, r_hi, BN):
            rows = r0 + tl.arange(0, BN)
            sel = _rows_sel(mask_ptr, fx, fy, rows, r_hi, N, HAS_MASK)
            rsx = tl.full([BN], 1.0, tl.float32)
            rsy = tl.full([BN], 1.0, tl.float32)
            if is_orth:
                # the row norms need whole rows: read them here, once per row step
                sqx = tl.zeros([BN], dtype=tl.float32)
                for c0 in range(0, dx, BD):
                    cols = c0 + tl.arange(0, BD)
                    cok = cols < dx
                    mu = tl.load(scr + 1 + cols, mask=cok, other=0.0)
                    cx = _load_centred(x_ptr, stride_x, rows, sel, cols, cok, offx, mu)
                    sqx += tl.sum(cx * cx, axis=1)
                sqy = tl.zeros([BN], dtype=tl.float32)
                for c0 in range(0, dy, BD):
                    cols = c0 + tl.arange(0, BD)
                    cok = cols < dy
                    mu = tl.load(scr + 1 + dx + cols, mask=cok, other=0.0)
                    cy = _load_centred(x_ptr, stride_x, rows, sel, cols, cok, offy, mu)
                    sqy += tl.sum(cy * cy, axis=1)
                rx = tl.sqrt(sqx)
                ry = tl.sqrt(sqy)
                if p == 0:
                    tl.store(stats_ptr + soff + 1 + dx + dy + rows, rx, mask=rows < r_hi)
                    tl.store(stats_ptr + soff + 1 + dx + dy + N + rows, ry, mask=rows < r_hi)
                rsx = 1.0 / (rx + orth_eps)
                rsy = 1.0 / (ry + orth_eps)
            xa = _load_centred(x_ptr, stride_x, rows, sel, cj, jok, offx, mu_j) * rsx[:, None]
            yb = _load_centred(x_ptr, stride_x, rows, sel, ck, kok, offy, mu_k) * rsy[:, None]
            acc += tl.dot(tl.trans(xa), yb, input_precision=DOT_PREC)
        mm = jok[:, None] & kok[None, :]
        tl.store(mpart_ptr + s.to(tl.int64) * M_SIZE + moff + cj[:, None] * dy + ck[None, :], acc, mask=mm)


@triton.jit
def _finalize_kernel(mpart_ptr, S, M_SIZE, term_ptr, m_ptr, stats_ptr, part_ptr, T, decor_eps,
                     BD: tl.constexpr):
    t = tl.program_id(0)
    p = tl.program_id(1)
    tb = term_ptr + t * TCOLS
    kind = tl.load(tb + 0)
    dx = tl.load(tb + 3)
    dy = tl.load(tb + 4)
    moff = tl.load(tb + 7)
    soff = tl.load(tb + 8)
    is_orth = kind == 0
    ntk = tl.cdiv(dy, BD)
    if p < tl.cdiv(dx, BD) * ntk:
        jt = p // ntk
        kt = p % ntk
        cj = jt * BD + tl.arange(0, BD)
        jok = cj < dx
        ck = kt * BD + tl.arange(0, BD)
        kok = ck < dy
        mm = jok[:, None] & kok[None, :]
        n = tl.load(stats_ptr + soff)
        denom = tl.maximum(n, 1.0)
        acc = tl.zeros([BD, BD], dtype=tl.float32)
        for q in range(0, S):
            acc += tl.load(mpart_ptr + q * M_SIZE + moff + cj[:, None] * dy + ck[None, :], mask=mm, other=0.0)
        if is_orth:
            mst = acc
        else:
            # decorrelation: the split Gram is of the centred, unscaled columns; σ² is its
            # diagonal / n (+ eps), and C = M / (n σ_j σ_k) equals the Gram of the standardised ones
            vj = tl.zeros([BD], dtype=tl.float32)
            vk = tl.zeros([BD], dtype=tl.float32)
            for q in range(0, S):
                vj += tl.load(mpart_ptr + q * M_SIZE + moff + cj * (dx + 1), mask=jok, other=0.0)
                vk += tl.load(mpart_ptr + q * M_SIZE + moff + ck * (dx + 1), mask=kok, other=0.0)
            sj = tl.sqrt(vj / denom + decor_eps)
            sk = tl.sqrt(vk / denom + decor_eps)
            mst = acc / (denom * sj[:, None] * sk[None, :])
            if jt == kt:
                tl.store(stats_ptr + soff + 1 + dx + cj, sj, mask=jok)
        tl.store(m_ptr + moff + cj[:, None] * dy + ck[None, :], mst, mask=mm)
        keepm = mm & (is_orth | (cj[:, None] != ck[None, :]))
        tot = tl.sum(tl.sum(tl.where(keepm, mst * mst, 0.0), axis=1), axis=0)
        tl.store(part_ptr + p * T + t, tot * _term_scale(is_orth, dx, dy, n))
    else:
        tl.store(part_ptr + p * T + t, 0.0)


# ----------------------------------------------------------------------------------------------
# backward kernel 1: per (side, row tile), the gradient before the centring correction
# ----------------------------------------------------------------------------------------------
@triton.jit
def _u_tile(x_ptr, stride_x, rows, sel, cj, jok, off_o, d_o, mu_o_ptr, sig_ptr, is_orth, kind_i,
            rs_o, m_ptr, moff, st_t, st_o, coef, BN: tl.constexpr, BD: tl.constexpr,
            DOT_PREC: tl.constexpr):
    """``U[rows, cj] = Σ_k Ŷ[rows, k] · G[cj, k]`` with ``G = coef · M`` (decor: off-diagonal)."""
    u = tl.zeros([BN, BD], dtype=tl.float32)
    for k0 in range(0, d_o, BD):
        ck = k0 + tl.arange(0, BD)
        kok = ck < d_o
        mu = tl.load(mu_o_ptr + ck, mask=kok, other=0.0)
        co = _load_centred(x_ptr, stride_x, rows, sel, ck, kok, off_o, mu)
        sgk = tl.load(sig_ptr + ck, mask=kok & ((ck * 0 + kind_i) != 0), other=1.0)
        yo = tl.where(is_orth, co * rs_o[:, None], co / sgk[None, :])
        km = kok[:, None] & jok[None, :]
        kt = tl.load(m_ptr + moff + cj[None, :] * st_t + ck[:, None] * st_o, mask=km, other=0.0)
        gt = tl.where(is_orth | (ck[:, None] != cj[None, :]), kt * coef, 0.0)
        u += tl.dot(yo, gt, input_precision=DOT_PREC)
    return u


@triton.jit
def _bwd_kernel(x_ptr, stride_x, mask_ptr, term_ptr, side_ptr, m_ptr, stats_ptr, gout_ptr,
                slab_ptr, stride_slab, psum_ptr, N, orth_eps,
                HAS_MASK: tl.constexpr, DETACH: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
                DOT_PREC: tl.constexpr):
    r = tl.program_id(0)
    s = tl.program_id(1)
    t = tl.load(side_ptr + s * SCOLS)
    first = tl.load(side_ptr + s * SCOLS + 1) == 0
    scol = tl.load(side_ptr + s * SCOLS + 2)
    tb = term_ptr + t * TCOLS
    kind = tl.load(tb + 0)
    fx = tl.load(tb + 1)
    fy = tl.load(tb + 2)
    dx = tl.load(tb + 3)
    dy = tl.load(tb + 4)
    offx = tl.load(tb + 5)
    offy = tl.load(tb + 6)
    moff = tl.load(tb + 7)
    soff = tl.load(tb + 8)
    is_orth = kind == 0
    # "this" side gets the gradient, "other" is the partner factor
    d_t = tl.where(first, dx, dy)
    d_o = tl.where(first, dy, dx)
    off_t = tl.where(first, offx, offy)
    off_o = tl.where(first, offy, offx)
    # G[j_this, k_other] = M[moff + j*st_t + k*st_o]  (M is stored row-major d_x × d_y)
    st_t = tl.where(first, dy, 1)
    st_o = tl.where(first, 1, dy)
    rec = stats_ptr + soff
    n = tl.load(rec)
    denom = tl.maximum(n, 1.0)
    mu_t_ptr = rec + 1 + tl.where(first, 0, dx)
    mu_o_ptr = rec + 1 + tl.where(is_orth & first, dx, 0)
    sig_ptr = rec + 1 + dx
    r_t_ptr = rec + 1 + dx + dy + tl.where(first, 0, N)
    r_o_ptr = rec + 1 + dx + dy + tl.where(first, N, 0)
    g = tl.load(gout_ptr + t).to(tl.float32)
    coef = 2.0 * g * _term_scale(is_orth, dx, dy, n)
    # decor: ∂L/∂Ẑ = 2·diag(w)·Ẑ·G / n  (both Gram slots are Ẑ, G is symmetric)
    cu = tl.where(is_orth, 1.0, 2.0 / denom)

    rows = r * BN + tl.arange(0, BN)
    sel = _rows_sel(mask_ptr, fx, fy, rows, N, N, HAS_MASK)
    # (scalar conditions are broadcast to lanes before joining a load mask: the interpreter
    # rejects scalar & tensor masks)
    orth_rows = sel & ((rows * 0 + kind) == 0)
    rt = tl.load(r_t_ptr + rows, mask=orth_rows, other=0.0)
    ro = tl.load(r_o_ptr + rows, mask=orth_rows, other=0.0)
    rs_t = tl.where(is_orth, 1.0 / (rt + orth_eps), 1.0)
    rs_o = tl.where(is_orth, 1.0 / (ro + orth_eps), 1.0)
    # d‖c‖/dc = c/‖c‖, taken as 0 for an all-zero centred row (as torch's norm backward)
    inv_r = tl.where(rt > 0.0, 1.0 / tl.where(rt > 0.0, rt, 1.0), 0.0)

    # t_i = s_i Σ_j U_ij c_ij: the row-norm path, needed only when the norm is not detached
    tt = tl.zeros([BN], dtype=tl.float32)
    if not DETACH:
        for j0 in range(0, tl.where(is_orth, d_t, 0), BD):
            cj = j0 + tl.arange(0, BD)
            jok = cj < d_t
            mu = tl.load(mu_t_ptr + cj, mask=jok, other=0.0)
            cx = _load_centred(x_ptr, stride_x, rows, sel, cj, jok, off_t, mu)
            u = _u_tile(x_ptr, stride_x, rows, sel, cj, jok, off_o, d_o, mu_o_ptr, sig_ptr, is_orth,
                        kind, rs_o, m_ptr, moff, st_t, st_o, coef, BN, BD, DOT_PREC)
            tt += tl.sum(u * cx, axis=1)
        tt = tt * rs_t * inv_r

    for j0 in range(0, d_t, BD):
        cj = j0 + tl.arange(0, BD)
        jok = cj < d_t
        mu = tl.load(mu_t_ptr + cj, mask=jok, other=0.0)
        cx = _load_centred(x_ptr, stride_x, rows, sel, cj, jok, off_t, mu)
        u = _u_tile(x_ptr, stride_x, rows, sel, cj, jok, off_o, d_o, mu_o_ptr, sig_ptr, is_orth,
                    kind, rs_o, m_ptr, moff, st_t, st_o, coef, BN, BD, DOT_PREC) * cu
        # (a uniform branch per program: no divergence, and no dead work for the other kind)
        if is_orth:
            # orthogonality: dc = s (U − t c/‖c‖)
            dd = rs_t[:, None] * (u - tt[:, None] * cx)
        else:
            # decorrelation: dc = (U − w Ẑ q / n) / σ with
            # q_j = Σ_l U_lj Ẑ_lj = 2 coef Σ_{k≠j} C_jk² (from the saved C, no pass over rows)
            sgj = tl.load(sig_ptr + cj, mask=jok, other=1.0)
            q = tl.zeros([BD], dtype=tl.float32)
            for k0 in range(0, dx, BD):
                ck = k0 + tl.arange(0, BD)
                cm = jok[:, None] & (ck < dx)[None, :]
                c = tl.load(m_ptr + moff + cj[:, None] * dx + ck[None, :], mask=cm, other=0.0)
                q += tl.sum(tl.where(cj[:, None] != ck[None, :], c * c, 0.0), axis=1)
            q = q * (2.0 * coef)
            zs = cx / sgj[None, :]
            dd = (u - zs * (q / denom)[None, :]) / sgj[None, :]
        dd = tl.where(sel[:, None] & jok[None, :], dd, 0.0)
        sm = (rows < N)[:, None] & jok[None, :]
        tl.store(slab_ptr + rows.to(tl.int64)[:, None] * stride_slab + (scol + cj)[None, :], dd, mask=sm)
        tl.store(psum_ptr + r * stride_slab + scol + cj, tl.sum(dd, axis=0), mask=jok)


# ----------------------------------------------------------------------------------------------
# backward kernel 2: per (factor, row tile, column tile), sum the factor's slabs + centring
# ----------------------------------------------------------------------------------------------
@triton.jit
def _reduce_kernel(slab_ptr, stride_slab, psum_ptr, NTN, term_ptr, side_ptr, fac_ptr, fsides_ptr,
                   stats_ptr, mask_ptr, out_ptr, stride_out, N,
                   HAS_MASK: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    r = tl.program_id(0)
    f = tl.program_id(1)
    c = tl.program_id(2)
    off_f = tl.load(fac_ptr + f * FCOLS)
    d_f = tl.load(fac_ptr + f * FCOLS + 1)
    s_begin = tl.load(fac_ptr + f * FCOLS + 2)
    s_end = tl.load(fac_ptr + f * FCOLS + 3)
    cols = c * BD + tl.arange(0, BD)
    cok = cols < d_f
    rows = r * BN + tl.arange(0, BN)
    rok = rows < N
    acc = tl.zeros([BN, BD], dtype=tl.float32)
    for i in range(s_begin, s_end):
        s = tl.load(fsides_ptr + i)
        t = tl.load(side_ptr + s * SCOLS)
        scol = tl.load(side_ptr + s * SCOLS + 2)
        fx = tl.load(term_ptr + t * TCOLS + 1)
        fy = tl.load(term_ptr + t * TCOLS + 2)
        soff = tl.load(term_ptr + t * TCOLS + 8)
        denom = tl.maximum(tl.load(stats_ptr + soff), 1.0)
        sel = _rows_sel(mask_ptr, fx, fy, rows, N, N, HAS_MASK)
        # column sums of the slab over all rows (the centring backward needs the full batch)
        cs = tl.zeros([BD], dtype=tl.float32)
        for rr in range(0, NTN):
            cs += tl.load(psum_ptr + rr * stride_slab + scol + cols, mask=cok, other=0.0)
        sl = tl.load(slab_ptr + rows.to(tl.int64)[:, None] * stride_slab + (scol + cols)[None, :],
                     mask=rok[:, None] & cok[None, :], other=0.0)
        acc += sl - tl.where(sel[:, None], (cs / denom)[None, :], 0.0)
    om = rok[:, None] & cok[None, :]
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_out + (off_f + cols)[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=om)


# ----------------------------------------------------------------------------------------------
# host side: plans (cached tables) and launchers
# ----------------------------------------------------------------------------------------------
# Test hooks: force (BLOCK_N, BLOCK_D), or the number of row blocks of the split forward, to
# exercise the multi-tile loops and the large-N path with small shapes under the interpreter.
_BLOCK_OVERRIDE: tuple[int, int] | None = None
_SPLIT_OVERRIDE: int | None = None

# Split forward on GPU: only above this batch size (FSRF batches keep the single launch), aiming
# at about this many programs, with the partial Gram matrices capped at this many fp32 values.
_SPLIT_MIN_ROWS = 1024
_SPLIT_TARGET_PROGRAMS = 528        # 4 per SM on an H100 (132 SMs)
_SPLIT_MAX_PARTIAL = 1 << 23        # 32 MiB
# Backward: the reduce kernel sums the per-row-tile column sums itself up to this many row tiles;
# beyond, one torch reduction first (keeps the reduce kernel linear in N).
_REDUCE_INLINE_TILES = 8


@dataclass(frozen=True)
class Blocks:
    """Tile sizes and warps of the forward and backward kernels."""

    bn_fwd: int
    bd_fwd: int
    warps_fwd: int
    bn_bwd: int
    bd_bwd: int
    warps_bwd: int


def _blocks(n: int, dmax: int, device: torch.device) -> Blocks:
    if _BLOCK_OVERRIDE is not None:
        bn, bd = _BLOCK_OVERRIDE
        return Blocks(bn, bd, 4, bn, bd, 4)
    if device.type != "cuda":
        # interpreter: cost grows with the number of (program × loop step), not with block size
        bn = min(128, max(16, triton.next_power_of_2(n)))
        bd = min(128, max(16, triton.next_power_of_2(dmax)))
        return Blocks(bn, bd, 4, bn, bd, 4)
    # GPU. Forward: one ≤128×128 fp32 Gram tile per program, so an FSRF term (d ≤ 128) is one
    # program; 32-row K steps. Backward: the fp32 G tile is staged in shared memory for tl.dot,
    # and 128×128 fp32 tiles (×3 pipeline stages) exceed the 227 KB of an H100 SM, so 64×64.
    bd = min(128, max(16, triton.next_power_of_2(dmax)))
    return Blocks(32, bd, 8 if bd >= 128 else 4, 64, min(bd, 64), 4)


def term_list(pairs, decor) -> list[tuple[int, int, int]]:
    """(kind, fx, fy) for every term: pairs first, then decorrelation terms."""
    return [(KIND_ORTH, int(i), int(j)) for i, j in pairs] + [(KIND_DECOR, int(i), int(i)) for i in decor]


def _record_size(kind, dx, dy, n):
    # [n, μ_x, μ_y, r_x, r_y] (orth) or [n, μ, σ] (decor): every slot is written by the forward,
    # so the saved stats are fully defined (no uninitialised memory in an op output)
    return 1 + dx + dy + 2 * n if kind == KIND_ORTH else 1 + 2 * dx


def sizes(widths, terms, n):
    """(M size, stats record size) of a term list; pure integer arithmetic (works on SymInts)."""
    m_size = 0
    st_size = 0
    for kind, i, j in terms:
        m_size = m_size + widths[i] * widths[j]
        st_size = st_size + _record_size(kind, widths[i], widths[j], n)
    return m_size, st_size


@dataclass(frozen=True)
class Plan:
    """Device tables and launch geometry of one (widths, terms, N, device) configuration."""

    n: int
    n_terms: int
    n_sides: int
    n_factors: int
    total_width: int
    dmax: int
    m_size: int
    stats_size: int
    vec_size: int       # split path: Σ (1 + d_x + d_y) per-block sums
    slab_width: int
    tiles: int          # forward programs per term (max tile pairs)
    split: int          # forward row blocks (1: the single-launch path)
    rows_per_block: int
    blocks: Blocks
    term_table: torch.Tensor
    side_table: torch.Tensor
    factor_table: torch.Tensor
    factor_sides: torch.Tensor


def _split(n: int, n_terms: int, tiles: int, m_size: int, bn: int, device: torch.device) -> tuple[int, int]:
    if _SPLIT_OVERRIDE is not None:
        s = _SPLIT_OVERRIDE
    elif device.type != "cuda" or n <= _SPLIT_MIN_ROWS:
        return 1, n
    else:
        s = triton.cdiv(_SPLIT_TARGET_PROGRAMS, max(1, n_terms * tiles))
        s = min(s, triton.cdiv(n, 256), max(1, _SPLIT_MAX_PARTIAL // max(m_size, 1)))
    if s <= 1:
        return 1, n
    rb = triton.cdiv(triton.cdiv(n, s), bn) * bn
    return triton.cdiv(n, rb), rb


@functools.lru_cache(maxsize=256)
def _plan_cached(widths: tuple, terms: tuple, n: int, device: torch.device, blocks: Blocks,
                 split_override) -> Plan:
    bd = blocks.bd_fwd
    offs = [0]
    for w in widths:
        offs.append(offs[-1] + w)
    rows, sides = [], []
    m_off = st_off = v_off = 0
    tiles = 1
    for t, (kind, i, j) in enumerate(terms):
        dx, dy = widths[i], widths[j]
        rows.append([kind, i, j, dx, dy, offs[i], offs[j], m_off, st_off, v_off])
        m_off += dx * dy
        st_off += _record_size(kind, dx, dy, n)
        v_off += 1 + dx + (dy if kind == KIND_ORTH else 0)
        tiles = max(tiles, triton.cdiv(dx, bd) * triton.cdiv(dy, bd))
        sides.append((t, 0, i, dx))
        if kind == KIND_ORTH:
            sides.append((t, 1, j, dy))
    side_rows, slab_col = [], 0
    per_factor: list[list[int]] = [[] for _ in widths]
    for s_, (t, role, f, d) in enumerate(sides):
        side_rows.append([t, role, slab_col])
        slab_col += d
        per_factor[f].append(s_)
    fac_rows, fsides = [], []
    for f, ss in enumerate(per_factor):
        fac_rows.append([offs[f], widths[f], len(fsides), len(fsides) + len(ss)])
        fsides.extend(ss)
    split, rb = _split(n, len(terms), tiles, m_off, blocks.bn_fwd, device)

    def table(data, cols):
        return torch.tensor(data if data else [[0] * cols], dtype=torch.int32, device=device)

    return Plan(n=n, n_terms=len(terms), n_sides=len(sides), n_factors=len(widths),
                total_width=offs[-1], dmax=max(widths), m_size=m_off, stats_size=st_off,
                vec_size=v_off, slab_width=slab_col, tiles=tiles, split=split, rows_per_block=rb,
                blocks=blocks, term_table=table(rows, 10), side_table=table(side_rows, 3),
                factor_table=table(fac_rows, 4),
                factor_sides=torch.tensor(fsides if fsides else [0], dtype=torch.int32, device=device))


def plan(widths, terms, n: int, device: torch.device) -> Plan:
    """The cached :class:`Plan` for these factor widths, terms and batch size."""
    widths = tuple(int(w) for w in widths)
    device = torch.device(device)
    blocks = _blocks(n, max(widths), device)
    return _plan_cached(widths, tuple(terms), int(n), device, blocks, _SPLIT_OVERRIDE)


def _dot_prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def forward(packed: torch.Tensor, masks: torch.Tensor | None, pl: Plan, orth_eps: float,
            decor_eps: float):
    """Launch the grouped forward. Returns (per-term losses fp32 (T,), M fp32, stats fp32).

    One kernel launch when ``pl.split == 1`` (always for N ≤ 1024); otherwise three (column sums,
    partial Grams per row block, finalisation)."""
    with _launch.on_device(packed):
        return _forward(packed, masks, pl, orth_eps, decor_eps)


def _forward(packed, masks, pl, orth_eps, decor_eps):
    dev = packed.device
    T = pl.n_terms
    bk = pl.blocks
    mask_arg = masks if masks is not None else packed
    has_mask = masks is not None
    m = torch.empty(max(pl.m_size, 1), dtype=torch.float32, device=dev)[: pl.m_size]
    part = torch.empty((pl.tiles, T), dtype=torch.float32, device=dev)
    if pl.split == 1:
        # every program keeps its own stats record (no cross-program sync); row 0 is returned
        stats = torch.empty((pl.tiles, max(pl.stats_size, 1)), dtype=torch.float32, device=dev)
        if T > 0:
            _fwd_kernel[(T, pl.tiles)](
                packed, packed.stride(0), mask_arg, pl.term_table, m, stats, part,
                pl.n, T, stats.stride(0), float(orth_eps), float(decor_eps),
                HAS_MASK=has_mask, BN=bk.bn_fwd, BD=bk.bd_fwd, DOT_PREC=_dot_prec(packed.dtype),
                num_warps=bk.warps_fwd)
        stats = stats[0, : pl.stats_size]
    else:
        S = pl.split
        stats = torch.empty(max(pl.stats_size, 1), dtype=torch.float32, device=dev)[: pl.stats_size]
        vsum = torch.empty((S, pl.vec_size), dtype=torch.float32, device=dev)
        scr = torch.empty((pl.tiles * S, pl.vec_size), dtype=torch.float32, device=dev)
        mpart = torch.empty((S, pl.m_size), dtype=torch.float32, device=dev)
        _sum_kernel[(T, S)](packed, packed.stride(0), mask_arg, pl.term_table, vsum, pl.n,
                            pl.rows_per_block, pl.vec_size, HAS_MASK=has_mask, BN=bk.bn_fwd,
                            BD=bk.bd_fwd, num_warps=4)
        _gram_split_kernel[(T, pl.tiles, S)](
            packed, packed.stride(0), mask_arg, pl.term_table, vsum, scr, mpart, stats,
            pl.n, S, pl.rows_per_block, pl.vec_size, pl.m_size, float(orth_eps),
            HAS_MASK=has_mask, BN=bk.bn_fwd, BD=bk.bd_fwd, DOT_PREC=_dot_prec(packed.dtype),
            num_warps=bk.warps_fwd)
        _finalize_kernel[(T, pl.tiles)](mpart, S, pl.m_size, pl.term_table, m, stats, part, T,
                                        float(decor_eps), BD=bk.bd_fwd, num_warps=bk.warps_fwd)
    loss = part[0] if pl.tiles == 1 else part.sum(dim=0)
    return loss, m, stats


#: CUDA's limit on grid axes 1 and 2 (axis 0 takes up to 2³¹ − 1 programs).
MAX_GRID_YZ = 65535


def backward_grids(n: int, n_sides: int, n_factors: int, dmax: int, blocks: Blocks):
    """The launch grids of the two backward kernels for N = ``n`` rows: ``(row tiles, sides)``
    and ``(row tiles, factors, column tiles)``. Only the row tiles grow with N, so they are on
    axis 0; the other axes stay far below :data:`MAX_GRID_YZ`."""
    ntn = triton.cdiv(n, blocks.bn_bwd)
    return (ntn, n_sides), (ntn, n_factors, triton.cdiv(dmax, blocks.bd_bwd))


def backward(grad_loss: torch.Tensor, packed: torch.Tensor, masks: torch.Tensor | None,
             m: torch.Tensor, stats: torch.Tensor, pl: Plan, detach_norm: bool,
             orth_eps: float) -> torch.Tensor:
    """Launch the grouped backward; returns the packed gradient (N, Σd) in ``packed.dtype``."""
    with _launch.on_device(packed):
        return _backward(grad_loss, packed, masks, m, stats, pl, detach_norm, orth_eps)


def _backward(grad_loss, packed, masks, m, stats, pl, detach_norm, orth_eps):
    dev = packed.device
    N = pl.n
    out = torch.empty((N, pl.total_width), dtype=packed.dtype, device=dev)
    if pl.n_sides == 0:
        return out.zero_()
    bk = pl.blocks
    grid_bwd, grid_reduce = backward_grids(N, pl.n_sides, pl.n_factors, pl.dmax, bk)
    ntn = grid_bwd[0]
    slab = torch.empty((N, pl.slab_width), dtype=torch.float32, device=dev)
    psum = torch.empty((ntn, pl.slab_width), dtype=torch.float32, device=dev)
    gout = grad_loss.detach().to(torch.float32).contiguous()
    mask_arg = masks if masks is not None else packed
    _bwd_kernel[grid_bwd](
        packed, packed.stride(0), mask_arg, pl.term_table, pl.side_table, m, stats, gout,
        slab, slab.stride(0), psum, N, float(orth_eps),
        HAS_MASK=masks is not None, DETACH=bool(detach_norm), BN=bk.bn_bwd, BD=bk.bd_bwd,
        DOT_PREC=_dot_prec(packed.dtype), num_warps=bk.warps_bwd)
    n_psum = ntn
    if ntn > _REDUCE_INLINE_TILES:
        psum, n_psum = psum.sum(dim=0, keepdim=True), 1
    _reduce_kernel[grid_reduce](
        slab, slab.stride(0), psum, n_psum, pl.term_table, pl.side_table, pl.factor_table,
        pl.factor_sides, stats, mask_arg, out, out.stride(0), N,
        HAS_MASK=masks is not None, BN=bk.bn_bwd, BD=bk.bd_bwd, num_warps=4)
    return out
