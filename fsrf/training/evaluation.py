"""Robustness evaluation: MMSA metrics under intra-modal frame dropping and inter-modal patterns,
for one model or a run folder of seeds, aggregated over seeds (tables and files:
:mod:`fsrf.training.results`)."""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from fsrf.runtime.progress import show_bars

__all__ = ["DEFAULT_RATES", "parse_rates", "parse_patterns", "robust_eval", "aggregate_seeds",
           "evaluate_checkpoints"]

DEFAULT_RATES = tuple(round(0.1 * i, 1) for i in range(10))


def parse_rates(spec: str | Sequence[float]) -> tuple[float, ...]:
    """``"0:0.9:0.1"`` (start:stop:step, inclusive) or ``"0,0.5,0.9"`` or a sequence → rates in [0, 1]."""
    if isinstance(spec, str):
        s = spec.strip()
        try:
            if ":" in s:
                parts = [float(p) for p in s.split(":")]
                if len(parts) != 3 or parts[2] <= 0:
                    raise ValueError
                start, stop, step = parts
                n = int(math.floor((stop - start) / step + 1e-9)) + 1
                rates = [round(start + i * step, 10) for i in range(max(n, 0))]
            else:
                rates = [float(p) for p in s.split(",") if p.strip()]
        except ValueError:
            raise ValueError(f"--rates must look like 0:0.9:0.1 or 0,0.5,0.9; got {spec!r}") from None
    else:
        rates = [float(r) for r in spec]
    if not rates:
        raise ValueError(f"--rates selects no rate: {spec!r}")
    bad = [r for r in rates if not 0.0 <= r <= 1.0]
    if bad:
        raise ValueError(f"missing rates must lie in [0, 1]; got {bad}")
    return tuple(rates)


def parse_patterns(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"all"`` (six patterns + complete), ``"none"``, or a comma list of ``l,a,v,la,lv,av,lav``."""
    from fsrf.missing import ALL_PATTERNS, pattern_modalities

    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "all":
            return tuple(ALL_PATTERNS)
        if s in ("none", ""):
            return ()
        items = [p.strip() for p in s.split(",") if p.strip()]
    else:
        items = list(spec)
    for p in items:
        try:
            pattern_modalities(p)
        except ValueError:
            raise ValueError(f"unknown pattern {p!r}; use 'all' or a comma list of {', '.join(ALL_PATTERNS)}") from None
    return tuple(items)


def robust_eval(model, split, dataset: str, *, rates: Iterable[float] = DEFAULT_RATES,
                patterns: Iterable[str] = (), seed: int = 1111, device: str = "cpu",
                batch_size: int = 256, progress: bool = False, legacy_f1: bool = False) -> dict[str, Any]:
    """Metrics of ``model`` on ``split`` at every intra rate and inter pattern.

    Masks come from :func:`fsrf.missing.corrupt_split` with ``seed`` (default 1111, independent
    of the model seed), so every model sees the same corrupted data. Returns
    ``{"intra": {"0.0": {metric: value}, ...}, "inter": {"l": {...}, ...}}``: MMSA's regression
    metrics of ``dataset``, or for a classifier (``model.task == "classification"``) those of
    :func:`fsrf.metrics.classification` against the split's class labels. ``legacy_f1`` adds the
    swapped-argument F1 keys (:data:`fsrf.metrics.LEGACY_F1_KEYS`).
    """
    from fsrf import metrics
    from fsrf.missing import corrupt_split
    from fsrf.training.trainer import model_task, predict_split

    classify = model_task(model) == "classification"
    if classify and split.class_labels is None:
        raise ValueError(f"split '{split.name}' has no classification_labels; a classifier is evaluated against "
                         f"class labels (fsrf make-synthetic --classes C writes a class-labelled file)")

    jobs = [("intra", f"{r:.1f}" if round(r, 1) == r else f"{r:g}", dict(rate=r)) for r in rates]
    jobs += [("inter", p, dict(rate=0.0, pattern=p)) for p in patterns]
    res: dict[str, Any] = {"intra": {}, "inter": {}}
    it = jobs
    if show_bars(progress):
        from tqdm.auto import tqdm
        it = tqdm(jobs, desc="evaluate", unit="cond", leave=False)
    for kind, key, kw in it:
        sp = corrupt_split(split, seed=seed, **kw)
        pred = predict_split(model, sp, batch_size=batch_size, device=device)
        if classify:
            res[kind][key] = metrics.classification(pred, sp.class_labels, class_names=sp.class_names)
        else:
            res[kind][key] = metrics.compute(pred, sp.labels, dataset, legacy_f1=legacy_f1)
    return res


def aggregate_seeds(per_seed: Mapping[Any, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample std (ddof = 1; 0 for one seed) over seeds of every
    ``{kind: {condition: {metric: value}}}`` entry."""
    seeds = list(per_seed)
    first = per_seed[seeds[0]]
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for kind, conds in first.items():
        mean[kind], std[kind] = {}, {}
        for cond, mets in conds.items():
            mean[kind][cond], std[kind][cond] = {}, {}
            for name in mets:
                vals = np.array([per_seed[s][kind][cond][name] for s in seeds], dtype=np.float64)
                mean[kind][cond][name] = float(np.mean(vals))
                std[kind][cond][name] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std}


