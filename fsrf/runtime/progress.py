"""When to draw progress bars: on a terminal, or when asked.

A tqdm bar written to a log file, a CI log or a cluster job's output turns every redraw into a
line fragment, so the default (``progress=None``) draws bars only when standard error is a
terminal; the per-epoch summary lines are printed either way.
"""

from __future__ import annotations

import sys
from typing import IO

__all__ = ["check_progress", "show_bars"]


def check_progress(progress: object, name: str = "progress") -> None:
    """``TypeError`` unless ``progress`` is True, False or None."""
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"{name} must be True, False or None (bars only on a terminal); got {progress!r}")


def show_bars(progress: bool | None, stream: IO | None = None) -> bool:
    """Whether to draw progress bars: ``progress`` when it is a bool, else whether ``stream``
    (default ``sys.stderr``, where tqdm writes) is a terminal."""
    check_progress(progress)
    if progress is not None:
        return progress
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
