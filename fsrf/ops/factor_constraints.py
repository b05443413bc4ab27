"""``factor_constraints``: all DHF orthogonality and decorrelation terms of a set of factors at once.

This is the one Gram op of fsrf: :func:`fsrf.ops.orthogonality_loss` and
:func:`fsrf.ops.decorrelation_loss` are one-term front ends of it (one custom-op registration,
one kernel entry, :mod:`fsrf.kernels.factor_constraints`).

FSRF (docs/FSRF_METHOD.md §2) constrains, per modality ``m``, the pairs ``(s_m, p_m)``,
``(s_m, n_m)``, ``(p_m, n_m)`` and all ``(p_m, p_m')``, and decorrelates ``s_m`` and ``p_m``; with
three modalities that is 12 orthogonality and 6 decorrelation terms. On GPU the Triton backend
computes every term in **one** forward kernel launch (and two backward launches) instead of a
Python loop of ~10 small kernels per term; on CPU the reference loops over the terms.

Term ``k`` of the result equals, for ``k < len(pairs)``,
``orthogonality_loss(factors[i][rows], factors[j][rows])`` with ``(i, j) = pairs[k]`` and ``rows``
the rows observed in both factors, then ``decorrelation_loss(factors[i][rows_i])`` for each ``i``
in ``decorrelate``. A term over fewer than two rows is 0 with zero gradient (no NaN). The masks
act as 0/1 row weights inside the kernels (means are ``Σ w x / max(Σ w, 1)``), so no boolean
indexing and no host sync happen.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from fsrf.ops._common import check_flag, check_positive, resolve_low_precision
from fsrf.reference import factor_constraints as _ref
from fsrf.runtime import checks as _checks

__all__ = ["factor_constraints", "run_triton"]

OP = "factor_constraints"
IMPLEMENTED = ("torch", "triton")


def _unflatten(terms: Sequence[int]) -> tuple[list[tuple[int, int]], list[int]]:
    """Flattened ``[kind, i, j, ...]`` triples -> (pairs, decorrelate)."""
    triples = [tuple(terms[k:k + 3]) for k in range(0, len(terms), 3)]
    return [(i, j) for kind, i, j in triples if kind == 0], [i for kind, i, _ in triples if kind == 1]


# The term list travels as one flat int list of (kind, i, j) triples, never empty (the public
# function bypasses the op when there is no term): autograd expects the structure of list inputs
# back from the backward, and treats an empty int list differently in eager mode and under
# torch.compile.
@torch.library.custom_op("fsrf::factor_constraints", mutates_args=())
def _fc_op(factors: List[Tensor], terms: List[int], masks: Optional[Tensor], detach_norm: bool,
           orth_eps: float, decor_eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Returns (per-term losses, packed factors, Gram matrices fp32, stats fp32).

    ``terms`` is ``[kind, i, j, ...]`` (kind 0: orthogonality of (i, j), 1: decorrelation of i,
    pairs first); ``masks`` is ``None`` or (F, N) bool.
    """
    from fsrf.kernels import factor_constraints as _k

    pairs, decor = _unflatten(terms)
    return _k.forward(factors, pairs, decor, masks, orth_eps, decor_eps)


@_fc_op.register_fake
def _(factors, terms, masks, detach_norm, orth_eps, decor_eps):
    from fsrf.kernels._gram import sizes, term_list

    f0 = factors[0]
    n = f0.shape[0]
    widths = [f.shape[1] for f in factors]
    tl = term_list(*_unflatten(terms))
    m_size, st_size = sizes(widths, tl, n)
    total = 0
    for w in widths:
        total = total + w
    return (f0.new_empty((len(tl),)), f0.new_empty((n, total)),
            f0.new_empty((m_size,), dtype=torch.float32), f0.new_empty((st_size,), dtype=torch.float32))


@torch.library.custom_op("fsrf::factor_constraints_backward", mutates_args=())
def _fc_bwd_op(grad: Tensor, packed: Tensor, m: Tensor, stats: Tensor, masks: Optional[Tensor],
               widths: List[int], terms: List[int], detach_norm: bool, orth_eps: float) -> Tensor:
    """Gradient w.r.t. the packed factors (N, Σ widths)."""
    from fsrf.kernels import factor_constraints as _k

    pairs, decor = _unflatten(terms)
    return _k.backward(grad, packed, masks, m, stats, widths, pairs, decor, detach_norm, orth_eps)


@_fc_bwd_op.register_fake
def _(grad, packed, m, stats, masks, widths, terms, detach_norm, orth_eps):
    return torch.empty_like(packed)


def _setup(ctx, inputs, output):
    factors, terms, masks, detach_norm, orth_eps, _decor_eps = inputs
    _, packed, m, stats = output
    ctx.save_for_backward(packed, m, stats, masks)
    ctx.widths = [f.shape[1] for f in factors]
    ctx.terms = list(terms)
    ctx.detach_norm, ctx.orth_eps = detach_norm, orth_eps


def _backward(ctx, grad, _g_packed, _g_m, _g_stats):
    packed, m, stats, masks = ctx.saved_tensors
    gp = _fc_bwd_op(grad, packed, m, stats, masks, ctx.widths, ctx.terms, ctx.detach_norm, ctx.orth_eps)
    grads, off = [], 0
    for w in ctx.widths:
        grads.append(gp[:, off:off + w])
        off += w
    return grads, None, None, None, None, None


_fc_op.register_autograd(_backward, setup_context=_setup)


