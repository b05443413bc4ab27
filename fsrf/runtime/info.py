"""Versions and the compiled build: the environment half of :func:`fsrf.info`.

The other half, which backend each op picks, comes from :func:`fsrf.ops.backend_table`; this
module knows nothing of the ops, so it sits in the lowest layer.
"""

from __future__ import annotations

import importlib.util
import platform

import torch

from fsrf._version import __version__
from fsrf.runtime import backend
from fsrf.runtime import extension as _extension

__all__ = ["environment"]


def _triton_version() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return None
    try:
        import triton
        return triton.__version__
    except Exception as exc:  # a broken triton install must not break info()
        return f"import failed: {exc}"


def environment() -> dict:
    """Versions, GPU, extension state and the usable backends per device type.

    Keys: ``fsrf``, ``python``, ``torch``, ``torch_cuda``, ``triton``, ``cuda_available``,
    ``device_name``, ``extension`` ("loaded" or the reason), ``build`` (how ``fsrf._C`` was
    compiled), ``backends`` ({name: {device: usable}}) and ``forced_backend``.
    """
    cuda = torch.cuda.is_available()
    return {
        "fsrf": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _triton_version(),
        "cuda_available": cuda,
        "device_name": torch.cuda.get_device_name() if cuda else None,
        "extension": "loaded" if _extension.has_cpp() else _extension.extension_error(),
        "build": _extension.build_config(),
        "backends": {b: {d: backend.available(b, d) for d in ("cpu", "cuda")}
                     for b in ("torch", "cpp", "cuda", "triton")},
        "forced_backend": backend.get_backend(),
    }
