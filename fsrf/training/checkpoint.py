"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)`` so loading a file
from elsewhere can never run code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from fsrf.runtime.io import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint", "resolve_checkpoints", "FORMAT"]

FORMAT = "fsrf-checkpoint-v1"


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomically save a checkpoint dict (tensors, numbers, strings, lists, dicts only)."""
    obj = dict(obj)
    obj["format"] = FORMAT
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (one line, naming the file)
    for a truncated, corrupted or foreign file — including one that tries to run code on load,
    which ``weights_only=True`` refuses.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise ValueError(f"checkpoint {path} is a directory; give a .pt file (or use resolve_checkpoints)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for bad files; all mean "not loadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split(". ", 1)[0]  # torch appends paragraphs of advice after its first sentence
        raise ValueError(f"checkpoint {path} is corrupted, truncated or not an fsrf checkpoint "
                         f"(refused by torch.load(weights_only=True): {first})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not an fsrf checkpoint (expected format {FORMAT!r})")
    for key in ("model", "model_config", "modality_dims"):
        if key not in obj:
            raise ValueError(f"checkpoint {path} lacks the entry {key!r}; it is truncated or from another tool")
    return obj


def resolve_checkpoints(path: str | os.PathLike) -> dict[int | None, Path]:
    """Map a ``--checkpoint`` argument to ``{seed: best.pt}``.

    A file is taken as is (seed read later from its contents: key None). A directory holding
    ``best.pt`` is one run; a directory of ``seed_<seed>/best.pt`` folders is a multi-seed run.
    """
    p = Path(path)
    if p.is_file():
        return {None: p}
    if not p.exists():
        raise FileNotFoundError(f"checkpoint path {p} does not exist")
    if (p / "best.pt").is_file():
        return {None: p / "best.pt"}
    found = {}
    for sub in sorted(p.glob("seed_*")):
        if (sub / "best.pt").is_file():
            try:
                found[int(sub.name[len("seed_"):])] = sub / "best.pt"
            except ValueError:
                continue
    if not found:
        raise FileNotFoundError(f"no best.pt in {p} nor in {p}/seed_<seed>/; train a model there first")
    return found
