"""Input validation shared by the public ops and modules.

Every failure is a ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape,
value or device) whose message names the argument, the expected and the received value.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from fsrf.runtime import backend as _backend

__all__ = ["check_tensor", "check_same", "check_finite", "check_bool_mask", "check_generator", "check_modality_batch",
           "is_tracing"]


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


def check_modality_batch(inputs, masks=None, *, dims: Mapping[str, int] | None = None, name: str = "inputs",
                         masks_complete: bool = False, finite: bool = True,
                         allow_empty: bool = False, labels=None) -> tuple[int, torch.device]:
    """Check a modality batch ``{name: (B, T, D) float tensor}`` and its optional masks
    ``{name: (B, T) bool tensor}``; returns ``(B, device)``. The one check of a batch that the layer,
    the objective, :func:`fsrf.missing.corrupt` and the trainer share.

    ``dims``: the modalities a model knows and their feature widths (others are refused; each
    tensor needs that width and at least one frame). ``masks_complete``: the masks must name the
    same modalities as the inputs (an entry may be None); otherwise they may name a subset.
    ``finite``: refuse NaN/Inf, with one host sync for the whole batch (skipped under tracing or
    when :func:`fsrf.set_check_finite` is off). ``allow_empty``: a batch of 0 samples passes.
    ``labels``: a tensor of one row per sample, checked with the batch (finite when floating).
    ``name`` is how the message calls the inputs.
    """
    what = "a non-empty dict {modality: (B, T, D) tensor}"
    if not isinstance(inputs, Mapping):
        raise TypeError(f"{name} must be {what}; got {type(inputs).__name__}")
    if not inputs:
        raise ValueError(f"{name} must be {what}; got an empty dict" +
                         (f" (give at least one of {list(dims)})" if dims else ""))
    if masks is not None and not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a dict {{modality: (B, T) bool tensor}} or None; got {type(masks).__name__}")
    if dims is not None:
        for where, keys in ((name, inputs), ("masks", masks or {})):
            unknown = [k for k in keys if k not in dims]
            if unknown:
                raise ValueError(f"unknown modality {unknown[0]!r} in {where}; this model has {list(dims)}")
    if masks is not None:
        extra = [k for k in masks if k not in inputs]
        if extra or (masks_complete and set(masks) != set(inputs)):
            raise ValueError(f"masks must have the same modalities as {name} ({list(inputs)}) or a subset of them"
                             f"{'' if not masks_complete else ' (here: the same)'}; got {list(masks)}")
    ref = next(iter(inputs))
    for m, x in inputs.items():
        label = f"{name}[{m!r}]"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{label} must be a torch.Tensor; got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{label} must be a floating-point tensor; got dtype {x.dtype}")
        width = "D" if dims is None else dims[m]
        if x.dim() != 3:
            raise ValueError(f"{label} must have shape (B, T, {width}); got {tuple(x.shape)}")
        if dims is not None and x.shape[2] != dims[m]:
            raise ValueError(f"{label} must have feature dim {dims[m]}; got shape {tuple(x.shape)}")
        if dims is not None and x.shape[1] < 1:
            raise ValueError(f"{label} has no frames (shape {tuple(x.shape)}); leave it out of {name} to mark "
                             f"the modality missing")
        x0 = inputs[ref]
        if x.shape[0] != x0.shape[0]:
            raise ValueError(f"batch sizes disagree: {name}[{ref!r}] has B={x0.shape[0]} but {label} has "
                             f"B={x.shape[0]}")
        if x.device != x0.device:
            raise ValueError(f"{label} is on {x.device} but {name}[{ref!r}] is on {x0.device}")
        if x.dtype != x0.dtype:
            raise TypeError(f"{label} has dtype {x.dtype} but {name}[{ref!r}] has dtype {x0.dtype}; give every "
                            f"modality in one dtype (e.g. x.to({x0.dtype}))")
        k = None if masks is None else masks.get(m)
        if k is not None:
            if not isinstance(k, torch.Tensor) or k.dtype != torch.bool:
                got = k.dtype if isinstance(k, torch.Tensor) else type(k).__name__
                raise TypeError(f"masks[{m!r}] must be a bool tensor (dtype torch.bool, True = observed); got {got}")
            if tuple(k.shape) != tuple(x.shape[:2]):
                raise ValueError(f"masks[{m!r}] must have shape {tuple(x.shape[:2])} to match {label}; "
                                 f"got {tuple(k.shape)}")
            if k.device != x.device:
                raise ValueError(f"masks[{m!r}] is on {k.device} but {name} are on {x.device}")
    batch, device = inputs[ref].shape[0], inputs[ref].device
    if batch == 0 and not allow_empty:
        raise ValueError(f"{name} have batch size 0")
    checked = dict(inputs)
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.dim() < 1 or labels.shape[0] != batch:
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels must be a tensor with one row per sample ({batch}, ...); got {got}")
        if labels.is_floating_point():
            checked["labels"] = labels
    if finite and _backend.check_finite_enabled() and not is_tracing():
        flags = torch.stack([torch.isfinite(x).all() for x in checked.values()])
        if not bool(flags.all()):  # one host sync for the batch; the names come after
            bad = [m for m, ok in zip(checked, flags.tolist()) if not ok]
            where = ", ".join("labels" if m == "labels" else f"{name}[{m!r}]" for m in bad)
            raise ValueError(f"{where} contains NaN or Inf; clean the features first "
                             f"(MMSA audio uses -inf padding: set it to 0)")
    return batch, device
