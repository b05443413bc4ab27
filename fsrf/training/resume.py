"""Resuming a run of :func:`fsrf.training.trainer.fit`: which model a checkpoint was written for,
and the checks that ``last.pt`` and ``best.pt`` belong to the run asked for before it goes on.

Nothing here writes a file or changes a model: a refused resume leaves the run folder as it was.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

from fsrf.config import FSRFConfig
from fsrf.models import ModelSpec
from fsrf.training.checkpoint import load_checkpoint

__all__ = ["read_last_checkpoint", "check_best_checkpoint"]


def _identity(spec: ModelSpec) -> dict[str, Any]:
    """What a checkpoint records to tell which model wrote it (kind and kwargs, or the name of a
    user-built model)."""
    if spec.kind is None:
        return {"model_kind": None, "model_name": spec.name, "model_config": {}}
    return {"model_kind": spec.kind, "model_name": spec.name, "model_config": dict(spec.kwargs)}


def _same_model(ck: Mapping[str, Any], ident: Mapping[str, Any]) -> bool:
    """Whether the checkpoint ``ck`` was written for the model :func:`_identity` describes."""
    kind = ck.get("model_kind", "fsrf")  # checkpoints older than the model registry held FSRF only
    if kind != ident["model_kind"]:
        return False
    if kind is None:
        return ck.get("model_name") == ident["model_name"]
    saved, asked = ck.get("model_config"), ident["model_config"]
    if kind == "fsrf" and isinstance(saved, Mapping):
        # a config saved before a field existed holds the value it had then (FSRFConfig.from_saved):
        # a run of an older fsrf resumes, or is evaluated again, when it is the model asked for
        try:
            return FSRFConfig.from_saved(saved).to_dict() == FSRFConfig.from_saved(asked).to_dict()
        except (TypeError, ValueError):
            return False
    return saved == asked


def _epoch1(epoch) -> str:
    """A stored 0-based epoch as the 1-based number the messages print ("unknown" when absent)."""
    return str(int(epoch) + 1) if isinstance(epoch, int) else "unknown"


def _load_for_resume(path: Path, fix: str) -> dict[str, Any]:
    """:func:`load_checkpoint`, with ``fix`` (what to do) appended to the error of a damaged file."""
    try:
        return load_checkpoint(path, map_location="cpu")
    except ValueError as exc:
        raise ValueError(f"cannot resume: {exc}; {fix}") from None


def read_last_checkpoint(out: Path, *, ident: Mapping[str, Any], settings, seed: int, dims: Mapping[str, int],
                         data_path: str) -> dict[str, Any]:
    """``out/last.pt``, loaded and checked to be of this run: the same weight-average setting,
    seed, model and feature dims, or a ``ValueError`` that says what to do."""
    last_path = out / "last.pt"
    ck = _load_for_resume(last_path, f"delete {last_path} to train {out} from scratch, "
                                     f"or use another output folder")
    ck_ema = bool(dict(ck.get("train") or {}).get("ema", False))  # runs before the switch had none
    if ck_ema != settings.ema or (ck_ema and not isinstance(ck.get("weight_average"), Mapping)):
        raise ValueError(f"cannot resume from {last_path}: it was trained with ema={ck_ema} and this run asks "
                         f"ema={settings.ema}; resume with the same setting (--no-ema turns the weight "
                         f"average off) or use a fresh --out directory")
    if ck.get("seed") != seed or not _same_model(ck, ident):
        raise ValueError(f"cannot resume from {last_path}: it was written with another seed or model config "
                         f"(seed {ck.get('seed')}); use a fresh --out directory or the same settings")
    ck_dims = {m: int(d) for m, d in dict(ck.get("modality_dims") or {}).items()}
    if ck_dims != dims:
        raise ValueError(f"cannot resume from {last_path}: it was trained on feature dims {ck_dims} "
                         f"(data {ck.get('data_path') or 'unknown'}) but {data_path or 'the data'} has {dims}; "
                         f"resume with the same data file or use a fresh --out directory")
    return ck


def check_best_checkpoint(out: Path, ck: Mapping[str, Any], *, ident: Mapping[str, Any], settings, seed: int,
                          say: Callable[[str], None]) -> str | None:
    """Check ``out/best.pt`` against the best epoch that ``ck`` (its ``last.pt``) records.

    Returns why model selection must restart from ``last.pt`` (``best.pt`` removed, or written by
    an interrupted epoch beyond this run), or None when ``best.pt`` goes on as it is; a ``best.pt``
    of another run is a ``ValueError``.
    """
    last_path, best_path = out / "last.pt", out / "best.pt"
    last_epoch, ck_best = int(ck["epoch"]), int(ck["best_epoch"])
    if ck_best >= 0 and best_path.exists():
        bk = _load_for_resume(best_path,
                              f"{last_path} (epoch {last_epoch + 1}) is intact: delete {best_path} and rerun with "
                              f"--resume to continue from it (model selection then restarts at epoch "
                              f"{last_epoch + 1})")
        # best.pt is saved before last.pt, so a run killed between the two leaves the best.pt of the
        # epoch that is about to be trained again: it is rewritten when that epoch improves again
        in_flight = (bk.get("epoch") == last_epoch + 1
                     and float(bk.get("best_score", math.inf)) < float(ck["best_score"]))
        reason = None
        if in_flight and last_epoch + 1 >= settings.epochs:
            # that epoch lies beyond this run, and its best.pt has replaced the earlier best
            reason = (f"{best_path} is from epoch {last_epoch + 2}, beyond the {settings.epochs} "
                      f"epochs of this run, and replaced the earlier best")
        elif in_flight:
            say(f"{best_path} is from epoch {last_epoch + 2}, which was interrupted before {last_path} was saved; "
                f"that epoch is trained again")
        if (bk.get("seed") != seed or not _same_model(bk, ident)
                or (bk.get("epoch") != ck_best and not in_flight)):
            raise ValueError(f"cannot resume: {best_path} (epoch {_epoch1(bk.get('epoch'))}, "
                             f"seed {bk.get('seed')}) is not the best model recorded in {last_path} "
                             f"(epoch {ck_best + 1}, seed {seed}); "
                             f"another run wrote into {out}: delete {best_path} and rerun with --resume to "
                             f"restart model selection from {last_path}, or use a fresh --out directory")
        return reason
    if ck_best >= 0:
        # best.pt is written before last.pt within an epoch, so it is missing only when removed
        return f"{best_path} was missing"
    return None
