"""Pure-PyTorch reference of :func:`fsrf.ops.factor_constraints`: the terms batched by width.

Term ``k`` of the result is, for ``k < len(pairs)``, ``orthogonality_loss`` of the pair's two
factors over the rows observed in both; then ``decorrelation_loss`` of each listed factor over its
observed rows. Row selection uses 0/1 weights (no boolean indexing, so no host sync).

Terms whose factors have the same widths are stacked and computed together by
:mod:`fsrf.reference.gram` (a dozen batched ops for any number of terms, analytic backward), so
FSRF's 18 to 21 terms cost about as much as one; terms of large factors (over
:data:`BATCH_ENTRIES` entries) run one by one on the factors themselves, without stacked copies.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from fsrf.reference.gram import decorrelation_terms, orthogonality_terms

__all__ = ["factor_constraints"]


def _stack_weights(masks: list, groups: list[tuple[int, ...]], n: int, like: Tensor) -> Tensor | None:
    """(T, N) 0/1 weights of the terms (the rows every factor of a term observes), or None when
    no term has a mask."""
    if all(masks[i] is None for idx in groups for i in idx):
        return None
    ones = None
    rows = []
    for idx in groups:
        w = None
        for i in idx:
            if masks[i] is not None:
                w = masks[i] if w is None else w & masks[i]
        if w is None:
            if ones is None:
                ones = torch.ones(n, dtype=torch.bool, device=like.device)
            w = ones
        rows.append(w)
    return torch.stack(rows)


def factor_constraints(factors: Sequence[Tensor], pairs: Sequence[tuple[int, int]],
                       decorrelate: Sequence[int], *, masks: Sequence[Tensor | None] | None = None,
                       detach_norm: bool = True, orth_eps: float = 1e-6,
                       decor_eps: float = 1e-5) -> Tensor:
    """1-D tensor of per-term losses: the pairs' orthogonality terms, then the decorrelation terms."""
    if not pairs and not decorrelate:
        # an empty result that is still part of the graph, so .backward() on its sum works
        return factors[0].sum().reshape(1)[:0]
    masks = list(masks) if masks is not None else [None] * len(factors)
    n = factors[0].shape[0]
    out: list[Tensor | None] = [None] * (len(pairs) + len(decorrelate))
    # one batch per width signature (FSRF: every factor has width d, so one batch per kind)
    by_width: dict[tuple[int, int], list[int]] = {}
    for k, (i, j) in enumerate(pairs):
        by_width.setdefault((factors[i].shape[1], factors[j].shape[1]), []).append(k)
    batches = 0
    for ks in by_width.values():
        for part in _batches(ks, n * (factors[pairs[ks[0]][0]].shape[1] + factors[pairs[ks[0]][1]].shape[1])):
            idx = [tuple(pairs[k]) for k in part]
            w = _stack_weights(masks, idx, n, factors[0])
            if len(part) == 1:  # no stacked copies (large factors): the matrices themselves
                i, j = idx[0]
                losses = orthogonality_terms(factors[i], factors[j], None if w is None else w[0],
                                             detach_norm=detach_norm, eps=orth_eps).reshape(1)
            else:
                a = torch.stack([factors[i] for i, _ in idx])
                b = torch.stack([factors[j] for _, j in idx])
                losses = orthogonality_terms(a, b, w, detach_norm=detach_norm, eps=orth_eps)
            for k, v in zip(part, losses.unbind(0)):
                out[k] = v
            batches += 1
    by_d: dict[int, list[int]] = {}
    for k, i in enumerate(decorrelate):
        by_d.setdefault(factors[i].shape[1], []).append(k)
    for ks in by_d.values():
        for part in _batches(ks, n * factors[decorrelate[ks[0]]].shape[1]):
            idx = [(decorrelate[k],) for k in part]
            w = _stack_weights(masks, idx, n, factors[0])
            if len(part) == 1:
                losses = decorrelation_terms(factors[idx[0][0]], None if w is None else w[0],
                                             eps=decor_eps).reshape(1)
            else:
                z = torch.stack([factors[i] for i, in idx])
                losses = decorrelation_terms(z, w, eps=decor_eps)
            for k, v in zip(part, losses.unbind(0)):
                out[len(pairs) + k] = v
            batches += 1
    result = losses if batches == 1 else torch.stack(out)
    return result.to(factors[0].dtype) if result.dtype != factors[0].dtype else result


#: Entries (rows × columns, summed over a term's factors) of one stacked batch of terms. Small
#: terms are batched, so that their cost is a few calls for all of them; larger ones go one by
#: one on the factors themselves, since stacking would copy them (memory) for no time saved.
BATCH_ENTRIES = 1 << 20


def _batches(ks: list[int], entries_per_term: int) -> list[list[int]]:
    """``ks`` cut into consecutive batches of at most :data:`BATCH_ENTRIES` entries (≥ 1 term)."""
    per = max(1, BATCH_ENTRIES // max(entries_per_term, 1))
    return [ks[i:i + per] for i in range(0, len(ks), per)]
