"""Predictions of a trained model on a feature file: one row per sample, written as CSV and JSON.

:func:`predict_file` takes a model (a run folder with ``best.pt``, a checkpoint file, a folder
written by ``fsrf export`` / ``save_pretrained``, or an ``nn.Module``) and a feature file read by
:func:`fsrf.data.features.read_features` (any subset of the splits, labels optional, modalities
absent from the file or from some samples). :func:`write_predictions` writes
``predictions.csv`` and ``predictions.json`` atomically (``fsrf predict``).

A row: ``split``, ``index`` (position in the split), ``id`` (the file's ``id`` when it has one),
``available`` (the modalities the model saw for that sample, e.g. ``"text,vision"``; ``"none"``
when it saw none), then ``prediction`` for a regression model, or ``class``, ``class_name`` and
one probability per class for a classifier, and ``label`` / ``class_label`` when the file has them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from torch import nn

from fsrf.runtime.io import atomic_write_text, ensure_dir
from fsrf.runtime.progress import show_bars

__all__ = ["load_predictor", "predict_file", "write_predictions", "PREDICTIONS_CSV", "PREDICTIONS_JSON"]

PREDICTIONS_CSV = "predictions.csv"
PREDICTIONS_JSON = "predictions.json"


def _model_dims(model: nn.Module) -> dict[str, int] | None:
    dims = getattr(model, "modality_dims", None) or getattr(getattr(model, "layer", None), "modality_dims", None)
    return {m: int(d) for m, d in dims.items()} if isinstance(dims, Mapping) else None


def load_predictor(source: str | os.PathLike | nn.Module, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode, info)`` from a model, a pretrained folder, a Hugging Face Hub repo id
    (``"user/repo"``, when no such path exists here), a run folder or a checkpoint.

    ``info`` holds ``modality_dims`` and ``source``. A folder of several seeds is refused: give one
    seed's folder (``<run>/seed_<seed>``).
    """
    from fsrf.models import from_pretrained
    from fsrf.models.pretrained import CONFIG_NAME, WEIGHTS_NAME, _is_repo_id
    from fsrf.training.checkpoint import resolve_checkpoints
    from fsrf.training.trainer import load_model

    if isinstance(source, nn.Module):
        dims = _model_dims(source)
        if dims is None:
            raise ValueError(f"model {type(source).__name__} does not say its feature dims (modality_dims); "
                             f"pass a run folder, a checkpoint or a pretrained folder instead")
        return source.eval(), {"modality_dims": dims, "source": type(source).__name__}
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"model must be a path or an nn.Module; got {type(source).__name__}")
    path = Path(os.fspath(source))
    if _is_repo_id(source) or (path.is_dir() and (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()):
        model = from_pretrained(source, device=device)
        return model, {"modality_dims": _model_dims(model), "source": os.fspath(source)}
    found = resolve_checkpoints(path)
    if len(found) != 1:
        seeds = ", ".join(f"seed_{s}" for s in found)
        raise ValueError(f"{path} holds {len(found)} runs ({seeds}); predict with one of them, e.g. "
                         f"{path / f'seed_{next(iter(found))}'}")
    model, meta = load_model(next(iter(found.values())), device=device)
    return model, {"modality_dims": {m: int(d) for m, d in meta["modality_dims"].items()},
                   "source": str(next(iter(found.values())))}


def predict_file(model: str | os.PathLike | nn.Module, data_path: str | os.PathLike, *,
                 splits: Sequence[str] | None = None, batch_size: int = 256, device: str = "cpu",
                 progress: bool | None = None) -> dict[str, Any]:
    """Predict every sample of ``data_path`` (the splits it has, or ``splits``).

    Returns ``{"rows": [...], "meta": {...}}`` (see the module docstring for a row). Raises
    ``ValueError`` naming the argument for a split the file does not have, a feature dimension
    the model was not trained on, or a bad ``batch_size``.
    """
    from fsrf.data.features import read_features
    from fsrf.training.trainer import model_task, predict_split

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    net, info = load_predictor(model, device=device)
    net = net.to(device)
    dims = info["modality_dims"]
    data = read_features(data_path, dims)
    chosen = list(data) if splits is None else list(splits)
    bad = [s for s in chosen if s not in data]
    if bad:
        raise ValueError(f"splits {bad} are not in {os.fspath(data_path)}; it has {list(data)}")
    task = model_task(net)
    names = getattr(next(iter(data.values())), "class_names", None)
    total = sum(len(data[s]) for s in chosen)
    bar = None
    if show_bars(progress) and total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="predict", unit="sample", leave=False)
    rows: list[dict[str, Any]] = []
    try:
        for s in chosen:
            sp = data[s]
            pred = predict_split(net, sp, batch_size=batch_size, device=device,
                                 on_batch=None if bar is None else bar.update)
            avail = np.stack([sp.masks[m].any(axis=1) for m in sp.modalities], 1)
            for i in range(len(sp)):
                row: dict[str, Any] = {"split": s, "index": i, "id": sp.ids[i] if sp.ids is not None else "",
                                       "available": ",".join(m for m, a in zip(sp.modalities, avail[i]) if a) or "none"}
                if task == "classification":
                    z = pred[i].astype(np.float64)
                    prob = np.exp(z - z.max())
                    prob /= prob.sum()
                    c = int(np.argmax(z))
                    labels = names or [f"class{k}" for k in range(len(z))]
                    row.update({"class": c, "class_name": labels[c] if c < len(labels) else str(c),
                                **{f"p_{labels[k]}": float(p) for k, p in enumerate(prob)}})
                    if sp.class_labels is not None:
                        row["class_label"] = int(sp.class_labels[i])
                else:
                    row["prediction"] = float(pred[i])
                    if not math.isnan(float(sp.labels[i])):
                        row["label"] = float(sp.labels[i])
                rows.append(row)
    finally:
        if bar is not None:
            bar.close()
    meta = {"model": info["source"], "data": os.fspath(data_path), "task": task, "splits": chosen,
            "modality_dims": dims, "samples": len(rows)}
    return {"rows": rows, "meta": meta}


def write_predictions(result: Mapping[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``predictions.csv`` and ``predictions.json`` of :func:`predict_file` to ``out_dir``
    (created), each atomically."""
    out = ensure_dir(out_dir)
    rows = list(result["rows"])
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    paths = {"csv": atomic_write_text(out / PREDICTIONS_CSV, buf.getvalue()),
             "json": atomic_write_text(out / PREDICTIONS_JSON, json.dumps({"meta": result["meta"], "rows": rows},
                                                                          indent=1))}
    return paths
