"""Benchmarks run only under ``pytest --benchmark-only``; a plain ``pytest`` deselects them.

Shared helpers: :func:`measure_peak_memory` (fixture ``peak_memory``) measures the peak extra
memory of a call (CUDA allocator statistics on GPU, the process's resident high-water mark on
CPU), and the ``machine`` fixture names the machine for BENCHMARKS.md.
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


def _rss_hwm_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure_peak_memory(fn, device: str = "cpu") -> float:
    """Peak memory in MiB that ``fn()`` adds above what was in use when it started.

    CUDA: the caching allocator's peak statistics. CPU (Linux): the process's resident high-water
    mark, reset through ``/proc/self/clear_refs`` just before the call; large CPU tensors are
    mmap-backed and returned to the OS on free, so this tracks live tensor memory closely.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        # glibc keeps freed blocks resident; without trimming, a warmed-up call would reuse them
        # and never raise the high-water mark.
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return float("nan")
    base = _rss_bytes()
    fn()
    return max(0, _rss_hwm_bytes() - base) / 2**20


@pytest.fixture
def peak_memory():
    """Fixture form of :func:`measure_peak_memory`; record results in ``benchmark.extra_info``."""
    return measure_peak_memory


@pytest.fixture(scope="session")
def machine() -> str:
    """One-line description of the machine, stored with every benchmark."""
    import platform

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"
