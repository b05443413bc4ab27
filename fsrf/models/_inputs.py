"""Input handling shared by the baseline models: the ``(inputs, masks)`` convention of
:class:`fsrf.nn.FSRFLayer` (a modality absent from ``inputs`` is missing for the whole batch; a
mask row of all False means the sample lacks that modality)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor


__all__ = ["gather", "masked_mean"]


def gather(dims: Mapping[str, int], inputs, masks) -> tuple[int, dict[str, Tensor | None], dict[str, Tensor]]:
    """Validate, then return ``(B, {name: x or None}, {name: mask (B, T) or (B, 1) all False})``."""
    B, device = _check(dims, inputs, masks)
    xs, ks = {}, {}
    for m in dims:
        if m in inputs:
            x = inputs[m]
            xs[m] = x
            given = masks.get(m) if masks is not None else None
            ks[m] = given if given is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=device)
        else:
            xs[m] = None
            ks[m] = torch.zeros(B, 1, dtype=torch.bool, device=device)
    return B, xs, ks


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over the observed steps of ``x`` (B, T, D); 0 for a sample with none."""
    w = mask.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def _check(dims, inputs, masks):
    if not isinstance(inputs, Mapping) or not inputs:
        raise ValueError(f"inputs must be a non-empty dict {{name: (B, T, D) tensor}} of {list(dims)}")
    ref = None
    for m, x in inputs.items():
        if m not in dims:
            raise ValueError(f"unknown modality {m!r} in inputs; this model has {list(dims)}")
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != dims[m]:
            raise ValueError(f"inputs[{m!r}] must be a (B, T, {dims[m]}) tensor; got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        ref = ref if ref is not None else x
    return ref.shape[0], ref.device
