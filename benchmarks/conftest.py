"""Benchmarks run only under ``pytest --benchmark-only``; a plain ``pytest`` deselects them.

Shared helpers: :func:`peak_memory` measures the peak extra memory of a call (CUDA allocator
stats on GPU, tracemalloc-free RSS sampling is too coarse on CPU, so CPU uses torch's profiler
memory accounting), and :func:`machine` names the machine for BENCHMARKS.md.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", default=False):
        return
    here = os.path.dirname(os.path.abspath(__file__))
    keep, drop = [], []
    for it in items:
        (drop if str(it.fspath).startswith(here) else keep).append(it)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
