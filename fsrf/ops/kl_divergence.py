"""Temperature-scaled (optionally symmetric) KL divergence between rows of logits.

``fsrf.ops.kl_divergence`` is the representation KL of FSRF's self-distillation (method §4):
``T² · mean_rows KL(softmax(teacher/T) ‖ softmax(student/T))``, plus the reverse direction when
``symmetric``. Backends: ``torch`` (:mod:`fsrf.reference.kl_divergence`) and ``triton``
(:mod:`fsrf.kernels.kl_divergence`, one fused row-wise kernel that writes the gradient in the
forward), registered as the custom op ``fsrf::kl_divergence`` so ``torch.compile`` treats it as
one opaque node.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fsrf.ops._common import check_flag, check_positive
from fsrf.reference import kl_divergence as _ref
from fsrf.runtime import backend as _backend
from fsrf.runtime.checks import check_finite, check_same, check_tensor

__all__ = ["kl_divergence"]

OP = "kl_divergence"
IMPLEMENTED = ("torch", "triton")


# --------------------------------------------------------------------------------------------
# custom op (Triton backend)
# --------------------------------------------------------------------------------------------

@torch.library.custom_op("fsrf::kl_divergence", mutates_args=())
def _kl_op(student: Tensor, teacher: Tensor, temperature: float, symmetric: bool,
           detach_target: bool, need_grad_student: bool,
           need_grad_teacher: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Fused KL on 2-D ``(R, C)`` logits: ``(loss, dloss/dstudent, dloss/dteacher)``.

    The gradients are for unit upstream gradient, in the input dtype; an empty ``(0,)`` tensor
    stands for a gradient that was not requested.
    """
    from fsrf.kernels.kl_divergence import kl_divergence_forward

    return kl_divergence_forward(student, teacher, temperature, symmetric, detach_target,
                                 need_grad_student, need_grad_teacher)


@_kl_op.register_fake
def _kl_op_fake(student, teacher, temperature, symmetric, detach_target, need_grad_student,
                need_grad_teacher):
    loss = student.new_empty((), dtype=_ref.compute_dtype(student.dtype))
    ds = (torch.empty_like(student, memory_format=torch.contiguous_format) if need_grad_student
          else student.new_empty((0,)))
    dt = (torch.empty_like(teacher, memory_format=torch.contiguous_format) if need_grad_teacher
          else teacher.new_empty((0,)))
    return loss, ds, dt


def _kl_setup_context(ctx, inputs, output):
    ctx.need = (inputs[5], inputs[6])
    ctx.save_for_backward(output[1], output[2])


def _kl_backward(ctx, grad_loss, _grad_ds, _grad_dt):
    ds, dt = ctx.saved_tensors
    # a device-side multiply (no host check of grad_loss == 1); computed in fp32, stored in the
    # gradient's dtype because a 0-dim tensor does not promote the dtype of a full one
    gs = ds * grad_loss if ctx.need[0] else None
    gt = dt * grad_loss if ctx.need[1] else None
    return gs, gt, None, None, None, None, None


_kl_op.register_autograd(_kl_backward, setup_context=_kl_setup_context)


# --------------------------------------------------------------------------------------------
# public op
# --------------------------------------------------------------------------------------------

def _validate(student_logits, teacher_logits, temperature, symmetric, detach_target) -> None:
    for t, name in ((student_logits, "student_logits"), (teacher_logits, "teacher_logits")):
        check_tensor(t, name, floating=True)
        if t.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (..., C), rows being "
                             f"distributions over the last dim; got shape {tuple(t.shape)}")
        if t.numel() == 0:
            raise ValueError(f"{name} must hold at least one row of at least one logit; got shape "
                             f"{tuple(t.shape)}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher_logits must have the shape of student_logits "
                         f"{tuple(student_logits.shape)}; got {tuple(teacher_logits.shape)}")
    check_same({"student_logits": student_logits, "teacher_logits": teacher_logits})
    check_positive(temperature, "temperature")
    check_flag(symmetric, "symmetric")
    check_flag(detach_target, "detach_target")
    check_finite(student_logits, "student_logits")
    check_finite(teacher_logits, "teacher_logits")


def kl_divergence(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0,
                  symmetric: bool = False, detach_target: bool = True,
                  backend: str = "auto") -> Tensor:
    """``T² · mean_rows Σ_c p_t (log p_t − log p_s)`` with ``p = softmax(logits / T)``.

    Args:
        student_logits: ``(..., C)`` logits of the prediction; every slice along the last dim is
            one distribution, so the loss averages over all ``prod(...)`` rows ("batchmean").
        teacher_logits: ``(..., C)`` logits of the target, same shape, dtype and device.
        temperature: ``T > 0``; both softmaxes use ``logits / T`` and the loss is scaled by ``T²``
            (so gradient magnitudes do not shrink with ``T``, as in Hinton et al.).
        symmetric: add the reverse direction ``KL(p_s ‖ p_t)`` (student as target).
        detach_target: no gradient into the target side of each direction: without
            ``symmetric`` the teacher gets none; with it, each input gets gradient only from the
            direction in which it is the prediction.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see :mod:`fsrf.runtime.backend`).

    Returns:
        A 0-dim tensor, float32 for float16 / bfloat16 / float32 inputs (computed in float32
        from a stable log-softmax) and float64 for float64 inputs. Gradients come back in the
        inputs' dtype.

    Raises:
        TypeError: non-tensor or non-floating inputs, mismatched dtypes, a non-real temperature,
            non-bool flags.
        ValueError: fewer than 2 dims, empty inputs, mismatched shapes or devices,
            ``temperature <= 0`` or non-finite, NaN/Inf in the inputs (see
            :func:`fsrf.set_check_finite`), an unavailable backend.
    """
    _validate(student_logits, teacher_logits, temperature, symmetric, detach_target)
    be = _backend.resolve(OP, backend, student_logits.device, IMPLEMENTED)
    if be == "triton":
        C = student_logits.shape[-1]
        grad_on = torch.is_grad_enabled()
        need_s = grad_on and student_logits.requires_grad
        # the teacher is a prediction only in the reverse direction, a target (possibly detached)
        # in the forward one
        need_t = grad_on and teacher_logits.requires_grad and (symmetric or not detach_target)
        loss, _, _ = torch.ops.fsrf.kl_divergence(
            student_logits.reshape(-1, C), teacher_logits.reshape(-1, C), float(temperature),
            symmetric, detach_target, need_s, need_t)
        return loss
    return _ref.kl_divergence(student_logits, teacher_logits, temperature=float(temperature),
                              symmetric=symmetric, detach_target=detach_target)
