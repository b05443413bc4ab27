"""Loading MMSA feature pickles without letting them run code.

A pickle is a small program: loading one may call any importable function (``os.system``
included) through the ``GLOBAL``/``REDUCE`` opcodes. MMSA feature files only hold plain
containers, strings, numbers and numpy arrays, so :class:`RestrictedUnpickler` admits exactly the
globals needed to rebuild those and refuses everything else *before* it is called, raising
:class:`UnsafePickleError`.

Admitted globals (anything else is refused):

* builtins: ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``, ``str``, ``bytes``,
  ``bytearray``, ``int``, ``float``, ``complex``, ``bool``; ``collections.OrderedDict``;
* ``_codecs.encode`` (protocol-2 pickles store ``bytes`` — and thus array buffers — through it);
* numpy: ``numpy.ndarray``, ``numpy.dtype``, ``numpy._core.multiarray._reconstruct`` and
  ``.scalar`` (array and scalar reconstruction), ``numpy._core.numeric._frombuffer``
  (protocol 5), and the same names under ``numpy.core`` (files written with numpy 1.x). Both
  spellings are resolved to whichever module the installed numpy has, without importing the
  deprecated ``numpy.core`` alias.

Torch tensors (MMSA-FET's ``return_type='pt'``) are refused too: convert such files to numpy
first, in a trusted environment.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

__all__ = ["UnsafePickleError", "RestrictedUnpickler", "safe_load", "ALLOWED_GLOBALS"]


class UnsafePickleError(ValueError):
    """A pickle referenced a global that MMSA feature files never need (it was not called)."""


def _np_core_attr(submodule: str, name: str):
    # numpy >= 2 keeps the implementation in numpy._core; 1.x in numpy.core. Look the name up in
    # whichever exists so old files load on new numpy and vice versa, without the deprecation
    # warning that importing the numpy.core alias raises on numpy 2.
    import importlib

    for base in ("numpy._core", "numpy.core"):
        try:
            mod = importlib.import_module(f"{base}.{submodule}")
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    raise UnsafePickleError(f"numpy has no {submodule}.{name} in this version")


_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float",
             "complex", "bool"}
_NUMPY_CORE = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")}

#: (module, name) pairs the restricted unpickler admits, for documentation and tests.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {("builtins", n) for n in _BUILTINS}
    | {("collections", "OrderedDict"), ("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype")}
    | {(f"{base}.{sub}", name) for base in ("numpy._core", "numpy.core") for sub, name in _NUMPY_CORE}
)

# Python 2 pickles name the builtins module differently.
_MODULE_ALIASES = {"__builtin__": "builtins"}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that only admits :data:`ALLOWED_GLOBALS`.

    ``source`` names the file in error messages.
    """

    def __init__(self, file, *, source: str = "<stream>"):
        # latin1 decodes Python-2 str payloads (numpy's advice for old pickles); Python-3 pickles
        # store text as UTF-8 opcodes and are unaffected.
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        """Return the admitted global, or raise :class:`UnsafePickleError` naming it."""
        module = _MODULE_ALIASES.get(module, module)
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refusing to load {self.source}: it references the global '{module}.{name}', which MMSA "
                f"feature files never contain (only dicts, lists, strings, numbers and numpy arrays are "
                f"allowed); the file may try to run code, so nothing was executed")
        if module == "builtins":
            import builtins

            return getattr(builtins, name)
        if module == "collections":
            import collections

            return collections.OrderedDict
        if module == "_codecs":
            import _codecs

            return _codecs.encode
        if module == "numpy":
            return getattr(np, name)
        sub = module.rsplit(".", 1)[1]
        return _np_core_attr(sub, name)


def safe_load(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`.

    Raises ``FileNotFoundError`` if the file is absent, :class:`UnsafePickleError` if it references
    a forbidden global, and ``ValueError`` if it is not a readable pickle.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"MMSA feature file not found: {path}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"expected an MMSA feature file (.pkl) but {path} is a directory")
    with open(path, "rb") as fh:
        try:
            return RestrictedUnpickler(fh, source=path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError,
                UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"could not read {path} as an MMSA feature pickle: "
                             f"{type(exc).__name__}: {exc}".replace("\n", " ")) from exc
