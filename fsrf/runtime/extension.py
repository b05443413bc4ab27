"""Loading of the compiled extension ``fsrf._C``.

Importing fsrf never fails because of the extension: when it is missing or was built against a
different torch, a single warning says why and how to fix it, and every op runs on its PyTorch
reference instead.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from typing import Any

import torch

__all__ = ["extension", "extension_error", "has_cpp", "has_cuda_kernels", "build_config"]

_FIX = (
    "Rebuild it against the installed torch with `pip install --no-build-isolation --force-reinstall "
    "--no-deps .` from the fsrf source tree (see README, 'Install')."
)


def _read_build_config() -> dict[str, Any] | None:
    # written next to the compiled module, in the fsrf package folder (one level up)
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_build_config.json")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _base_version(v: str) -> str:
    return v.split("+", 1)[0]


_STATE: tuple[Any, str | None] | None = None


def _load() -> tuple[Any, str | None]:
    # Memoised in a module global rather than lru_cache: torch.compile traces through ops that
    # ask which backends exist, and dynamo reads a global but would re-trace a cached function.
    global _STATE
    if _STATE is None:
        _STATE = _load_uncached()
    return _STATE


def _load_uncached() -> tuple[Any, str | None]:
    if os.environ.get("FSRF_NO_EXTENSION", "").strip().lower() in {"1", "true", "yes", "on"}:
        return None, "disabled by FSRF_NO_EXTENSION=1"
    cfg = _read_build_config()
    if cfg is not None and _base_version(cfg.get("torch", "")) != _base_version(torch.__version__):
        # A C++ extension built against another torch may load and then corrupt memory; refuse it.
        return None, (
            f"fsrf._C was built against torch {cfg.get('torch')} but torch {torch.__version__} is "
            f"installed. {_FIX}"
        )
    try:
        # by name: the binary registers the torch.ops.fsrf.* kernels, and importing it does not
        # run the Python package's __init__ again (nor make runtime depend on the layers above)
        _C = importlib.import_module("fsrf._C")
    except ImportError as exc:
        if "No module named" in str(exc) and "fsrf._C" in str(exc):
            return None, f"fsrf._C is not built (installed without a compiler or with FSRF_NO_EXTENSION=1). {_FIX}"
        return None, f"fsrf._C failed to load: {exc}. {_FIX}"
    except OSError as exc:
        return None, f"fsrf._C failed to load: {exc}. {_FIX}"
    return _C, None


_warned = False


def extension():
    """Return the loaded ``fsrf._C`` module, or ``None`` (warning once with the reason)."""
    global _warned
    mod, err = _load()
    if mod is None and not _warned and not err.startswith("disabled"):
        _warned = True
        warnings.warn(f"fsrf: compiled kernels unavailable, using the PyTorch reference path: {err}",
                      RuntimeWarning, stacklevel=3)
    return mod


def extension_error() -> str | None:
    """Why the extension is not loaded, or ``None`` when it is."""
    return _load()[1]


def build_config() -> dict[str, Any]:
    """What the loaded extension was compiled with (empty when it is not loaded)."""
    mod = extension()
    if mod is None:
        return {}
    info = dict(mod.build_info())
    return info


def has_cpp() -> bool:
    """True when the C++ CPU kernels are compiled and loaded."""
    return extension() is not None


def has_cuda_kernels() -> bool:
    """True when the CUDA kernels are compiled into the loaded extension."""
    mod = extension()
    return mod is not None and bool(mod.build_info().get("with_cuda", False))
