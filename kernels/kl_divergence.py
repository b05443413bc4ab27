"""Triton kernels of :func:`fsrf.ops.kl_divergence`: fused temperature-scaled (symmetric) KL.

One program per row of ``(R, C)`` logits. The row's two log-softmaxes come from an online
max/sum pass over ``C`` in ``BLOCK`` chunks (a single register-resident pass when the row fits
one block); a second pass accumulates the KL of the row and, in the same pass, writes
``dloss/dlogits`` for unit upstream gradient (Liger's JSD pattern). Without ``detach_target`` the
target-side gradient needs the row's KL value, so a third pass writes it (skipped when the row fits
one block). The autograd backward is then a multiplication by ``grad_output`` on the device.

Gradients, per row, with ``a = log p_t``, ``b = log p_s`` (both of ``logits / T``), scaled by
``T / R`` (``T²`` of the loss times ``1/T`` of the softmax, over ``R`` rows)::

    d/ds = (p_s − p_t) + [symmetric and not detach] p_s (b − a − KL(s‖t))
    d/dt = [not detach] p_t (a − b − KL(t‖s)) + [symmetric] (p_t − p_s)

Inputs of any float dtype are upcast to the accumulation dtype (float32; float64 for float64
input) right after ``tl.load``; gradients are stored in the input dtype. The temperature reaches
the kernel as a float32 scalar (Triton's type for a Python float), so with float64 inputs a ``T``
that float32 cannot represent exactly (e.g. 0.3) costs ~1e-7 relative accuracy.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _launch

__all__ = ["kl_divergence_forward"]

# Largest column block held in registers: 8192 fp32 per input over 16 warps on a GPU (16 values
# per thread per input). Under the interpreter the cost is per loop iteration, so big is good too.
MAX_BLOCK = 8192


@triton.jit
def _log_probs(s_ptr, t_ptr, cols, C, inv_temp, lse_s, lse_t, ACC: tl.constexpr):
    """log p_s, log p_t, p_s, p_t of one chunk (zeros in masked lanes)."""
    mask = cols < C
    s = tl.load(s_ptr + cols, mask=mask, other=0.0).to(ACC) * inv_temp
    t = tl.load(t_ptr + cols, mask=mask, other=0.0).to(ACC) * inv_temp
    b = tl.where(mask, s - lse_s, 0.0)
    a = tl.where(mask, t - lse_t, 0.0)
    ps = tl.where(mask, tl.exp(b), 0.0)
    pt = tl.where(mask, tl.exp(a), 0.0)
    return a, b, pt, ps, mask


@triton.jit
def _store_grads(ds_ptr, dt_ptr, cols, mask, a, b, pt, ps, kl_f, kl_r, grad_scale,
                 SYMMETRIC: tl.constexpr, DETACH: tl.constexpr, NEED_DS: tl.constexpr,
                 NEED_DT: tl.constexpr):
    if NEED_DS:
        ds = ps - pt
        if SYMMETRIC and not DETACH:
            ds += ps * (b - a - kl_r)
        tl.store(ds_ptr + cols, (ds * grad_scale).to(ds_ptr.dtype.element_ty), mask=mask)
    if NEED_DT:
        dt = tl.zeros_like(pt)
        if not DETACH:
            dt += pt * (a - b - kl_f)
        if SYMMETRIC:
            dt += pt - ps
        tl.store(dt_ptr + cols, (dt * grad_scale).to(dt_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _kl_fwd_kernel(S, T, LOSS, DS, DT, stride_s, stride_t, stride_ds, stride_dt, C, temp,
                   SYMMETRIC: tl.constexpr, DETACH: tl.constexpr, NEED_DS: tl.constexpr,
                   NEED_DT: tl.constexpr, BLOCK: tl.constexpr, ONE_CHUNK: tl.constexpr,
                   ACC: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride can pass 2³¹
    # scale factors in the accumulation dtype (a float scalar argument arrives as fp32)
    temp_acc = tl.full((), 1.0, ACC) * temp
    n_rows = tl.num_programs(0).to(ACC)
    inv_temp = 1.0 / temp_acc
    loss_scale = temp_acc * temp_acc / n_rows
    grad_scale = temp_acc / n_rows
    s_ptr = S + row * stride_s
    t_ptr = T + row * stride_t
    ds_ptr = DS + row * stride_ds
    dt_ptr = DT + row * stride_dt
    offs = tl.arange(0, BLOCK)

    if ONE_CHUNK:
        # the whole row lives in registers: read once, write once
        mask = offs < C
        s = tl.load(s_ptr + offs, mask=mask, other=float("-inf")).to(ACC) * inv_temp
        t = tl.load(t_ptr + offs, mask=mask, other=float("-inf")).to(ACC) * inv_temp
        ms = tl.max(s, axis=0)
        mt = tl.max(t, axis=0)
        lse_s = ms + tl.log(tl.sum(tl.exp(s - ms), axis=0))
        lse_t = mt + tl.log(tl.sum(tl.exp(t - mt), axis=0))
        b = tl.where(mask, s - lse_s, 0.0)
        a = tl.where(mask, t - lse_t, 0.0)
        ps = tl.where(mask, tl.exp(b), 0.0)
        pt = tl.where(mask, tl.exp(a), 0.0)
        kl_f = tl.sum(pt * (a - b), axis=0)
        kl_r = tl.sum(ps * (b - a), axis=0)
        _store_grads(ds_ptr, dt_ptr, offs, mask, a, b, pt, ps, kl_f, kl_r, grad_scale,
                     SYMMETRIC, DETACH, NEED_DS, NEED_DT)
    else:
        # pass 1: online max / sum of exp for both rows (a scalar running max per row; every
        # chunk holds at least one valid column, so the max is finite after the first chunk)
        ms = tl.full((), float("-inf"), ACC)
        mt = tl.full((), float("-inf"), ACC)
        zs = tl.zeros((), ACC)
        zt = tl.zeros((), ACC)
        for c0 in range(0, C, BLOCK):
            cols = c0 + offs
            mask = cols < C
            s = tl.load(s_ptr + cols, mask=mask, other=float("-inf")).to(ACC) * inv_temp
            t = tl.load(t_ptr + cols, mask=mask, other=float("-inf")).to(ACC) * inv_temp
            ms_new = tl.maximum(ms, tl.max(s, axis=0))
            mt_new = tl.maximum(mt, tl.max(t, axis=0))
            zs = zs * tl.exp(ms - ms_new) + tl.sum(tl.exp(s - ms_new), axis=0)
            zt = zt * tl.exp(mt - mt_new) + tl.sum(tl.exp(t - mt_new), axis=0)
            ms = ms_new
            mt = mt_new
        lse_s = ms + tl.log(zs)
        lse_t = mt + tl.log(zt)
        # pass 2: the row's KL; the gradient too when it does not need the KL value
        kl_f = tl.zeros((), ACC)
        kl_r = tl.zeros((), ACC)
        for c0 in range(0, C, BLOCK):
            a, b, pt, ps, mask = _log_probs(s_ptr, t_ptr, c0 + offs, C, inv_temp, lse_s, lse_t, ACC)
            kl_f += tl.sum(pt * (a - b), axis=0)
            kl_r += tl.sum(ps * (b - a), axis=0)
            if DETACH:
                _store_grads(ds_ptr, dt_ptr, c0 + offs, mask, a, b, pt, ps, kl_f, kl_r, grad_scale,
                             SYMMETRIC, DETACH, NEED_DS, NEED_DT)
        if not DETACH:
            # pass 3: target-side gradients use the finished row KL
            for c0 in range(0, C, BLOCK):
                a, b, pt, ps, mask = _log_probs(s_ptr, t_ptr, c0 + offs, C, inv_temp, lse_s, lse_t, ACC)
                _store_grads(ds_ptr, dt_ptr, c0 + offs, mask, a, b, pt, ps, kl_f, kl_r, grad_scale,
                             SYMMETRIC, DETACH, NEED_DS, NEED_DT)

    row_kl = kl_f
    if SYMMETRIC:
        row_kl += kl_r
    tl.store(LOSS + row, row_kl * loss_scale)


def _num_warps(block: int) -> int:
    if block <= 1024:
        return 4
    if block <= 4096:
        return 8
    return 16


def kl_divergence_forward(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                          symmetric: bool, detach_target: bool, need_grad_student: bool,
                          need_grad_teacher: bool, block: int | None = None):
    """Launch the fused kernel on 2-D ``(R, C)`` logits.

    Returns ``(loss, d_student, d_teacher)``: the 0-dim loss in the accumulation dtype and the
    gradients of the loss (for unit upstream gradient) in the input dtype, or empty ``(0,)``
    tensors where not requested. ``block`` overrides the column block (tests use it to reach the
    multi-chunk path with small ``C``).
    """
    R, C = student.shape
    if student.stride(1) != 1:
        student = student.contiguous()
    if teacher.stride(1) != 1:
        teacher = teacher.contiguous()
    acc = torch.float64 if student.dtype == torch.float64 else torch.float32
    ACC = tl.float64 if acc == torch.float64 else tl.float32
    dev = student.device
    # separate placeholders: custom-op outputs must not alias each other
    ds = (torch.empty_like(student, memory_format=torch.contiguous_format) if need_grad_student
          else student.new_empty((0,)))
    dt = (torch.empty_like(teacher, memory_format=torch.contiguous_format) if need_grad_teacher
          else teacher.new_empty((0,)))
    row_loss = torch.empty((R,), device=dev, dtype=acc)
    BLOCK = block or min(MAX_BLOCK, triton.next_power_of_2(C))
    T = float(temperature)
    # rows are grid axis 0 (up to 2³¹ − 1 programs); the launch runs on the inputs' device
    with _launch.on_device(student):
        _kl_fwd_kernel[(R,)](
            student, teacher, row_loss, ds, dt,
            student.stride(0), teacher.stride(0),
            ds.stride(0) if need_grad_student else 0, dt.stride(0) if need_grad_teacher else 0, C,
            T,
            SYMMETRIC=bool(symmetric), DETACH=bool(detach_target),
            NEED_DS=bool(need_grad_student), NEED_DT=bool(need_grad_teacher),
            BLOCK=BLOCK, ONE_CHUNK=C <= BLOCK, ACC=ACC, num_warps=_num_warps(BLOCK),
        )
        return row_loss.sum(), ds, dt
