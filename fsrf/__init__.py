"""fsrf — FSRF (factorization-guided semantic recovery) for incomplete multimodal sentiment analysis.

The method is a reconstruction from the paper's abstract and lineage (see ``docs/FSRF_METHOD.md``).

Main entry points:

* :class:`fsrf.FSRFLayer` — drop-in fusion layer robust to missing modalities (:mod:`fsrf.nn`);
* :class:`fsrf.FSRFObjective` — the whole FSRF training objective around a user's layer, head and
  encoder, for regression or classification (:mod:`fsrf.models`);
* :class:`fsrf.FSRFModel` — the objective with a linear regression head (:mod:`fsrf.models`);
* :mod:`fsrf.ops` — the fused ops (masked cross-modal attention, factorization and alignment losses);
* :mod:`fsrf.missing`, :mod:`fsrf.metrics`, :mod:`fsrf.data` — protocols, MMSA metrics, data;
* :mod:`fsrf.training` — training, robustness evaluation, the demo;
* :func:`fsrf.info` — versions and which backend each op uses.

The package layers are described in ARCHITECTURE.md and checked by import-linter.
"""

from __future__ import annotations

import importlib

from fsrf._version import __version__
from fsrf.runtime.backend import get_backend, set_backend, set_check_finite, use_backend

__all__ = ["__version__", "info", "set_backend", "get_backend", "use_backend", "set_check_finite",
           "ops", "nn", "models", "missing", "metrics", "data", "training",
           "FSRFConfig", "FSRFLayer", "FSRFModel", "FSRFObjective", "FSRFOutput"]

# Heavy or optional parts load on first use so `import fsrf` stays cheap.
_LAZY = {
    "ops": ("fsrf.ops", None),
    "nn": ("fsrf.nn", None),
    "models": ("fsrf.models", None),
    "missing": ("fsrf.missing", None),
    "metrics": ("fsrf.metrics", None),
    "data": ("fsrf.data", None),
    "training": ("fsrf.training", None),
    "FSRFConfig": ("fsrf.config", "FSRFConfig"),
    "FSRFLayer": ("fsrf.nn.layer", "FSRFLayer"),
    "FSRFOutput": ("fsrf.nn.layer", "FSRFOutput"),
    "FSRFModel": ("fsrf.models.fsrf_model", "FSRFModel"),
    "FSRFObjective": ("fsrf.models.objective", "FSRFObjective"),
}


def info() -> dict:
    """Versions, compiled and usable backends, and the backend ``auto`` picks per op and device.

    The keys of :func:`fsrf.runtime.info.environment` plus ``ops``:
    ``{op: {"implemented": [...], "cpu": pick, "cuda": pick}}``.
    """
    from fsrf.ops import backend_table
    from fsrf.runtime.info import environment

    d = environment()
    d["ops"] = backend_table()
    return d


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fsrf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
