"""Shared test setup.

Triton kernels are tested on CPU through Triton's interpreter; ``TRITON_INTERPRET`` must be set
before any ``@triton.jit`` decorator runs, so it is set here, before the tests import fsrf.kernels.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Subprocesses started by tests (`python -c`, `python -m`, torchrun) must import the installed
# fsrf, not the source folder of the checkout they run in (which has no compiled extension after
# a non-editable install): Python >= 3.11 then leaves the working directory off sys.path.
os.environ.setdefault("PYTHONSAFEPATH", "1")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Generated data (the demo's synthetic files) goes to the test's own folder, not ~/.cache."""
    monkeypatch.setenv("FSRF_CACHE_DIR", str(tmp_path / "fsrf-cache"))


@pytest.fixture(autouse=True)
def _seed_and_restore_backend():
    """Each test starts from seed 0 and the automatic backend choice."""
    import fsrf

    torch.manual_seed(0)
    prev = fsrf.get_backend()
    yield
    fsrf.set_backend(prev if prev != "auto" else None)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test (see _helpers.single_thread); a module that only runs ops
    on small tensors requests it for all its tests with ``pytest.mark.usefixtures``."""
    from _helpers import single_thread

    with single_thread():
        yield
