"""The one way fsrf writes a file: atomically, durably, with the user's permissions.

Checkpoints, results, plots and synthetic data all go through :func:`atomic_write`: the content
is written to a temp file in the target folder, flushed and fsynced, renamed over the target
(``os.replace`` is atomic on POSIX and Windows), and the folder is fsynced so the rename survives
a power cut. A reader therefore sees the old file or the new one, never a half-written one, and
a write that fails or is interrupted by an exception leaves no temp file behind. The file gets
mode ``0o666 & ~umask``, as ``open(path, "w")`` would give it (``tempfile.mkstemp`` alone would
leave it ``0o600``).

A process killed outright (SIGKILL, power cut) cannot remove its temp file. Temp names therefore
carry the writer's host and PID, and :func:`remove_stale_temps` deletes those whose writer is
gone; the commands call it on their output folders before writing.

An ``OSError`` raised while writing (full disk, permissions, read-only file system) carries the
target path in ``filename``, and :func:`describe_os_error` turns any ``OSError`` into the one-line
message the command line prints.

Some libraries do not let the disk's ``OSError`` through: ``torch.save`` into a file object
swallows it and raises ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``.
:func:`atomic_write` therefore hands ``write`` a file that records the first ``OSError`` of its
own writes, and re-raises that error (chained to the library's) in place of the library's; where
the library wrote around the file object, a file system left with no free space reads as
``ENOSPC`` too.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "current_umask", "TEMP_SUFFIX",
           "make_temp_dir", "commit_temp_dir", "remove_stale_temps", "describe_os_error", "ensure_dir"]

#: Suffix of the temp files and folders fsrf creates (``.<name>.<host>-<pid>.<random>.fsrf-tmp``).
TEMP_SUFFIX = ".fsrf-tmp"

_TEMP_OWNER = re.compile(r"\.(?P<host>[A-Za-z0-9_-]*)-(?P<pid>\d+)\.[^.]+" + re.escape(TEMP_SUFFIX) + "$")
# what the command line says failed, set on OSErrors that fsrf's writers raise
_ACTION_ATTR = "_fsrf_action"


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"


def _owner_tag() -> str:
    return f"{_host_tag()}-{os.getpid()}"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) terminates the process on Windows: never probe there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else
        return True
    return True


def _mark(exc: OSError, action: str, path: Path, tmp: str | None = None) -> OSError:
    # a temp name means nothing to the user, and torch/pickle writes through a file object
    # raise without any name: point at the file the user asked for
    named = None if exc.filename is None else os.fspath(exc.filename)
    if named is None or named == tmp or str(named).endswith(TEMP_SUFFIX):
        exc.filename = str(path)
        if exc.filename2 is not None and os.fspath(exc.filename2) == str(path):
            exc.filename2 = None  # os.replace(tmp, path) names both; the target is enough
    if getattr(exc, _ACTION_ATTR, None) is None:
        setattr(exc, _ACTION_ATTR, action)
    return exc


def describe_os_error(exc: OSError) -> str:
    """One line for an ``OSError``: what failed, on which path, and the OS reason with its code.

    ``"cannot write runs/a/best.pt: No space left on device (ENOSPC); a previous version of it, if
    any, is intact"`` (fsrf writes atomically). An error built with a message of its own (no
    ``strerror``, e.g. ``FileNotFoundError("checkpoint x does not exist")``) is returned as that
    message.
    """
    if exc.strerror is None:
        return str(exc)
    code = errno.errorcode.get(exc.errno) if isinstance(exc.errno, int) else None
    reason = f"{exc.strerror} ({code})" if code else exc.strerror
    action = getattr(exc, _ACTION_ATTR, None) or "access"
    if exc.filename is None:
        return f"cannot {action} a file: {reason}" if action != "access" else reason
    target = os.fspath(exc.filename)
    if exc.filename2 is not None:
        target += f" -> {os.fspath(exc.filename2)}"
    if action == "write" and exc.errno != errno.ENOENT:
        return f"cannot write {target}: {reason}; a previous version of it, if any, is intact"
    return f"cannot {action} {target}: {reason}"


def ensure_dir(path: str | os.PathLike) -> Path:
    """``mkdir -p path``; an ``OSError`` names the folder and reads "cannot create the folder"."""
    path = Path(os.fspath(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _mark(exc, "create the folder", path)
    return path


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


class _RecordingFile:
    """A binary file that remembers the first ``OSError`` its ``write``/``flush`` raised.

    Everything else is the wrapped file's, so libraries that seek, tell or ask for ``fileno``
    see the real file.
    """

    def __init__(self, fh: BinaryIO):
        self._fh = fh
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self):
        try:
            return self._fh.flush()
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name):
        return getattr(self._fh, name)


def _disk_cause(exc: BaseException, recorded: OSError | None, folder: Path) -> OSError | None:
    """The ``OSError`` behind a library's exception raised while writing into ``folder``, if any."""
    if isinstance(exc, OSError):
        return exc
    if recorded is not None:
        return recorded
    if not isinstance(exc, Exception):  # KeyboardInterrupt and the like are never the disk's
        return None
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    # root may fill the blocks reserved for it, so only f_bfree is empty when root's write fails
    root = getattr(os, "geteuid", lambda: -1)() == 0
    if (st.f_bfree if root else st.f_bavail) == 0:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


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
    propagates; the previous content of ``path``, if any, is untouched. An ``OSError`` leaves with
    ``filename`` set to ``path`` when the OS did not name a file (or named the temp file). When
    ``write`` raises something else (a library's own error type) after a write to the file failed
    in the OS, or on a file system with no space left, that ``OSError`` is raised instead, chained
    to the library's exception.
    """
    path = Path(os.fspath(path))
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        # a folder removed under a running command: name the file, the folder and the OS reason
        raise _mark(FileNotFoundError(errno.ENOENT, f"its folder {folder} does not exist", str(path)),
                    "write", path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner_tag()}.", suffix=TEMP_SUFFIX, dir=folder)
    except OSError as exc:
        raise _mark(exc, "write", path)
    recorder = None
    try:
        with os.fdopen(fd, "wb") as fh:
            recorder = _RecordingFile(fh)
            write(recorder)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        cause = _disk_cause(exc, None if recorder is None else recorder.error, folder)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if cause is None:
            raise
        _mark(cause, "write", path, tmp)
        if cause is exc:
            raise
        raise cause from exc
    _fsync_folder(folder)
    return path


def make_temp_dir(folder: str | os.PathLike, name: str) -> Path:
    """A new private folder ``.<name>.<host>-<pid>.<random>.fsrf-tmp`` inside ``folder``.

    For output that must appear as one unit: write the pieces there, then rename them into
    ``folder``. :func:`remove_stale_temps` removes it if this process dies before that.
    """
    folder = Path(os.fspath(folder))
    try:
        return Path(tempfile.mkdtemp(prefix=f".{name}.{_owner_tag()}.", suffix=TEMP_SUFFIX, dir=folder))
    except OSError as exc:
        raise _mark(exc, "write", folder / name)


def commit_temp_dir(tmp_dir: str | os.PathLike, names: list[str], folder: str | os.PathLike) -> list[Path]:
    """Move ``names`` from ``tmp_dir`` (from :func:`make_temp_dir`) into ``folder``, in that
    order, each with an atomic rename; then make the renames durable and remove ``tmp_dir``.

    Every file is complete before the first rename, so the files of one unit replace the previous
    ones within a few system calls; put the file that readers check first (a manifest) last.
    """
    tmp_dir, folder = Path(os.fspath(tmp_dir)), Path(os.fspath(folder))
    out = []
    for name in names:
        try:
            os.replace(tmp_dir / name, folder / name)
        except OSError as exc:
            raise _mark(exc, "write", folder / name, str(tmp_dir / name))
        out.append(folder / name)
    _fsync_folder(folder)
    shutil.rmtree(tmp_dir, ignore_errors=True)
    return out


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files and folders in ``folder`` left by fsrf processes that no longer run.

    Only entries named by :func:`atomic_write` / :func:`make_temp_dir` on this host whose PID is
    not alive are removed, so the temp files of a run still in progress are never touched (nor
    those of another host sharing the folder). Returns the removed paths; a folder that does not
    exist or cannot be listed gives ``[]``.
    """
    folder = Path(os.fspath(folder))
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    host = _host_tag()
    removed = []
    for name in names:
        m = _TEMP_OWNER.search(name)
        if not name.startswith(".") or m is None or m.group("host") != host:
            continue
        if _process_alive(int(m.group("pid"))):
            continue
        p = folder / name
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:
            continue
        except OSError:  # left for a later run rather than failing this one
            continue
        removed.append(p)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of ``text`` encoded as UTF-8."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