def _check_index(value, name: str, n_factors: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int factor index; got {type(value).__name__}")
    if not 0 <= value < n_factors:
        raise ValueError(f"{name} must be a factor index in [0, {n_factors}); got {value}")
    return value


def _check_eps(value, name: str) -> float:
    return check_positive(value, name, "it keeps the normalisation finite", kind="a float")


def run_triton(factors: Sequence[Tensor], pairs: Sequence[Tuple[int, int]], decorrelate: Sequence[int],
               masks: Optional[Tensor], detach_norm: bool, orth_eps: float, decor_eps: float) -> Tensor:
    """The grouped custom op on already validated arguments: (T,) losses, pairs first.

    ``masks`` is ``None`` or an (F, N) bool tensor; at least one term must be given.
    """
    terms = [v for i, j in pairs for v in (0, i, j)] + [v for i in decorrelate for v in (1, i, i)]
    return _fc_op(list(factors), terms, masks, detach_norm, orth_eps, decor_eps)[0]


def factor_constraints(factors: Sequence[Tensor], pairs: Sequence[Tuple[int, int]],
                       decorrelate: Sequence[int], *, masks: Optional[Sequence[Optional[Tensor]]] = None,
                       detach_norm: bool = True, orth_eps: float = 1e-6, decor_eps: float = 1e-5,
                       backend: str = "auto") -> Tensor:
    """Every orthogonality term of ``pairs`` and decorrelation term of ``decorrelate``, grouped.

    Args:
        factors: list of F factor matrices (N, d_i): same N, one floating dtype, one device; the
            widths may differ.
        pairs: ``(i, j)`` factor-index pairs; term = ``orthogonality_loss(factors[i], factors[j])``.
        decorrelate: factor indices; term = ``decorrelation_loss(factors[i])``.
        masks: optional list of F bool (N,) row masks (True = observed), or ``None`` entries for
            always-observed factors. A pair uses the rows observed in both of its factors, a
            decorrelation term the rows of its factor; centring and normalisation run over those
            rows only, and a term with fewer than two rows is 0.
        detach_norm, orth_eps: as ``orthogonality_loss(detach_norm=, eps=)``.
        decor_eps: as ``decorrelation_loss(eps=)``.
        backend: ``"auto"`` | ``"torch"`` | ``"triton"``.

    Returns:
        1-D tensor of ``len(pairs) + len(decorrelate)`` losses (pairs first), in the factors'
        dtype. ``N = 1`` is accepted (every term has fewer than two rows, so all are 0), so a
        trailing batch of one sample does not break training.
    """
    if not isinstance(factors, (list, tuple)):
        raise TypeError(f"factors must be a list of (N, d) tensors; got {type(factors).__name__}")
    if len(factors) == 0:
        raise ValueError("factors must hold at least one (N, d) tensor; got an empty list")
    for i, f in enumerate(factors):
        _checks.check_tensor(f, f"factors[{i}]", ndim=2, min_size={0: 1, 1: 1})
    n = factors[0].shape[0]
    for i, f in enumerate(factors[1:], 1):
        if f.shape[0] != n:
            raise ValueError(f"factors[{i}] must have the batch size of factors[0] ({n} rows); "
                             f"got shape {tuple(f.shape)}")
    _checks.check_same({f"factors[{i}]": f for i, f in enumerate(factors)})
    nf = len(factors)
    if not isinstance(pairs, (list, tuple)):
        raise TypeError(f"pairs must be a list of (i, j) factor-index pairs; got {type(pairs).__name__}")
    checked_pairs: list[tuple[int, int]] = []
    for k, pr in enumerate(pairs):
        if not isinstance(pr, (list, tuple)) or len(pr) != 2:
            raise ValueError(f"pairs[{k}] must be an (i, j) pair of factor indices; got {pr!r}")
        checked_pairs.append((_check_index(pr[0], f"pairs[{k}][0]", nf), _check_index(pr[1], f"pairs[{k}][1]", nf)))
    if not isinstance(decorrelate, (list, tuple)):
        raise TypeError(f"decorrelate must be a list of factor indices; got {type(decorrelate).__name__}")
    decor = [_check_index(i, f"decorrelate[{k}]", nf) for k, i in enumerate(decorrelate)]
    mask_list = None
    if masks is not None:
        if not isinstance(masks, (list, tuple)):
            raise TypeError(f"masks must be None or a list of {nf} bool (N,) tensors; got {type(masks).__name__}")
        if len(masks) != nf:
            raise ValueError(f"masks must have one entry per factor ({nf}); got {len(masks)}")
        mask_list = [None if m is None else _checks.check_bool_mask(m, f"masks[{i}]", (n,), factors[0].device)
                     for i, m in enumerate(masks)]
    check_flag(detach_norm, "detach_norm")
    orth_eps = _check_eps(orth_eps, "orth_eps")
    decor_eps = _check_eps(decor_eps, "decor_eps")
    for i, f in enumerate(factors):
        _checks.check_finite(f, f"factors[{i}]")
    chosen = resolve_low_precision(OP, backend, factors[0], IMPLEMENTED, "factors")

    if chosen == "triton" and (checked_pairs or decor):
        packed_masks = None
        if mask_list is not None and any(m is not None for m in mask_list):
            ones = None
            rows = []
            for m in mask_list:
                if m is None:
                    if ones is None:
                        ones = torch.ones(n, dtype=torch.bool, device=factors[0].device)
                    m = ones
                rows.append(m)
            packed_masks = torch.stack(rows)
        return run_triton(factors, checked_pairs, decor, packed_masks, detach_norm, orth_eps, decor_eps)
    # the reference (also for an empty term list: an empty result that stays in the graph)
    return _ref.factor_constraints(factors, checked_pairs, decor, masks=mask_list,
                                   detach_norm=detach_norm, orth_eps=orth_eps, decor_eps=decor_eps)
