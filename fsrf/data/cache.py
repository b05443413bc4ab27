"""A cache folder for data fsrf generates itself (the demo's synthetic files), so that results
folders hold results only and a second demo run reuses the data instead of writing it again."""

from __future__ import annotations

import os
from pathlib import Path

from fsrf.runtime.io import ensure_dir

__all__ = ["cache_dir", "cached_synthetic"]


def cache_dir() -> Path:
    """``$FSRF_CACHE_DIR``, else ``$XDG_CACHE_HOME/fsrf``, else ``~/.cache/fsrf`` (created)."""
    root = os.environ.get("FSRF_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "fsrf")
    return ensure_dir(root)


def cached_synthetic(preset: str, *, n_train: int, n_valid: int, n_test: int, seed: int = 0,
                     generator: str = "factor", folder: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """The path of a synthetic file with these settings in the cache, written once.

    Returns ``(path, created)``. The name encodes every setting, and the file is written
    atomically, so runs with other settings never collide and two runs at once at worst both
    write the same bytes.
    """
    from fsrf.data.synthetic import make_synthetic

    folder = Path(folder) if folder is not None else cache_dir() / "synthetic"
    ensure_dir(folder)
    path = folder / f"{preset}_{generator}_n{n_train}-{n_valid}-{n_test}_seed{seed}.pkl"
    if path.is_file():
        return path, False
    make_synthetic(preset, path, n_train=n_train, n_valid=n_valid, n_test=n_test, seed=seed, generator=generator)
    return path, True
