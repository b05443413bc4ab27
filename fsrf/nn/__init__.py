"""``torch.nn`` modules built on :mod:`fsrf.ops`."""

from fsrf.nn.attention import MaskedCrossModalAttention

__all__ = ["MaskedCrossModalAttention"]
