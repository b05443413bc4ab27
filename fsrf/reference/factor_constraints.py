"""Pure-PyTorch reference of :func:`fsrf.ops.factor_constraints`: a Python loop over the terms.

Term ``k`` of the result is, for ``k < len(pairs)``, ``orthogonality_loss`` of the pair's two
factors over the rows observed in both; then ``decorrelation_loss`` of each listed factor over its
observed rows. Row selection uses 0/1 weights (no boolean indexing, so no host sync).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from fsrf.reference.decorrelation import decorrelation_loss
from fsrf.reference.orthogonality import orthogonality_loss

__all__ = ["factor_constraints"]


def factor_constraints(factors: Sequence[Tensor], pairs: Sequence[tuple[int, int]],
                       decorrelate: Sequence[int], *, masks: Sequence[Tensor | None] | None = None,
                       detach_norm: bool = True, orth_eps: float = 1e-6,
                       decor_eps: float = 1e-5) -> Tensor:
    """1-D tensor of per-term losses: the pairs' orthogonality terms, then the decorrelation terms."""
    masks = list(masks) if masks is not None else [None] * len(factors)

    def weight(*idx):
        ms = [masks[i] for i in idx if masks[i] is not None]
        if not ms:
            return None
        w = ms[0]
        for m in ms[1:]:
            w = w & m
        return w

    terms = []
    for i, j in pairs:
        terms.append(orthogonality_loss(factors[i], factors[j], detach_norm=detach_norm, eps=orth_eps,
                                        weight=weight(i, j)))
    for i in decorrelate:
        terms.append(decorrelation_loss(factors[i], eps=decor_eps, weight=weight(i)))
    if not terms:
        # an empty result that is still part of the graph, so .backward() on its sum works
        return factors[0].sum().reshape(1)[:0]
    return torch.stack(terms)
