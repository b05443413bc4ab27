"""Every public name of every fsrf module has a docstring (the library's documentation promise)."""

import importlib
import inspect
import pkgutil

import pytest

import fsrf


def _modules():
    names = ["fsrf"]
    for info in pkgutil.walk_packages(fsrf.__path__, "fsrf."):
        if info.name.split(".")[-1].startswith("_") or info.name.startswith("fsrf.kernels"):
            continue
        names.append(info.name)
    return names


@pytest.mark.parametrize("modname", _modules())
def test_public_names_have_docstrings(modname):
    mod = importlib.import_module(modname)
    assert (mod.__doc__ or "").strip(), f"module {modname} has no docstring"
    public = getattr(mod, "__all__", None)
    if public is None:
        public = [n for n, v in vars(mod).items() if not n.startswith("_")
                  and (inspect.isfunction(v) or inspect.isclass(v)) and getattr(v, "__module__", "") == modname]
    missing = []
    for name in public:
        obj = getattr(mod, name)
        if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismodule(obj)):
            continue  # constants are documented where they are defined
        if not (inspect.getdoc(obj) or "").strip():
            missing.append(name)
        if inspect.isclass(obj) and getattr(obj, "__module__", "").startswith("fsrf"):
            for meth, fn in vars(obj).items():
                if meth.startswith("_") or not callable(fn) and not isinstance(fn, property):
                    continue
                # inspect.getdoc inherits the docstring of an overridden base method (forward, extra_repr)
                target = fn.fget if isinstance(fn, property) else getattr(obj, meth)
                if not (inspect.getdoc(target) or "").strip():
                    missing.append(f"{name}.{meth}")
    assert not missing, f"{modname}: public names without a docstring: {missing}"
