"""Triton kernels of fsrf, installed as ``fsrf.kernels`` (one module per op).

Imported lazily by :mod:`fsrf.ops` only when the ``triton`` backend is used, so fsrf works
without Triton. Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors (slowly) for testing.
"""
