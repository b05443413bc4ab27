"""Argument validators and backend choice shared by the ops (tensor checks: :mod:`fsrf.runtime.checks`).

Every failure is a ``TypeError`` (wrong kind of value) or ``ValueError`` (out of range) naming
the argument, what it must be and what it was.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from fsrf.runtime import backend as _backend

__all__ = ["check_flag", "check_real", "check_positive", "check_int", "resolve_low_precision", "TRITON_DTYPES"]

#: dtypes the Triton kernels take (they accumulate in fp32, so float64 stays on the reference).
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_flag(value, name: str) -> bool:
    """``value`` must be a ``bool`` (not merely truthy: ``1`` or ``"yes"`` are refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__}")
    return value


def check_real(value, name: str, kind: str = "a real number") -> float:
    """``value`` must be a real number (``bool`` refused); returned as ``float``.

    ``kind`` is how the message names the expected type ("a float" for epsilons).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {kind}; got {type(value).__name__}")
    return float(value)


def check_positive(value, name: str, why: str = "", kind: str = "a real number") -> float:
    """``value`` must be a finite real number > 0; returned as ``float``."""
    value = check_real(value, name, kind)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0{f' ({why})' if why else ''}; got {value}")
    return value


def check_int(value, name: str, lo: int = 1) -> int:
    """``value`` must be an int (``bool`` refused) ``>= lo``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}; got {value}")
    return int(value)


def resolve_low_precision(op: str, requested: str, x: Tensor, implemented: tuple[str, ...], name: str) -> str:
    """The backend of an op whose Triton kernels take fp16/bf16/fp32 only.

    ``auto`` keeps float64 on the reference; an explicit ``triton`` with float64 is a
    ``TypeError`` saying to use ``backend='torch'``.
    """
    if requested == "auto" and x.dtype not in TRITON_DTYPES:
        return _backend.resolve(op, requested, x.device, ("torch",))
    chosen = _backend.resolve(op, requested, x.device, implemented)
    if chosen == "triton" and x.dtype not in TRITON_DTYPES:
        raise TypeError(f"{op}: backend 'triton' supports float16, bfloat16 and float32 {name}; "
                        f"got {x.dtype} (use backend='torch' for it)")
    return chosen
