"""Triton backend of :func:`fsrf.ops.factor_constraints`: every orthogonality and decorrelation
term of a list of factors in one forward launch (and two backward launches).

The kernels themselves live in :mod:`fsrf.kernels._gram`; this module packs the factors and
builds the term list. It is the one kernel entry of the Gram op family: ``orthogonality_loss``
and ``decorrelation_loss`` reach it as one-term calls of ``factor_constraints``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from . import _gram

__all__ = ["forward", "backward"]


def _pack(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    # One (N, Σd_i) buffer: every term then addresses its factors by column offset (see _gram).
    return torch.cat(list(factors), dim=1).contiguous()


def _masks_u8(masks: torch.Tensor | None) -> torch.Tensor | None:
    # (F, N) bool -> uint8 view, no copy (Triton loads bytes; 0 = unobserved)
    return None if masks is None else masks.contiguous().view(torch.uint8)


def forward(factors: Sequence[torch.Tensor], pairs: Sequence[tuple[int, int]], decorrelate: Sequence[int],
            masks: torch.Tensor | None, orth_eps: float, decor_eps: float):
    """Per-term losses (T,) in the factors' dtype, plus what the backward needs: (packed, M, stats)."""
    packed = _pack(factors)
    widths = [f.shape[1] for f in factors]
    terms = _gram.term_list(pairs, decorrelate)
    pl = _gram.plan(widths, terms, packed.shape[0], packed.device)
    loss, m, stats = _gram.forward(packed, _masks_u8(masks), pl, orth_eps, decor_eps)
    return loss.to(packed.dtype), packed, m, stats


def backward(grad: torch.Tensor, packed: torch.Tensor, masks: torch.Tensor | None, m: torch.Tensor,
             stats: torch.Tensor, widths: Sequence[int], pairs: Sequence[tuple[int, int]],
             decorrelate: Sequence[int], detach_norm: bool, orth_eps: float) -> torch.Tensor:
    """Gradient of ``Σ_t grad[t] · loss[t]`` w.r.t. the packed factors, (N, Σd) in their dtype."""
    terms = _gram.term_list(pairs, decorrelate)
    pl = _gram.plan(widths, terms, packed.shape[0], packed.device)
    return _gram.backward(grad, packed, _masks_u8(masks), m, stats, pl, detach_norm, orth_eps)
