"""Backend selection shared by every op in :mod:`fsrf.ops`.

Each op implements a subset of the backends ``"torch"`` (pure-PyTorch reference, always there),
``"cpp"`` (C++ CPU kernels in ``fsrf._C``), ``"cuda"`` (CUDA kernels in ``fsrf._C``) and
``"triton"`` (Triton kernels in :mod:`fsrf.kernels`). ``backend="auto"`` picks the fastest one
available for the tensors' device.

A backend can be forced everywhere with :func:`set_backend`, the :func:`use_backend` context
manager, or the ``FSRF_BACKEND`` environment variable (read at import). A forced backend replaces
``"auto"`` for the ops that implement it; ops that do not implement it keep their automatic
choice (``fsrf.info()`` lists what each op picks). An explicit ``backend=`` argument other than
``"auto"`` always wins.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Iterator

import torch

from fsrf.runtime import extension as _extension

__all__ = ["BACKENDS", "set_backend", "get_backend", "use_backend", "available", "resolve",
           "set_check_finite", "check_finite_enabled"]

BACKENDS = ("auto", "torch", "cpp", "cuda", "triton")

_forced: str | None = None
_check_finite: bool = os.environ.get("FSRF_CHECK_FINITE", "1").strip().lower() not in {"0", "false", "no", "off"}


def _validate_name(name: str, argname: str = "backend") -> str:
    if not isinstance(name, str):
        raise TypeError(f"{argname} must be a str, one of {BACKENDS}; got {type(name).__name__}")
    if name not in BACKENDS:
        raise ValueError(f"{argname} must be one of {BACKENDS}; got {name!r}")
    return name


def set_backend(name: str | None) -> None:
    """Force ``name`` for every op that implements it; ``None`` or ``"auto"`` restores automatic choice."""
    global _forced
    _forced = None if name in (None, "auto") else _validate_name(name)


def get_backend() -> str:
    """The forced backend, or ``"auto"`` when none is forced."""
    return _forced or "auto"


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Context manager form of :func:`set_backend`, restoring the previous choice on exit."""
    prev = _forced
    set_backend(name)
    try:
        yield
    finally:
        set_backend(prev)


def set_check_finite(enabled: bool) -> None:
    """Enable or disable the NaN/Inf input check of the public ops.

    The check reads one flag back from the device (a host sync) per checked tensor, so it is
    skipped inside ``torch.compile`` graphs and can be switched off here or with
    ``FSRF_CHECK_FINITE=0`` for speed once a pipeline is known to be clean.
    """
    global _check_finite
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool; got {type(enabled).__name__}")
    _check_finite = enabled


def check_finite_enabled() -> bool:
    """Whether the public ops check their inputs for NaN/Inf (see :func:`set_check_finite`)."""
    return _check_finite


# Looked up once at import: a cached function call inside ops traced by torch.compile makes
# dynamo warn, a plain module constant does not.
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def _triton_importable() -> bool:
    return _HAS_TRITON


def _triton_interpreter() -> bool:
    return os.environ.get("TRITON_INTERPRET", "") == "1"


def available(backend: str, device: torch.device | str) -> bool:
    """Whether ``backend`` can run on ``device`` in this installation."""
    device = torch.device(device)
    if backend == "torch":
        return True
    if backend == "cpp":
        return device.type == "cpu" and _extension.has_cpp()
    if backend == "cuda":
        return device.type == "cuda" and _extension.has_cuda_kernels()
    if backend == "triton":
        if not _triton_importable():
            return False
        return device.type == "cuda" or (device.type == "cpu" and _triton_interpreter())
    return False


# What "auto" prefers, per device type, among the backends an op implements.
_PREFERENCE = {"cpu": ("cpp", "torch"), "cuda": ("cuda", "triton", "torch")}


def resolve(op: str, requested: str, device: torch.device | str, implemented: tuple[str, ...]) -> str:
    """Pick the backend that op ``op`` runs on.

    ``implemented`` lists the backends the op has. An explicit request that the op lacks, or that
    cannot run on ``device``, is a ``ValueError`` naming what is available.
    """
    _validate_name(requested)
    device = torch.device(device)
    if requested == "auto" and _forced is not None and _forced in implemented and available(_forced, device):
        return _forced
    if requested != "auto":
        if requested not in implemented:
            raise ValueError(f"{op}: backend {requested!r} is not implemented for this op; "
                             f"it has {('auto',) + implemented}")
        if not available(requested, device):
            raise ValueError(f"{op}: backend {requested!r} is not available for {device.type} tensors "
                             f"in this installation ({_why_unavailable(requested, device)})")
        return requested
    for cand in _PREFERENCE.get(device.type, ("torch",)):
        if cand in implemented and available(cand, device):
            return cand
    return "torch"


def _why_unavailable(backend: str, device: torch.device) -> str:
    if backend == "cpp":
        if device.type != "cpu":
            return "the cpp backend runs on CPU tensors only"
        return _extension.extension_error() or "extension not loaded"
    if backend == "cuda":
        if device.type != "cuda":
            return "the cuda backend runs on CUDA tensors only"
        if not _extension.has_cpp():
            return _extension.extension_error() or "extension not loaded"
        return "fsrf._C was compiled without CUDA kernels"
    if backend == "triton":
        if not _triton_importable():
            return "triton is not installed (pip install 'fsrf[triton]')"
        return "Triton runs on CUDA tensors, or on CPU tensors only under TRITON_INTERPRET=1"
    return "unknown"


_env = os.environ.get("FSRF_BACKEND")
if _env:
    set_backend(_env.strip())
