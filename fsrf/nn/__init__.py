"""``torch.nn`` modules built on :mod:`fsrf.ops`."""
