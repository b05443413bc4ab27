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

Pass ``backend="auto" | "torch" | ...`` to any op, or force one everywhere with
:func:`fsrf.set_backend` / ``FSRF_BACKEND``.
"""

from fsrf.ops.masked_cross_attention import masked_cross_attention
from fsrf.ops.orthogonality import orthogonality_loss
from fsrf.ops.decorrelation import decorrelation_loss
from fsrf.ops.factor_constraints import factor_constraints
from fsrf.ops.kl_divergence import kl_divergence
from fsrf.ops.mmd import mmd

__all__ = ["masked_cross_attention", "orthogonality_loss", "decorrelation_loss", "factor_constraints",
           "kl_divergence", "mmd"]

# Which backends each op implements; fsrf.info() and the tests read this table.
IMPLEMENTED = {
    "masked_cross_attention": ("torch", "cpp", "cuda"),
    "orthogonality_loss": ("torch", "triton"),
    "decorrelation_loss": ("torch", "triton"),
    "factor_constraints": ("torch", "triton"),
    "kl_divergence": ("torch", "triton"),
    "mmd": ("torch", "triton"),
}