def evaluate_checkpoints(checkpoint: str, data_path: str, *, rates, patterns, seed: int = 1111,
                         device: str = "cpu", dataset: str | None = None, split: str = "test",
                         progress: bool | None = None, strict: bool = False, legacy_f1: bool = False) -> dict:
    """Evaluate one checkpoint file or a (multi-seed) run directory; returns the model's results
    entry ``{"per_seed": ..., "mean": ..., "std": ..., "meta": ...}``.

    Every checkpoint is loaded before any evaluation starts. A checkpoint whose feature dims
    differ from the data file's, an empty ``split``, or a damaged checkpoint is a ``ValueError``
    naming the files involved. ``strict`` is passed to :func:`fsrf.data.load_mmsa`.
    """
    from fsrf.data import load_dataset
    from fsrf.training.checkpoint import resolve_checkpoints

    ckpts = resolve_checkpoints(checkpoint)
    models = {key: _load_for_eval(path, device) for key, path in ckpts.items()}
    first_meta = next(iter(models.values()))[1]
    data, guessed = load_dataset(data_path, dataset or first_meta.get("dataset"), strict=strict)
    if len(data.split(split)) == 0:
        raise ValueError(f"{data_path}: split '{split}' has 0 samples; nothing to evaluate (choose another --split)")
    data_dims = {m: int(d) for m, d in data.dims.items()}
    for key, path in ckpts.items():
        ck_dims = {m: int(d) for m, d in dict(models[key][1].get("modality_dims") or {}).items()}
        if ck_dims != data_dims:
            diff = ", ".join(f"{m} {ck_dims.get(m, '-')} vs {data_dims.get(m, '-')}"
                             for m in dict.fromkeys([*ck_dims, *data_dims]) if ck_dims.get(m) != data_dims.get(m))
            raise ValueError(f"checkpoint {path} was trained on feature dims {ck_dims} but data file {data_path} "
                             f"has {data_dims} ({diff}); evaluate it on a file with the features it was trained "
                             f"on, or train a model on {data_path}")
    per_seed, metas = {}, {}
    for key, path in ckpts.items():
        model, meta = models[key]
        kind = dataset or meta.get("dataset") or guessed
        seed_key = str(meta.get("seed") if key is None else key)
        per_seed[seed_key] = robust_eval(model, data.split(split), kind, rates=rates, patterns=patterns, seed=seed,
                                         device=device, progress=progress, legacy_f1=legacy_f1)
        metas[seed_key] = {"checkpoint": str(path), "selection": meta.get("selection"), "dataset": kind,
                           "model_config": meta.get("model_config")}
    agg = aggregate_seeds(per_seed)
    return {"per_seed": per_seed, "mean": agg["mean"], "std": agg["std"], "meta": metas}


def _load_for_eval(path, device: str):
    from pathlib import Path

    from fsrf.training.checkpoint import load_checkpoint
    from fsrf.training.trainer import load_model

    try:
        return load_model(path, device=device)
    except ValueError as exc:
        last = Path(path).with_name("last.pt")
        if Path(path).name != "best.pt" or not last.is_file():
            raise
        try:
            load_checkpoint(last)
        except (ValueError, OSError):
            raise exc from None
        raise ValueError(f"{exc}; the run's {last} is intact: delete {path} and rerun `fsrf train` on that "
                         f"folder with --resume and the same settings to rebuild it") from None
