"""MMSA's regression metrics for MOSI / MOSEI and CH-SIMS, computed exactly as thuiar/MMSA does.

:func:`compute` ``(preds, labels, dataset)`` returns ``{name: float}`` with MMSA's keys in MMSA's
order:

* ``mosi`` / ``mosei`` (MMSA ``__eval_mosei_regression``)::

    Has0_acc_2     mean((p >= 0) == (y >= 0))                   zero labels count as positive
    Has0_F1_score  weighted F1 of (y >= 0) vs (p >= 0)
    Non0_acc_2     on samples with y != 0: mean((p > 0) == (y > 0))   p == 0 counts as negative
    Non0_F1_score  weighted F1 of (y > 0) vs (p > 0) on the same samples
    Mult_acc_5     mean(round(clip(p, -2, 2)) == round(clip(y, -2, 2)))
    Mult_acc_7     mean(round(clip(p, -3, 3)) == round(clip(y, -3, 3)))
    MAE            mean(|p - y|)                                unclipped
    Corr           Pearson correlation of p and y               unclipped

* ``sims`` (MMSA ``__eval_sims_regression``): clip p and y to [-1, 1] first (MAE and Corr too),
  then bin with left-open intervals ``(lo, hi]``: 2 classes at ``[-1.01, 0, 1.01]``, 3 at
  ``[-1.01, -0.1, 0.1, 1.01]``, 5 at ``[-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]``::

    Mult_acc_2, Mult_acc_3, Mult_acc_5   accuracy of the bin indices
    F1_score                             weighted F1 of y's vs p's 2-class bins
    MAE, Corr                            on the clipped values

Conventions (each matches MMSA / numpy / scikit-learn):

* ``round`` is numpy's half-to-even (0.5 -> 0, 1.5 -> 2, -2.5 -> -2).
* Weighted F1 is scikit-learn's ``f1_score(y_true, y_pred, average='weighted')`` with the **true
  labels first** (older MMSA passed them the other way round, which changes the value): per-class
  F1 over the classes seen in either array, weighted by the class's support in ``y_true``. A
  class that is never predicted (or never true) has F1 0 — scikit-learn's ``zero_division=0`` —
  with no warning.
* Comparisons, clipping and binning run in the inputs' floating precision (float32 tensors stay
  float32, as in MMSA, where predictions and labels are float32 arrays); this decides on which
  side of an edge such as 0.1 or -0.7 a float32 value falls. MAE and Corr are accumulated in
  float64.
* ``Corr`` is NaN (returned, not raised, without a warning) when predictions or labels are
  constant — what ``np.corrcoef`` gives MMSA. ``Non0_acc_2`` and ``Non0_F1_score`` are NaN when
  every label is 0 (no sample to score).
* Values are not rounded by default. MMSA reports ``round(x, 4)``; ``ndigits=4`` gives its values
  bit for bit, because ``round`` means two different things there (:data:`ROUNDING`):

  - on a numpy float (``np.float64``), ``round(x, 4)`` is ``np.round(x, 4)``: ``rint(x * 10**4) /
    10**4``, half-to-even on the *scaled float*, so a value whose product lands exactly on .5
    rounds to even even when the binary value itself lies on the other side of the half;
  - on a Python float it is the correctly rounded decimal of the exact binary value (ties, which
    only exact binary halves can be, to even).

  MMSA 2.2.1 (``MetricsTop``) gets Python floats from scikit-learn (``accuracy_score`` for
  ``Has0_acc_2`` / ``Non0_acc_2`` and ``f1_score`` for every F1 key: Python floats since
  scikit-learn 1.6) and numpy floats from its own numpy code (``np.sum(...) / float(n)`` for
  ``Mult_acc_*``, ``np.mean(np.absolute(...)).astype(np.float64)`` for ``MAE``,
  ``np.corrcoef(...)[0][1]`` for ``Corr``). The two disagree for values such as 5e-05 or 0.70005
  (``k / 20000`` with odd ``k``), i.e. on test sets whose size divides into such fractions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["compute", "classification", "LEGACY_F1_KEYS", "weighted_f1", "round_metric", "MOSI_KEYS", "SIMS_KEYS", "DATASETS", "ROUNDING", "keys_for"]

MOSI_KEYS = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE",
             "Corr")
SIMS_KEYS = ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr")
DATASETS = ("mosi", "mosei", "sims")

#: How MMSA 2.2.1 rounds each key: ``"python"`` (``round`` on a Python float from scikit-learn) or
#: ``"numpy"`` (``round`` on a numpy float, i.e. ``np.round``). See the module docstring.
ROUNDING: dict[str, str] = {
    "Has0_acc_2": "python", "Has0_F1_score": "python", "Non0_acc_2": "python", "Non0_F1_score": "python",
    "F1_score": "python",
    "Mult_acc_2": "numpy", "Mult_acc_3": "numpy", "Mult_acc_5": "numpy", "Mult_acc_7": "numpy",
    "MAE": "numpy", "Corr": "numpy",
    "Has0_F1_score_legacy": "python", "Non0_F1_score_legacy": "python", "F1_score_legacy": "python",
}

_SIMS_BOUNDS = {2: (-1.01, 0.0, 1.01), 3: (-1.01, -0.1, 0.1, 1.01), 5: (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01)}


def keys_for(dataset: str) -> tuple[str, ...]:
    """The metric names :func:`compute` returns for ``dataset``, in order."""
    ds = _dataset(dataset)
    return SIMS_KEYS if ds == "sims" else MOSI_KEYS


def _dataset(dataset: Any) -> str:
    if not isinstance(dataset, str) or dataset.lower() not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}; got {dataset!r}")
    return dataset.lower()


def round_metric(name: str, value: float, ndigits: int) -> float:
    """``value`` of the metric ``name`` rounded to ``ndigits`` decimals the way MMSA rounds that key.

    ``ROUNDING[name] == "numpy"`` gives ``float(np.round(np.float64(value), ndigits))``; ``"python"``
    gives ``round(float(value), ndigits)``. NaN stays NaN. Raises ``KeyError`` for a name that is not
    an MMSA metric (no silent default: a new key must say how MMSA rounds it).
    """
    if name not in ROUNDING:
        raise KeyError(f"metric name must be one of {sorted(ROUNDING)}; got {name!r}")
    if isinstance(ndigits, bool) or not isinstance(ndigits, (int, np.integer)):
        raise TypeError(f"ndigits must be an int; got {type(ndigits).__name__} {ndigits!r}")
    value = float(value)
    if math.isnan(value):
        return value
    if ROUNDING[name] == "numpy":
        return float(np.round(np.float64(value), int(ndigits)))
    return round(value, int(ndigits))


def _as_1d(x: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if x.dtype in (torch.float16, torch.bfloat16):
                x = x.float()
            x = x.numpy()
    except ImportError:  # pragma: no cover - torch is a dependency, but metrics need none
        pass
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError(f"{name} must be numeric; got dtype {a.dtype}")
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) (or (N, 1)); got {a.shape}")
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    elif not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)  # integers are exact in float64, so no edge can move
    if a.size == 0:
        raise ValueError(f"{name} is empty; need at least one sample")
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} non-finite value(s) (NaN/Inf), first at index "
                         f"{int(np.argmax(bad))}")
    return a


def weighted_f1(y_true: Any, y_pred: Any) -> float:
    """scikit-learn's ``f1_score(y_true, y_pred, average='weighted', zero_division=0)`` in numpy.

    For every class ``c`` in ``y_true`` or ``y_pred``: ``F1_c = 2 TP / (2 TP + FP + FN)`` (0 when the
    class never occurs in either role, which cannot happen here, and 0 when TP = 0), weighted by
    the number of true samples of ``c``. Argument order matters: weights come from ``y_true``.
    """
    t = np.asarray(y_true).reshape(-1)
    p = np.asarray(y_pred).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length; got {t.shape[0]} and {p.shape[0]}")
    if t.size == 0:
        return float("nan")
    total = 0.0
    for c in np.union1d(t, p):
        tp = float(np.sum((t == c) & (p == c)))
        fp = float(np.sum((t != c) & (p == c)))
        fn = float(np.sum((t == c) & (p != c)))
        support = tp + fn
        denom = 2 * tp + fp + fn
        f1 = 2 * tp / denom if denom > 0 else 0.0
        total += support * f1
    return total / t.size


def _pearson(p: np.ndarray, y: np.ndarray) -> float:
    p64 = p.astype(np.float64)
    y64 = y.astype(np.float64)
    pc = p64 - p64.mean()
    yc = y64 - y64.mean()
    denom = math.sqrt(float(pc @ pc) * float(yc @ yc))
    if denom == 0.0:
        return float("nan")
    return float(np.clip((pc @ yc) / denom, -1.0, 1.0))


def _acc_multi(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.round(a) == np.round(b)))


def _mosi(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    res: dict[str, float] = {}
    res["Has0_acc_2"] = float(np.mean((p >= 0) == (y >= 0)))
    res["Has0_F1_score"] = weighted_f1(y >= 0, p >= 0)
    nz = y != 0
    if nz.any():
        res["Non0_acc_2"] = float(np.mean((p[nz] > 0) == (y[nz] > 0)))
        res["Non0_F1_score"] = weighted_f1(y[nz] > 0, p[nz] > 0)
    else:
        res["Non0_acc_2"] = float("nan")
        res["Non0_F1_score"] = float("nan")
    res["Mult_acc_5"] = _acc_multi(np.clip(p, -2.0, 2.0), np.clip(y, -2.0, 2.0))
    res["Mult_acc_7"] = _acc_multi(np.clip(p, -3.0, 3.0), np.clip(y, -3.0, 3.0))
    res["MAE"] = float(np.mean(np.abs(p.astype(np.float64) - y.astype(np.float64))))
    res["Corr"] = _pearson(p, y)
    return res


def _bins(x: np.ndarray, bounds: tuple[float, ...]) -> np.ndarray:
    # Each interval (lo, hi] is tested on the un-binned array (no chained reassignment), with the
    # edges in x's precision as numpy does for a float32 array against a Python float.
    out = np.zeros(x.shape, dtype=np.int64)
    edges = np.asarray(bounds, dtype=x.dtype)
    for i in range(len(edges) - 1):
        out[(x > edges[i]) & (x <= edges[i + 1])] = i
    return out


def _sims(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    one = np.asarray(1.0, dtype=p.dtype)
    p = np.clip(p, -one, one)
    y = np.clip(y, -one, one)
    b = {k: (_bins(p, v), _bins(y, v)) for k, v in _SIMS_BOUNDS.items()}
    return {
        "Mult_acc_2": float(np.mean(b[2][0] == b[2][1])),
        "Mult_acc_3": float(np.mean(b[3][0] == b[3][1])),
        "Mult_acc_5": float(np.mean(b[5][0] == b[5][1])),
        "F1_score": weighted_f1(b[2][1], b[2][0]),
        "MAE": float(np.mean(np.abs(p.astype(np.float64) - y.astype(np.float64)))),
        "Corr": _pearson(p, y),
    }


def classification(scores: Any, labels: Any, class_names: Any = None) -> dict[str, float]:
    """Metrics of a C-class classifier, as emotion-recognition papers on IEMOCAP report them.

    Args:
        scores: ``(N, C)`` logits or probabilities (the class is their argmax), or ``(N,)``
            predicted class indices with ``class_names`` giving C.
        labels: ``(N,)`` integer class indices in ``[0, C)``.
        class_names: C names for the per-class keys (default ``"class0"`` …).

    Returns ``{name: float}``:

    * ``Acc`` — accuracy of the predicted class; ``WF1`` — weighted F1 over the C classes
      (:func:`weighted_f1`, true labels first); ``MacroF1`` — the unweighted mean of the per-class
      F1 over the classes that occur in either array.
    * per class ``c`` (MulT's IEMOCAP protocol, one emotion against the rest): ``{name}_acc`` =
      ``mean((pred == c) == (y == c))`` and ``{name}_F1`` = weighted F1 of the binary labels
      ``y == c`` against ``pred == c``.

    Raises ``ValueError`` naming the argument for shapes that disagree, labels outside
    ``[0, C)`` or non-integer labels, non-finite scores, or a wrong number of class names.
    """
    try:
        import torch

        if isinstance(scores, torch.Tensor):
            scores = scores.detach().float().cpu().numpy()
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency, but metrics need none
        pass
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.dtype == object or not np.issubdtype(s.dtype, np.number):
        raise TypeError(f"scores must be numeric; got dtype {s.dtype}")
    if not (np.issubdtype(y.dtype, np.integer) and y.ndim == 1):
        raise ValueError(f"labels must be (N,) integer class indices; got shape {y.shape}, dtype {y.dtype}")
    if s.ndim == 2:
        if not np.isfinite(s).all():
            raise ValueError("scores contains NaN or Inf")
        C, pred = s.shape[1], np.argmax(s, axis=1)
    elif s.ndim == 1 and np.issubdtype(s.dtype, np.integer):
        if class_names is None:
            raise ValueError("scores given as (N,) class indices need class_names to fix the number of classes")
        C, pred = len(class_names), s
    else:
        raise ValueError(f"scores must be (N, C) logits or probabilities, or (N,) integer classes; got shape "
                         f"{s.shape}, dtype {s.dtype}")
    if pred.shape[0] != y.shape[0] or y.size == 0:
        raise ValueError(f"scores and labels must have the same, non-zero number of samples; got {pred.shape[0]} "
                         f"and {y.shape[0]}")
    if C < 2:
        raise ValueError(f"a classifier needs C >= 2 classes; got {C}")
    names = [f"class{c}" for c in range(C)] if class_names is None else [str(n) for n in class_names]
    if len(names) != C:
        raise ValueError(f"class_names must have {C} names (one per class); got {len(names)}")
    for arr, what in ((y, "labels"), (pred, "scores")):
        if arr.min() < 0 or arr.max() >= C:
            raise ValueError(f"{what} must be class indices in [0, {C - 1}]; got values in [{arr.min()}, {arr.max()}]")
    out = {"Acc": float(np.mean(pred == y)), "WF1": weighted_f1(y, pred)}
    per_class = []
    for c in np.union1d(y, pred):
        tp = float(np.sum((y == c) & (pred == c)))
        denom = 2 * tp + float(np.sum((y != c) & (pred == c))) + float(np.sum((y == c) & (pred != c)))
        per_class.append(2 * tp / denom if denom > 0 else 0.0)
    out["MacroF1"] = float(np.mean(per_class))
    for c, name in enumerate(names):
        t, p = y == c, pred == c
        out[f"{name}_acc"] = float(np.mean(t == p))
        out[f"{name}_F1"] = weighted_f1(t, p)
    return out


#: The keys :func:`compute` adds with ``legacy_f1=True``: the F1 scores with the arguments of
#: scikit-learn's ``f1_score`` swapped (predictions first), as older MMSA, the first LNLN release and
#: MulT computed them; never in place of the correct ones.
LEGACY_F1_KEYS = {"Has0_F1_score": "Has0_F1_score_legacy", "Non0_F1_score": "Non0_F1_score_legacy",
                  "F1_score": "F1_score_legacy"}


def _legacy_f1(p: np.ndarray, y: np.ndarray, dataset: str) -> dict[str, float]:
    if dataset == "sims":
        one = np.asarray(1.0, dtype=p.dtype)
        bounds = _SIMS_BOUNDS[2]
        return {"F1_score_legacy": weighted_f1(_bins(np.clip(p, -one, one), bounds),
                                               _bins(np.clip(y, -one, one), bounds))}
    nz = y != 0
    return {"Has0_F1_score_legacy": weighted_f1(p >= 0, y >= 0),
            "Non0_F1_score_legacy": weighted_f1(p[nz] > 0, y[nz] > 0) if nz.any() else float("nan")}


def compute(preds: Any, labels: Any, dataset: str, *, ndigits: int | None = None,
            legacy_f1: bool = False) -> dict[str, float]:
    """MMSA regression metrics of ``preds`` against ``labels`` for ``dataset``.

    Args:
        preds, labels: array-likes or tensors of shape ``(N,)`` (``(N, 1)`` is accepted), N >= 1,
            finite.
        dataset: ``"mosi"``, ``"mosei"`` (8 metrics) or ``"sims"`` (6 metrics).
        ndigits: round every value to this many decimals as MMSA does for its key
            (:func:`round_metric`; MMSA reports 4); None = unrounded.
        legacy_f1: also return the F1 scores with swapped arguments (predictions first) under the
            keys of :data:`LEGACY_F1_KEYS`, to compare with tables that used that order.

    Returns:
        ``{name: float}`` with exactly MMSA's keys in MMSA's order (:func:`keys_for`). ``Corr`` is
        NaN for constant inputs; ``Non0_*`` are NaN when all labels are 0.

    Raises:
        ValueError: unknown dataset, empty input, NaN/Inf, shapes that differ or are not (N,).
        TypeError: non-numeric input, or ``ndigits`` that is not an int.
    """
    ds = _dataset(dataset)
    if ndigits is not None and (isinstance(ndigits, bool) or not isinstance(ndigits, (int, np.integer))):
        raise TypeError(f"ndigits must be an int or None; got {type(ndigits).__name__} {ndigits!r}")
    p = _as_1d(preds, "preds")
    y = _as_1d(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"preds and labels must have the same number of samples; got preds {p.shape} and "
                         f"labels {y.shape}")
    # One common precision: float32 only when both are float32 (MMSA's case), else float64.
    dt = np.result_type(p.dtype, y.dtype)
    p, y = p.astype(dt, copy=False), y.astype(dt, copy=False)
    res = _sims(p, y) if ds == "sims" else _mosi(p, y)
    if legacy_f1:
        res.update(_legacy_f1(p, y, ds))
    if ndigits is not None:
        res = {k: round_metric(k, v, ndigits) for k, v in res.items()}
    return res
