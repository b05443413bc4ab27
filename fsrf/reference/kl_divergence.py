"""Pure-PyTorch reference of :func:`fsrf.ops.kl_divergence` (also its ``torch`` backend).

Semantics (FSRF method §4, representation KL of the self-distillation):

* every row of the last dimension is one distribution: inputs of shape ``(..., C)`` are read as
  ``R = prod(...)`` rows of ``C`` logits;
* ``p = softmax(logits / T)`` computed from a numerically stable ``log_softmax``;
* ``loss = T² · mean_rows Σ_c p_t (log p_t − log p_s)``, i.e. KL(teacher ‖ student), "batchmean";
* ``symmetric=True`` adds the reverse direction KL(student ‖ teacher) with the same scaling;
* ``detach_target=True`` stops the gradient into the target side of each direction, so each input
  only receives gradient from the direction in which it is the prediction.

The gradients are written out (``_KL``) rather than traced by autograd: a few elementwise passes,
which is most of what this loss costs at FSRF's sizes.

The computation runs in float32 for float16 / bfloat16 / float32 inputs and in float64 for
float64 inputs (so ``gradcheck`` can run in double precision); the result is a 0-dim tensor of
that dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsrf.reference._amp import full_precision

__all__ = ["kl_divergence", "compute_dtype"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the loss is computed and returned in: float64 stays float64, the rest use float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class _KL(torch.autograd.Function):
    """The loss on 2-D (R, C) logits in the compute dtype, with the analytic gradients
    (``f_row = Σ_c p_t (log p_t − log p_s)``): ``∂f/∂z_s = (p_s − p_t) / T`` for the prediction
    and, when the target is not detached, ``∂f/∂z_t = p_t ∘ (log p_t − log p_s − f_row) / T``;
    the reverse direction swaps the roles. Everything is scaled by ``T² / R``."""

    @staticmethod
    @full_precision
    def forward(ctx, s: Tensor, t: Tensor, temperature: float, symmetric: bool, detach_target: bool) -> Tensor:
        inv_t = 1.0 / temperature
        # in place where a buffer is not needed again: four R×C buffers at the peak, as eager
        log_ps = torch.log_softmax(s * inv_t, dim=-1)
        log_pt = torch.log_softmax(t * inv_t, dim=-1)
        pt = log_pt.exp()
        diff = log_pt.sub_(log_ps)  # log p_t − log p_s
        ps = log_ps.exp_()
        # Σ p_t (lt − ls) + Σ p_s (ls − lt) = −Σ (p_s − p_t)(lt − ls)
        if detach_target:  # each gradient is ±(p_s − p_t): nothing else is needed
            pd = ps.sub_(pt)
            ctx.save_for_backward(pd)
        else:
            pd = ps - pt
            ctx.save_for_backward(pd, ps, pt, diff)
        total = (-torch.dot(pd.reshape(-1), diff.reshape(-1)) if symmetric
                 else torch.dot(pt.reshape(-1), diff.reshape(-1)))
        ctx.args = (temperature, symmetric, detach_target)
        return total * (temperature * temperature / s.shape[0])

    @staticmethod
    @full_precision
    def backward(ctx, grad: Tensor):
        pd, *full = ctx.saved_tensors
        temperature, symmetric, detach_target = ctx.args
        scale = grad * (temperature / pd.shape[0])
        need_s, need_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # each input is the prediction in one direction: ±(p_s − p_t) / T
        gs = pd if need_s else None
        gt = -pd if need_t and symmetric else None
        if not detach_target:
            ps, pt, diff = full
            if need_t:  # the teacher as the target of the forward direction
                f1 = (pt * diff).sum(-1, keepdim=True)
                extra = pt * (diff - f1)
                gt = extra if gt is None else gt + extra
            if need_s and symmetric:  # the student as the target of the reverse direction
                f2 = (ps * diff).sum(-1, keepdim=True)  # = −Σ p_s (ls − lt)
                gs = gs - ps * (diff - f2)
        gs = None if gs is None else gs * scale
        gt = None if gt is None else gt * scale
        return gs, gt, None, None, None


def kl_divergence(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0,
                  symmetric: bool = False, detach_target: bool = True) -> Tensor:
    """Temperature-scaled KL(softmax(teacher/T) ‖ softmax(student/T)) · T², averaged over rows.

    No input validation here; :func:`fsrf.ops.kl_divergence` validates and dispatches.
    """
    acc = compute_dtype(student_logits.dtype)
    C = student_logits.shape[-1]
    s = student_logits.reshape(-1, C).to(acc)
    t = teacher_logits.reshape(-1, C).to(acc)
    return _KL.apply(s, t, float(temperature), symmetric, detach_target)
