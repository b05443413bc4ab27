"""``fsrf info``: versions, the compiled build and the backend each op uses."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser", "format_info"]


def format_info(d: dict) -> str:
    """Human-readable rendering of :func:`fsrf.info`."""
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


def _run(args: argparse.Namespace) -> int:
    import fsrf

    d = fsrf.info()
    print(json.dumps(d, indent=2, default=str) if args.json else format_info(d))
    return 0


def add_parser(sub) -> None:
    """Add ``fsrf info``."""
    p = sub.add_parser("info", help="versions, compiled backends and the backend each op uses")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_run)
