"""fsrf — FSRF (factorization-guided semantic recovery) for incomplete multimodal sentiment analysis.

The method is a reconstruction from the paper's abstract and lineage (see ``docs/FSRF_METHOD.md``).

Main entry points:

* :class:`fsrf.FSRFLayer` — drop-in fusion layer robust to missing modalities;
* :class:`fsrf.FSRFModel` — the full model with a regression head and the FSRF training loss;
* :mod:`fsrf.ops` — the fused ops (masked cross-modal attention, factorization and alignment losses);
* :mod:`fsrf.missing`, :mod:`fsrf.metrics`, :mod:`fsrf.data` — protocols, MMSA metrics, data;
* :func:`fsrf.info` — versions and which backend each op uses.
"""

from __future__ import annotations

import importlib

from fsrf.backend import get_backend, set_backend, set_check_finite, use_backend
from fsrf._info import info

__version__ = "0.1.0"

__all__ = ["__version__", "info", "set_backend", "get_backend", "use_backend", "set_check_finite",
           "ops", "nn", "missing", "metrics", "data",
           "FSRFConfig", "FSRFLayer", "FSRFModel", "FSRFOutput"]

# Heavy or optional parts load on first use so `import fsrf` stays cheap.
_LAZY = {
    "ops": ("fsrf.ops", None),
    "nn": ("fsrf.nn", None),
    "missing": ("fsrf.missing", None),
    "metrics": ("fsrf.metrics", None),
    "data": ("fsrf.data", None),
    "FSRFConfig": ("fsrf.config", "FSRFConfig"),
    "FSRFLayer": ("fsrf.layer", "FSRFLayer"),
    "FSRFOutput": ("fsrf.layer", "FSRFOutput"),
    "FSRFModel": ("fsrf.model", "FSRFModel"),
}


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
