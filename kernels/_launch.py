"""What every launcher of fsrf.kernels shares: the device a kernel is launched on.

A Triton launch runs on the *current* CUDA device and its current stream, whatever device the
argument tensors are on. With inputs on ``cuda:1`` while ``cuda:0`` is current, a bare launch
would fail with an illegal address or run on the wrong GPU, so every launcher enters
:func:`on_device` of its inputs first (as PyTorch's own CUDA ops do with a device guard).
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["on_device"]


def on_device(device: torch.device | torch.Tensor):
    """A context that makes ``device`` (or a tensor's device) the current CUDA device.

    For a CPU device (the Triton interpreter) it does nothing.
    """
    dev = device.device if isinstance(device, torch.Tensor) else torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.device(dev)
    return contextlib.nullcontext()
