"""``fsrf.info()``: what is installed and which backend each op runs on."""

from __future__ import annotations

import importlib.util
import platform

import torch

from fsrf import _extension, backend

__all__ = ["info", "format_info"]


def info() -> dict:
    """Return versions, compiled/usable backends, and the backend ``auto`` picks per op and device.

    Keys: ``fsrf``, ``python``, ``torch``, ``torch_cuda``, ``triton``, ``cuda_available``,
    ``device_name``, ``extension`` (loaded / reason), ``build`` (how ``fsrf._C`` was compiled),
    ``backends`` ({name: {device: usable}}), ``forced_backend`` and ``ops``
    ({op: {"implemented": [...], "cpu": pick, "cuda": pick}}).
    """
    import fsrf
    from fsrf.ops import IMPLEMENTED

    triton_version = None
    if importlib.util.find_spec("triton") is not None:
        try:
            import triton
            triton_version = triton.__version__
        except Exception as exc:  # a broken triton install must not break info()
            triton_version = f"import failed: {exc}"
    cuda = torch.cuda.is_available()
    devices = ["cpu"] + (["cuda"] if cuda else [])
    ops = {}
    for op, impl in IMPLEMENTED.items():
        entry = {"implemented": list(impl)}
        for dev in ("cpu", "cuda"):
            entry[dev] = backend.resolve(op, "auto", dev, impl) if dev in devices else "n/a (no device)"
        ops[op] = entry
    return {
        "fsrf": fsrf.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "cuda_available": cuda,
        "device_name": torch.cuda.get_device_name() if cuda else None,
        "extension": "loaded" if _extension.has_cpp() else _extension.extension_error(),
        "build": _extension.build_config(),
        "backends": {b: {d: backend.available(b, d) for d in ("cpu", "cuda")}
                     for b in ("torch", "cpp", "cuda", "triton")},
        "forced_backend": backend.get_backend(),
        "ops": ops,
    }


def format_info(d: dict | None = None) -> str:
    """Human-readable rendering of :func:`info`."""
    d = info() if d is None else d
    lines = [
        f"fsrf {d['fsrf']}  (python {d['python']})",
        f"torch {d['torch']}  cuda {d['torch_cuda'] or '-'}  triton {d['triton'] or 'not installed'}",
        f"GPU: {d['device_name'] or 'none'}",
        f"extension fsrf._C: {d['extension']}",
    ]
    if d["build"]:
        lines.append("  built: " + ", ".join(f"{k}={v}" for k, v in d["build"].items()))
    lines.append("backends usable (cpu / cuda): " + ", ".join(
        f"{b} {'y' if v['cpu'] else 'n'}/{'y' if v['cuda'] else 'n'}" for b, v in d["backends"].items()))
    lines.append(f"forced backend: {d['forced_backend']}")
    w = max(len(k) for k in d["ops"])
    lines.append(f"{'op'.ljust(w)}  {'auto on cpu':<12} {'auto on cuda':<16} implemented")
    for op, e in d["ops"].items():
        lines.append(f"{op.ljust(w)}  {e['cpu']:<12} {e['cuda']:<16} {', '.join(e['implemented'])}")
    return "\n".join(lines)
