"""An advisory lock on an output folder, so that two runs never write into one folder.

:func:`lock_folder` takes an exclusive ``flock`` on ``<folder>/.fsrf.lock`` and writes the
holder's PID, host, start time and command line into it. A second process asking for the same
folder gets :class:`FolderLockedError` at once, naming the holder. The OS releases a ``flock``
when its holder exits or dies, so the folder of a killed run is never locked for good: the next
run takes the lock over and :attr:`FolderLock.previous` tells whose it was. A clean release
deletes the lock file.

The lock is re-entrant within one process (a multi-seed ``fsrf train`` holds the parent folder
while :func:`fsrf.training.trainer` locks each seed's folder; a second ``lock_folder`` of a folder
this process already holds just nests). Where ``fcntl`` is missing (Windows) or the file system
does not support ``flock`` (some network file systems), nothing is locked:
:attr:`FolderLock.held` is False and :attr:`FolderLock.reason` says why.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK_NAME", "FolderLock", "FolderLockedError", "lock_folder"]

#: Name of the lock file inside a locked folder.
LOCK_NAME = ".fsrf.lock"

_registry: dict[str, list] = {}  # realpath -> [fd, depth] for the folders this process holds
_registry_guard = threading.Lock()
# errnos by which a file system says it has no flock: run unlocked rather than refuse to run
_UNSUPPORTED = {getattr(errno, n) for n in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "EINVAL", "ENOSYS") if hasattr(errno, n)}


class FolderLockedError(OSError):
    """The folder is locked by another live process; the message names its PID and the lock file."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None, lock_file: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno.EBUSY
        self.holder = holder or {}
        self.lock_file = lock_file


def _read_holder(fd_or_path) -> dict[str, Any]:
    try:
        if isinstance(fd_or_path, int):
            raw = os.pread(fd_or_path, 4096, 0)
        else:
            with open(fd_or_path, "rb") as fh:
                raw = fh.read(4096)
        info = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe_holder(info: dict[str, Any]) -> str:
    if not info.get("pid"):
        return "another process (PID not yet recorded)"
    where = f" on {info['host']}" if info.get("host") and info.get("host") != socket.gethostname() else ""
    since = f", since {info['started']}" if info.get("started") else ""
    return f"PID {info['pid']}{where}{since}"


class FolderLock:
    """A held (or, where locking is unavailable, a pretended) lock on a folder; see :func:`lock_folder`.

    Attributes:
        folder: the locked folder.
        path: its lock file.
        held: True when the OS lock is held (False where locking is unavailable).
        reason: why nothing is locked, when ``held`` is False.
        previous: the holder record left by a process that died holding the lock (its lock was
            taken over), else None.
    """

    def __init__(self, folder: Path, key: str | None, held: bool, reason: str | None = None,
                 previous: dict[str, Any] | None = None) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self._key = key
        self.held = held
        self.reason = reason
        self.previous = previous
        self._released = False

    def release(self) -> None:
        """Release the lock (idempotent). The outermost release of a folder deletes the lock file."""
        if self._released:
            return
        self._released = True
        if self._key is None:
            return
        with _registry_guard:
            entry = _registry.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _registry[self._key]
            fd = entry[0]
            # unlink before unlocking: a process that opened this file and then gets the lock sees
            # that the name no longer points to it and retries on a new file
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else f"not held: {self.reason}"
        return f"FolderLock({str(self.folder)!r}, {state})"


def lock_folder(folder: str | os.PathLike) -> FolderLock:
    """Lock ``folder`` (which must exist) for this process; use as a context manager.

    Raises :class:`FolderLockedError` at once when another live process holds it; the message
    names that process's PID and says what to do. A lock left by a process that died is taken
    over (``.previous`` records whose it was).
    """
    folder = Path(os.fspath(folder))
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot lock {folder}: it is not an existing folder")
    if fcntl is None:
        return FolderLock(folder, None, False, reason="file locking (fcntl) is not available on this platform")
    key = os.path.realpath(folder)
    with _registry_guard:
        if key in _registry:
            _registry[key][1] += 1
            return FolderLock(folder, key, True)
    path = folder / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(path)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = _read_holder(path)
                raise FolderLockedError(
                    f"{folder} is in use by another fsrf run ({_describe_holder(holder)}; lock file {path}): "
                    f"wait for it to finish or stop it, or use another output folder",
                    holder=holder, lock_file=str(path)) from None
            if exc.errno in _UNSUPPORTED:
                return FolderLock(folder, None, False, reason=f"the file system of {folder} does not support "
                                                              f"flock ({os.strerror(exc.errno)})")
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder released (and deleted) it between our open and flock
            os.close(fd)
            continue
        break
    previous = _read_holder(fd) or None
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv}
    # Written in place, not through atomic_write: the lock lives on this inode, and a rename would
    # put a new, unlocked file under the name.
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
    except OSError:
        pass  # a full disk must not stop the lock itself from working; the message just lacks the PID
    with _registry_guard:
        _registry[key] = [fd, 1]
    return FolderLock(folder, key, True, previous=previous)
