"""Pure-PyTorch reference of :func:`fsrf.ops.kl_divergence` (also its ``torch`` backend).

Semantics (FSRF method §4, representation KL of the self-distillation):

* every row of the last dimension is one distribution: inputs of shape ``(..., C)`` are read as
  ``R = prod(...)`` rows of ``C`` logits;
* ``p = softmax(logits / T)`` computed from a numerically stable ``log_softmax``;
* ``loss = T² · mean_rows Σ_c p_t (log p_t − log p_s)``, i.e. KL(teacher ‖ student), "batchmean";
* ``symmetric=True`` adds the reverse direction KL(student ‖ teacher) with the same scaling;
* ``detach_target=True`` stops the gradient into the target side of each direction, so each input
  only receives gradient from the direction in which it is the prediction.

The computation runs in float32 for float16 / bfloat16 / float32 inputs and in float64 for
float64 inputs (so ``gradcheck`` can run in double precision); the result is a 0-dim tensor of
that dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["kl_divergence", "compute_dtype"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the loss is computed and returned in: float64 stays float64, the rest use float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _direction(log_target: Tensor, log_pred: Tensor, detach_target: bool) -> Tensor:
    """Σ_rows Σ_c p_target (log p_target − log p_pred) (summed over all rows)."""
    if detach_target:
        log_target = log_target.detach()
    # kl_div with log_target computes exp(t)·(t − p) in one fused elementwise pass
    return F.kl_div(log_pred, log_target, reduction="sum", log_target=True)


def kl_divergence(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 1.0,
                  symmetric: bool = False, detach_target: bool = True) -> Tensor:
    """Temperature-scaled KL(softmax(teacher/T) ‖ softmax(student/T)) · T², averaged over rows.

    No input validation here; :func:`fsrf.ops.kl_divergence` validates and dispatches.
    """
    acc = compute_dtype(student_logits.dtype)
    rows = student_logits.numel() // student_logits.shape[-1]
    log_ps = torch.log_softmax(student_logits.to(acc) / temperature, dim=-1)
    log_pt = torch.log_softmax(teacher_logits.to(acc) / temperature, dim=-1)
    total = _direction(log_pt, log_ps, detach_target)
    if symmetric:
        total = total + _direction(log_ps, log_pt, detach_target)
    return total * (temperature * temperature / rows)
