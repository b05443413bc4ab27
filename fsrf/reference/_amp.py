"""Autocast and the hand-written autograd Functions of the references.

Their forward and backward compute in a dtype they choose (fp32 accumulation for half inputs), so
``torch.autocast`` must not lower their products: a bf16 Gram saved in an autocast forward would
meet fp32 factors in the backward. :func:`full_precision` switches autocast off inside them.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["full_precision"]


def full_precision(fn):
    """Decorate the ``forward`` / ``backward`` of an ``autograd.Function`` to run with autocast
    off on the device of its first tensor argument (a no-op when autocast is not on)."""
    @functools.wraps(fn)
    def run(ctx, *args):
        t = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if t is None or not torch.is_autocast_enabled(t.device.type):
            return fn(ctx, *args)
        with torch.autocast(t.device.type, enabled=False):
            return fn(ctx, *args)
    return run
