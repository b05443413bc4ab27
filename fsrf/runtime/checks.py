"""Input validation shared by the public ops and modules.

Every failure is a ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape,
value or device) whose message names the argument, the expected and the received value.
"""

from __future__ import annotations

from typing import Sequence

import torch

from fsrf.runtime import backend as _backend

__all__ = ["check_tensor", "check_same", "check_finite", "check_bool_mask", "check_generator", "is_tracing"]


def is_tracing() -> bool:
    """True while torch.compile / export traces, when data-dependent checks must be skipped."""
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # pragma: no cover - very old torch
        return False


def check_tensor(x, name: str, *, ndim: int | Sequence[int] | None = None, floating: bool = True,
                 min_size: dict[int, int] | None = None) -> torch.Tensor:
    """Check that ``x`` is a tensor of the expected rank and kind; returns it unchanged."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in dims:
            want = " or ".join(str(d) for d in dims)
            raise ValueError(f"{name} must have {want} dimensions; got shape {tuple(x.shape)} ({x.dim()} dims)")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64); "
                        f"got dtype {x.dtype}")
    if min_size:
        for dim, lo in min_size.items():
            if x.shape[dim] < lo:
                raise ValueError(f"{name} must have size >= {lo} in dim {dim}; got shape {tuple(x.shape)}")
    return x


def check_same(tensors: dict[str, torch.Tensor], *, device: bool = True, dtype: bool = True) -> None:
    """Check that the named tensors share a device and/or dtype."""
    items = list(tensors.items())
    n0, t0 = items[0]
    for n, t in items[1:]:
        if device and t.device != t0.device:
            raise ValueError(f"{n} is on {t.device} but {n0} is on {t0.device}; move them to one device")
        if dtype and t.dtype != t0.dtype:
            raise TypeError(f"{n} has dtype {t.dtype} but {n0} has dtype {t0.dtype}; cast them to one dtype")


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf (skipped under tracing or when disabled)."""
    if not _backend.check_finite_enabled() or is_tracing() or x.numel() == 0:
        return
    # One reduction in the common case: a NaN/Inf anywhere makes the sum non-finite; a sum that
    # overflows from large finite values falls through to the exact element-wise check.
    if bool(torch.isfinite(x.sum())):
        return
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} Inf) in a tensor of "
                         f"shape {tuple(x.shape)}; expected finite values")


def check_bool_mask(mask, name: str, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """Check a boolean mask of exactly ``shape`` on ``device``; returns it."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a bool torch.Tensor; got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool (True = observed); got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name} is on {mask.device} but the data is on {device}")
    return mask


def check_generator(generator, device: torch.device) -> torch.device:
    """Check an optional ``torch.Generator`` for draws that end up on ``device``; returns the device
    to draw on: the generator's (``device`` itself, or the CPU, whose draws are then copied over),
    or ``device`` when ``generator`` is None."""
    if generator is None:
        return device
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None; got {type(generator).__name__}")
    gdev = generator.device
    if gdev.type != "cpu" and gdev != device:
        raise ValueError(f"generator is on {gdev} but the inputs are on {device}; use a generator on {device} or on the CPU")
    return gdev
