"""Benchmarks run only under ``pytest --benchmark-only``; a plain ``pytest`` deselects them.

Shared helpers: :func:`measure_peak_memory` (fixture ``peak_memory``) measures the peak extra
memory of a call (CUDA allocator statistics on GPU, the process's resident high-water mark on
CPU), the ``machine`` fixture (:func:`machine_name`) names the machine for BENCHMARKS.md, and ``pedantic_run`` times a
step the way the small losses' benchmarks do. A benchmark whose ``impl`` parameter cannot run on
this machine is skipped here. Peers and shapes are in ``_peers.py``.
"""

import os
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The benchmark files import _peers as a top-level module. pytest's default import mode puts this
# folder on sys.path; --import-mode=importlib does not, so make sure of it here.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", default=False):
        return
    keep, drop = [], []
    for it in items:
        (drop if str(it.fspath).startswith(_HERE) else keep).append(it)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _proc_status_bytes(field: str) -> int:
    """A memory field of /proc/self/status (e.g. VmRSS), in bytes; 0 where it is missing."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
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
    base = _proc_status_bytes("VmRSS")
    fn()
    return max(0, _proc_status_bytes("VmHWM") - base) / 2**20


@pytest.fixture
def peak_memory():
    """Fixture form of :func:`measure_peak_memory`; record results in ``benchmark.extra_info``."""
    return measure_peak_memory


def machine_name() -> str:
    """One-line description of the machine (the GPU's name, or the CPU's, cores and torch)."""
    import platform

    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"


@pytest.fixture(scope="session")
def machine() -> str:
    """:func:`machine_name`, stored with every benchmark."""
    return machine_name()


# _peers is imported where it is used, not at the top: it imports fsrf, and this file is loaded
# before collection, maybe ahead of another folder's conftest that sets fsrf's environment.
@pytest.fixture(autouse=True)
def _skip_unavailable(request):
    """Skips a benchmark whose ``impl`` parameter cannot run here (``_peers.unavailable``)."""
    callspec = getattr(request.node, "callspec", None)
    impl = callspec.params.get("impl") if callspec else None
    if impl:
        from _peers import unavailable

        if reason := unavailable(impl):
            pytest.skip(reason)


@pytest.fixture
def pedantic_run(benchmark, peak_memory, machine):
    """``run(step, group, rounds, **info)`` times ``step`` with fsrf's NaN/Inf input check off (a
    host sync the peers do not pay): one warm-up call (compilation, autotuning, caches), its peak
    memory, then ``rounds`` timed calls after one more warm-up round, as benchmark ``group``;
    ``info`` goes to ``extra_info``."""
    from _peers import DEVICE, no_finite_check

    def run(step, group, rounds, **info):
        with no_finite_check():
            step()
            mib = peak_memory(step, DEVICE)
            benchmark.group = group
            benchmark.extra_info.update(info, peak_mib=round(mib, 3), device=DEVICE, machine=machine,
                                        dtype="float32")
            benchmark.pedantic(step, rounds=rounds, warmup_rounds=1)
    return run
