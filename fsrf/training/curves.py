"""The training record of a run: ``metrics.csv`` every epoch, ``training_curves.png`` at the end,
and an optional TensorBoard writer.

``metrics.csv`` has one row per epoch: ``epoch`` (1-based), every loss part of the training
objective averaged over the epoch's batches (``total``, ``task_a`` … as returned by the model's
``training_loss``; ``loss`` for a model without one), ``select_mae`` (the model-selection score;
``select_ce``, the validation cross-entropy, for a classifier),
``lr`` and ``seconds``. It is rewritten atomically from the run's history after each epoch, so a
resumed run continues it and a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from fsrf.runtime.io import atomic_write, atomic_write_text

__all__ = ["METRICS_NAME", "CURVES_NAME", "write_metrics_csv", "plot_training_curves", "TensorBoardLog"]

#: The per-epoch metrics file of a run folder.
METRICS_NAME = "metrics.csv"
#: The plot of the training curves, drawn when a run ends.
CURVES_NAME = "training_curves.png"

_LEADING = ("epoch", "total", "task_a", "task_b", "loss")
#: The model-selection score of a regression model and of a classifier.
SELECT_KEYS = ("select_mae", "select_ce")
_TRAILING = (*SELECT_KEYS, "lr", "seconds")


def _columns(history: Sequence[Mapping[str, Any]]) -> list[str]:
    seen: list[str] = []
    for row in history:
        seen.extend(k for k in row if k not in seen)
    middle = [k for k in seen if k not in _LEADING and k not in _TRAILING]
    return [k for k in _LEADING if k in seen] + middle + [k for k in _TRAILING if k in seen]


def write_metrics_csv(history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write ``history`` (the trainer's per-epoch rows, ``epoch`` 0-based) as CSV, atomically."""
    cols = _columns(history)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in history:
        vals = []
        for c in cols:
            v = row.get(c, "")
            if c == "epoch":
                v = int(v) + 1
            elif isinstance(v, float):
                v = repr(v) if math.isfinite(v) else str(v)
            vals.append(v)
        w.writerow(vals)
    return atomic_write_text(path, buf.getvalue())


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
                         best_epoch: int | None = None, title: str | None = None) -> Path:
    """Two panels: the objective and each loss part per epoch (log scale), and the selection
    score (MAE, or cross-entropy for a classifier) with the selected epoch marked (``best_epoch``
    0-based). Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("plot_training_curves needs at least one epoch of history; got none")
    epochs = [int(r["epoch"]) + 1 for r in history]
    parts = [c for c in _columns(history) if c not in ("epoch", *SELECT_KEYS, "lr", "seconds", "aux_scale")]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)  # a dozen parts: the default cycle repeats after 10
    for c in parts:
        ys = [r.get(c, float("nan")) for r in history]
        if all(not (isinstance(y, float) and y > 0) for y in ys):
            continue  # a part that is 0 throughout (switched off) has no place on a log axis
        ax.plot(epochs, ys, marker="." if len(epochs) < 30 else None, label=c,
                lw=2.0 if c in ("total", "loss") else 1.2)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (mean over the epoch's batches)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    key = next((k for k in SELECT_KEYS if k in history[0]), "select_mae")
    sel = [r.get(key, float("nan")) for r in history]
    bx.plot(epochs, sel, marker="o", color="C3")
    if best_epoch is not None and 0 <= best_epoch < len(history):
        bx.axvline(best_epoch + 1, color="0.5", ls="--", lw=1)
        bx.annotate("selected", (best_epoch + 1, sel[best_epoch]), textcoords="offset points", xytext=(6, 6),
                    fontsize=8)
    bx.set_xlabel("epoch")
    bx.set_ylabel(f"validation {'cross-entropy' if key == 'select_ce' else 'MAE'} (selection score)")
    bx.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    finally:
        plt.close(fig)


class TensorBoardLog:
    """Per-epoch scalars to TensorBoard (``--tensorboard``): every column of ``metrics.csv``
    under ``train/<part>``, ``select_mae`` and ``lr``. Needs the ``tensorboard`` package."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard "
                              f"({exc})") from None
        self.log_dir = Path(log_dir)
        self._w = SummaryWriter(log_dir=str(self.log_dir))

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        """Write one epoch's row (the trainer's history entry)."""
        step = int(row["epoch"]) + 1
        for k, v in row.items():
            if k == "epoch" or not isinstance(v, (int, float)):
                continue
            tag = k if k in (*SELECT_KEYS, "lr", "seconds") else f"train/{k}"
            self._w.add_scalar(tag, float(v), step)
        self._w.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._w.close()
