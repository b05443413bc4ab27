"""The one way fsrf writes a file: atomically, durably, with the user's permissions.

Checkpoints, results, plots and synthetic data all go through :func:`atomic_write`: the content
is written to a temp file in the target folder, flushed and fsynced, renamed over the target
(``os.replace`` is atomic on POSIX and Windows), and the folder is fsynced so the rename survives
a power cut. A reader therefore sees the old file or the new one, never a half-written one, and
an interrupted write leaves no temp file behind. The file gets mode ``0o666 & ~umask``, as
``open(path, "w")`` would give it (``tempfile.mkstemp`` alone would leave it ``0o600``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "current_umask", "TEMP_SUFFIX"]

#: Suffix of the temp files :func:`atomic_write` creates (``.<name>.<random>.fsrf-tmp``).
TEMP_SUFFIX = ".fsrf-tmp"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    # elsewhere the only portable read is set-and-restore (not thread-safe, but brief)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write ``path`` by calling ``write(fh)`` on a binary temp file, then renaming it into place.

    The target folder must exist (a ``FileNotFoundError`` naming it otherwise). Any exception
    from ``write`` (or from the disk: a full disk is an ``OSError``) removes the temp file and
    propagates; the previous content of ``path``, if any, is untouched.
    """
    path = Path(os.fspath(path))
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {folder} does not exist (writing {path.name})")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of ``text`` encoded as UTF-8."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
