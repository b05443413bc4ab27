"""Differentiable ops of fsrf, each with a pure-PyTorch reference and compiled backends.

==============================  ===================================  ==========================
op                              backends                             module
==============================  ===================================  ==========================
``masked_cross_attention``      torch, cpp (CPU), cuda               ``fsrf.ops.masked_cross_attention``
``orthogonality_loss``          torch, triton                        ``fsrf.ops.orthogonality``
``decorrelation_loss``          torch, triton                        ``fsrf.ops.decorrelation``
``factor_constraints``          torch, triton                        ``fsrf.ops.factor_constraints``
``kl_divergence``               torch, triton                        ``fsrf.ops.kl_divergence``
``mmd``                         torch, triton                        ``fsrf.ops.mmd``
==============================  ===================================  ==========================

``orthogonality_loss`` and ``decorrelation_loss`` are one-term front ends of
``factor_constraints``: on Triton all three run the same custom op and kernels.

Pass ``backend="auto" | "torch" | ...`` to any op, or force one everywhere with
:func:`fsrf.set_backend` / ``FSRF_BACKEND``.
"""

from __future__ import annotations

import torch

from fsrf.ops import decorrelation as _decorrelation
from fsrf.ops import factor_constraints as _factor_constraints
from fsrf.ops import kl_divergence as _kl_divergence
from fsrf.ops import masked_cross_attention as _masked_cross_attention
from fsrf.ops import mmd as _mmd
from fsrf.ops import orthogonality as _orthogonality
from fsrf.runtime import backend as _backend

masked_cross_attention = _masked_cross_attention.masked_cross_attention
orthogonality_loss = _orthogonality.orthogonality_loss
decorrelation_loss = _decorrelation.decorrelation_loss
factor_constraints = _factor_constraints.factor_constraints
kl_divergence = _kl_divergence.kl_divergence
mmd = _mmd.mmd

__all__ = ["masked_cross_attention", "orthogonality_loss", "decorrelation_loss", "factor_constraints",
           "kl_divergence", "mmd", "IMPLEMENTED", "backend_table"]

#: ``{op name: backends it implements}``, read from each op module (one source of truth).
IMPLEMENTED = {mod.OP: mod.IMPLEMENTED for mod in (_masked_cross_attention, _orthogonality, _decorrelation,
                                                   _factor_constraints, _kl_divergence, _mmd)}


def backend_table() -> dict[str, dict]:
    """``{op: {"implemented": [...], "cpu": pick, "cuda": pick}}``: what ``auto`` runs where."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    table = {}
    for op, impl in IMPLEMENTED.items():
        entry = {"implemented": list(impl)}
        for dev in ("cpu", "cuda"):
            entry[dev] = _backend.resolve(op, "auto", dev, impl) if dev in devices else "n/a (no device)"
        table[op] = entry
    return table
